"""From problem records to metrics, performance figures and the printed table."""

from __future__ import annotations

import html
from collections import defaultdict
from typing import Any

from tabulate import tabulate

from tsbench.stats import expected_max_of_subset, percentile, wilson_interval

SPEND_FIELDS = ("samples", "prompt_tokens", "generated_tokens", "verifier_tokens", "flops")


def metrics(scores: list[dict[str, Any]], order: list[str], oracles: set[str], unit: str) -> dict[str, Any]:
    """Accuracy with a 95% CI and mean spend per problem, for every strategy x budget level.

    Args:
        scores: scores.jsonl records (one per problem x arm x level).
        order: arm keys in the order to report them.
        oracles: keys of arms that read the reference.
        unit: what a level counts (samples, tokens or flops).

    Returns:
        {"rows": [...], "budget_unit": unit, "problems": n}; a row's `within_budget` says whether
        its mean spend is at or under its level in that unit (policy samples for samples).
    """
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for record in scores:
        grouped[(record["arm"], int(record["level"]))].append(record)
    problems = len({r["problem_id"] for r in scores})
    rows = []
    for arm, level in sorted(grouped, key=lambda key: (order.index(key[0]), key[1])):
        results = grouped[(arm, level)]
        n = len(results)
        accuracy = sum(r["accuracy"] for r in results) / n
        low, high = wilson_interval(accuracy, n)
        row: dict[str, Any] = {
            "strategy": arm,
            "k": level,
            "oracle": arm in oracles,
            "problems": n,
            "accuracy": round(accuracy, 6),
            "ci95": [round(low, 6), round(high, 6)],
            "width_per_problem": round(sum(r["k"] for r in results) / n, 3),
            "fallbacks": sum(bool(r["fallback"]) for r in results),
        }
        for name in SPEND_FIELDS:
            row[f"{name}_per_problem"] = round(sum(r["spend"].get(name, 0.0) for r in results) / n, 3)
        thinking = sum(r["spend"].get("thinking_tokens", 0.0) for r in results) / n
        if thinking:  # only where a strategy thinks, so that other runs' metrics keep their bytes
            row["thinking_tokens_per_problem"] = round(thinking, 3)
        row["tokens_per_problem"] = round(
            row["prompt_tokens_per_problem"]
            + row["generated_tokens_per_problem"]
            + row["verifier_tokens_per_problem"],
            3,
        )
        spent = {
            "samples": row["width_per_problem"],
            "tokens": row["tokens_per_problem"],
            "flops": row["flops_per_problem"],
        }[unit]
        row["within_budget"] = bool(spent <= level * (1 + 1e-9))
        rows.append(row)
    return {"rows": rows, "budget_unit": unit, "problems": problems}


def rule_rewards(samples: list[dict[str, Any]], grades: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """DeepSeek-R1's rule rewards as metrics, per pool: the mean format and accuracy reward.

    The accuracy reward is each sample graded against the reference (pass@1 of the pool).
    """
    from tsbench.verifiers.rule_rewards import well_formatted

    correct = {(g["problem_id"], g["pool"], g["index"]): g["correct"] for g in grades}
    by_pool: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in samples:
        by_pool[sample["pool"]].append(sample)
    return {
        pool: {
            "samples": len(rows),
            "format_reward": round(sum(well_formatted(r["text"]) for r in rows) / len(rows), 6),
            "accuracy_reward": round(
                sum(bool(correct[(r["problem_id"], pool, r["index"])]) for r in rows) / len(rows), 6
            ),
            "truncated": round(sum(r.get("stop_reason") == "length" for r in rows) / len(rows), 6),
        }
        for pool, rows in sorted(by_pool.items())
    }


def performance(
    timings: list[dict[str, Any]], scores: list[dict[str, Any]], pools: dict[str, tuple[str, str | None]]
) -> dict[str, Any]:
    """Throughput over the whole run, and per strategy x budget latency and decode speed.

    A pool arm's latency at k is the expected slowest of k samples of its pool, plus k samples'
    share of its verifier's scoring time, and its speed is its tokens over that latency. A
    search's latency is its own wall time, from when the scheduler admitted it to its answer;
    searches run batched together, so its speed is its tokens over its share of the engine's time
    (each generate call's wall time split by generated tokens), where the run recorded that.

    Args:
        timings: timings.jsonl records.
        scores: scores.jsonl records.
        pools: pool arm key -> (pool, verifier name or None).
    """
    wall = sum(t["group_share_s"] for t in timings)
    generated = sum(t["generated_tokens"] for t in timings)
    by_problem = {t["problem_id"]: t for t in timings}
    per_key: dict[tuple[str, int], list[tuple[float, float, float]]] = defaultdict(list)
    for record in scores:
        t = by_problem[record["problem_id"]]
        arm, level, k = record["arm"], int(record["level"]), int(record["k"])
        if arm in pools:
            pool, verifier = pools[arm]
            seconds = expected_max_of_subset(t["samples_s"][pool], k)
            if verifier is not None and not record["fallback"]:
                seconds += t["verifier_s"].get(verifier, 0.0) * k
            engine = seconds
        else:
            seconds = t["search_s"][arm][str(level)]
            engine = t.get("search_engine_s", {}).get(arm, {}).get(str(level), seconds)
        per_key[(arm, level)].append((seconds, engine, record["spend"]["generated_tokens"]))
    rows = []
    for (strategy, k), found in per_key.items():
        times = [s for s, _, _ in found]
        rows.append(
            {
                "strategy": strategy,
                "k": k,
                "latency_p50_s": round(percentile(times, 50), 4),
                "latency_p95_s": round(percentile(times, 95), 4),
                "tokens_per_s": round(
                    sum(t for _, _, t in found) / max(sum(e for _, e, _ in found), 1e-9), 2
                ),
            }
        )
    ttfts, tpots = _first_token_and_per_token(timings)
    return {
        # Pool samples read back from the generation cache: their times are not this session's.
        "cached_samples": sum(sum(t.get("cached", {}).values()) for t in timings),
        "generated_tokens": generated,
        "generation_wall_s": round(wall, 3),
        "generated_tokens_per_s": round(generated / wall, 2) if wall else None,
        "ttft_p50_s": round(percentile(ttfts, 50), 4) if ttfts else None,
        "ttft_p95_s": round(percentile(ttfts, 95), 4) if ttfts else None,
        "tpot_p50_s": round(percentile(tpots, 50), 5) if tpots else None,
        "rows": rows,
    }


def _first_token_and_per_token(timings: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Time to first token per request, and per sample the time per output token after it."""
    ttfts: list[float] = []
    tpots: list[float] = []
    for t in timings:
        for pool, first in (t.get("ttft_s") or {}).items():
            if first is None:
                continue
            ttfts.append(first)
            latencies, tokens = t["samples_s"][pool], t["sample_tokens"][pool]
            tpots += [(s - first) / (n - 1) for s, n in zip(latencies, tokens, strict=True) if n > 1]
    return ttfts, tpots


def _si(value: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


BUDGET_HEADERS = {"samples": "k", "tokens": "tokens <=", "flops": "FLOPs <="}


def budget_note(metric_data: dict[str, Any]) -> str:
    """What the budget axis means, and whether "matched compute" holds for this table."""
    rows = metric_data["rows"]
    unit = metric_data.get("budget_unit", "samples")
    if unit == "samples":
        note = "budgets in samples: k policy samples per problem (N for searches)"
        if any(r["verifier_tokens_per_problem"] > 0 or r["width_per_problem"] != r["k"] for r in rows):
            note += (
                "; verifier and search spend is shown, not bounded, so rows with a verifier or a search "
                "are not at matched compute (use --budget-unit tokens or flops for that)"
            )
        return note
    what = "prompt + generated + verifier tokens" if unit == "tokens" else "policy + verifier FLOPs"
    over = [f"{r['strategy']}@{r['k']}" for r in rows if not r["within_budget"]]
    counts = {r["problems"] for r in rows}
    if over or len(counts) > 1:
        return f"NOT matched compute: mean spend over its level in {', '.join(over) or 'none'}; problems per row {sorted(counts)}"
    fell = sum(r["fallbacks"] for r in rows)
    return (
        f"matched compute: every row's mean {what} per problem is at or under its level, over the same "
        f"{counts.pop()} problems"
        + (f"; {fell} problem-rows fell back to one answer (column 'fell back')" if fell else "")
    )


def table(metric_data: dict[str, Any], perf: dict[str, Any] | None) -> str:
    """One row per strategy x budget level, with every part of its spend beside the level."""
    unit = metric_data.get("budget_unit", "samples")
    perf_rows = {(r["strategy"], r["k"]): r for r in (perf or {}).get("rows", [])}
    lines = []
    thinks = any("thinking_tokens_per_problem" in row for row in metric_data["rows"])
    for row in metric_data["rows"]:
        p = perf_rows.get((row["strategy"], row["k"]), {})
        low, high = row["ci95"]
        level = _si(row["k"]) if unit == "flops" else row["k"]
        extra = [] if unit == "samples" else [f"{row['width_per_problem']:.1f}", str(row["fallbacks"])]
        lines.append(
            [
                row["strategy"] + (" (oracle)" if row["oracle"] else ""),
                level,
                *extra,
                f"{100 * row['accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}]",
                f"{row['tokens_per_problem']:.0f}",
                f"{row['generated_tokens_per_problem']:.0f}",
                *([f"{row.get('thinking_tokens_per_problem', 0):.0f}"] if thinks else []),
                f"{row['verifier_tokens_per_problem']:.0f}",
                # No FLOPs with tokens spent: the runner does not know its parameter count.
                _si(row["flops_per_problem"])
                if row["flops_per_problem"] or not row["tokens_per_problem"]
                else "-",
                p.get("tokens_per_s", "-"),
                f"{p['latency_p50_s']:.2f} / {p['latency_p95_s']:.2f}" if p else "-",
            ]
        )
    headers = [
        "strategy",
        BUDGET_HEADERS[unit],
        *([] if unit == "samples" else ["N/k per prob", "fell back"]),
        "accuracy % [95% CI]",
        "total tok/prob",
        "gen tok/prob",
        *(["think tok/prob"] if thinks else []),
        "verif tok/prob",
        "FLOPs/prob",
        "tok/s",
        "latency p50/p95 s",
    ]
    text = budget_note(metric_data) + "\n" + tabulate(lines, headers=headers, disable_numparse=True)
    for pool, reward in (metric_data.get("rewards") or {}).items():
        text += (
            f"\nrule rewards, {pool} pool ({reward['samples']} samples): format "
            f"{reward['format_reward']:.2f}, accuracy {reward['accuracy_reward']:.2f} (oracle); "
            f"cut by the token cap {100 * reward.get('truncated', 0.0):.1f}%"
        )
    if perf and perf.get("generated_tokens_per_s"):
        text += f"\nengine: {perf['generated_tokens_per_s']} generated tok/s over the run"
        if perf.get("ttft_p50_s") is not None:
            text += f"; time to first token p50 {perf['ttft_p50_s']:.2f} s"
        if perf.get("tpot_p50_s") is not None:
            text += f"; time per output token p50 {1000 * perf['tpot_p50_s']:.1f} ms"
        if perf.get("cached_samples"):
            text += (
                f"\nnote: {perf['cached_samples']} samples were read from the generation cache, so the "
                "speed figures are not this session's; time with TSBENCH_GENERATION_CACHE=off"
            )
    return text


# -- the report table of several runs (tsbench.tables.report_table) in other formats ---------------

FORMATS = ("md", "csv", "latex", "html", "json")
_CONTEXT = ("model", "runner", "task", "task_options", "seed")


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f}"  # NaN: nothing on record


def display_frame(frame: Any) -> Any:
    """The report table as people read it: formatted cells, and the columns that are the same on
    every row (model, runner, task, seed) left out of the table and named once by `context_line`."""
    import pandas as pd

    varying = [c for c in _CONTEXT if frame[c].nunique(dropna=False) > 1]
    spread = bool((frame["seeds"] > 1).any())
    out = pd.DataFrame(index=frame.index)
    for column in varying:
        out[column] = frame[column].astype(str)
    out["strategy"] = frame["arm"] + frame["oracle"].map({True: " (oracle)", False: ""})
    units = frame["budget_unit"].unique()
    out[BUDGET_HEADERS[units[0]] if len(units) == 1 else "level"] = [
        _si(v) if u == "flops" else str(v) for v, u in zip(frame["level"], frame["budget_unit"], strict=True)
    ]
    out["problems"] = frame["problems"].astype(str)
    out["accuracy % [95% CI]"] = [
        f"{100 * a:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
        for a, lo, hi in zip(frame["accuracy"], frame["ci_low"], frame["ci_high"], strict=True)
    ]
    if spread:
        out["seeds: mean ± sd %"] = [
            f"{100 * m:.1f} ± {_pct(sd)} ({n})" if n > 1 else "-"
            for m, sd, n in zip(
                frame["seed_mean_accuracy"], frame["seed_sd_accuracy"], frame["seeds"], strict=True
            )
        ]
    out["cut %"] = frame["truncated"].map(_pct)
    out["samples/prob"] = frame["samples_per_problem"].map(lambda v: f"{v:.1f}")
    out["total tok/prob"] = frame["tokens_per_problem"].map(lambda v: f"{v:.0f}")
    out["gen tok/prob"] = frame["generated_tokens_per_problem"].map(lambda v: f"{v:.0f}")
    if (frame["thinking_tokens_per_problem"] > 0).any():
        out["think tok/prob"] = frame["thinking_tokens_per_problem"].map(lambda v: f"{v:.0f}")
    out["verif tok/prob"] = frame["verifier_tokens_per_problem"].map(lambda v: f"{v:.0f}")
    out["FLOPs/prob"] = frame["flops_per_problem"].map(lambda v: _si(v) if v else "-")
    if (frame["train_flops"] > 0).any():  # a trained model's cost (STaR), apart from test-time spend
        out["train FLOPs"] = frame["train_flops"].map(lambda v: _si(v) if v else "-")
    out["tok/s"] = frame["tokens_per_s"].map(lambda v: "-" if v != v else f"{v:.1f}")
    out["latency p50/p95 s"] = [
        "-" if p50 != p50 else f"{p50:.2f} / {p95:.2f}"
        for p50, p95 in zip(frame["latency_p50_s"], frame["latency_p95_s"], strict=True)
    ]
    return out.reset_index(drop=True)


def context_line(frame: Any) -> str:
    """What every row of the table shares: `model on runner, task (options), seed`."""
    same = {c: frame[c].iloc[0] for c in _CONTEXT if frame[c].nunique(dropna=False) == 1}
    parts = []
    if "model" in same:
        parts.append(f"model {same['model']}" + (f" on {same['runner']}" if "runner" in same else ""))
    if "task" in same:
        parts.append(
            f"task {same['task']}" + (f" ({same['task_options']})" if same.get("task_options") else "")
        )
    if "seed" in same:
        parts.append(f"seed {same['seed']}")
    runs = frame["run_id"].nunique()
    return "; ".join(parts + [f"{runs} run{'s' if runs != 1 else ''}"])


def render(frame: Any, fmt: str) -> str:
    """The report table in one of FORMATS: csv and json carry every column unformatted; md, latex
    and html the formatted view, with every cell escaped for its format."""
    if frame.empty:
        return ""
    if fmt == "csv":
        return str(frame.to_csv(index=False))
    if fmt == "json":
        return str(frame.to_json(orient="records", indent=1)) + "\n"
    shown = display_frame(frame)
    if fmt == "md":
        escaped = shown.map(lambda v: str(v).replace("|", "\\|"))
        return (
            context_line(frame) + "\n\n" + str(escaped.to_markdown(index=False, disable_numparse=True)) + "\n"
        )
    if fmt == "latex":
        return str(shown.to_latex(index=False, escape=True, caption=context_line(frame)))
    if fmt == "html":
        return f"<p>{html.escape(context_line(frame))}</p>\n" + str(
            shown.to_html(index=False, escape=True, border=0)
        )
    raise ValueError(f"unknown format {fmt}")


def compute_optimal_text(run_dir: Any) -> str:
    """The compute-optimal policy of one scored run against the best single arm, as a few lines."""
    from tsbench.compute_optimal import for_run
    from tsbench.tables import load_run

    result = for_run(load_run(run_dir, rescore=False))
    rows = [
        [
            r["level"],
            f"{100 * r['policy_accuracy']:.1f} [{100 * r['policy_ci_low']:.1f}, {100 * r['policy_ci_high']:.1f}]",
            f"{r['baseline_arm']}: {100 * r['baseline_accuracy']:.1f}",
            f"{100 * r['difference']:+.1f} (p = {r['p_value']:.3g})",
            r["policy"],
        ]
        for r in result.levels.to_dict("records")
    ]
    head = (
        f"compute-optimal policy, run {run_dir}: chosen per {result.difficulty} bin on "
        f"{len(result.selection)} problems, scored on the other {len(result.evaluation)} (oracle arms excluded)"
    )
    headers = ["level", "policy % [95% CI]", "best single arm %", "difference", "choice per bin"]
    return head + "\n" + tabulate(rows, headers=headers, disable_numparse=True)
