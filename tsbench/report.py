"""From problem records to metrics, performance figures and the printed table."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tabulate import tabulate

from tsbench.stats import percentile, wilson_interval

SPEND_FIELDS = ("samples", "prompt_tokens", "generated_tokens", "verifier_tokens", "flops")


def _rows_by_key(problems: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    rows: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for record in problems:
        for strategy, by_budget in record["results"].items():
            for k, result in by_budget.items():
                rows[(strategy, int(k))].append(result)
    return rows


def metrics(problems: list[dict[str, Any]], order: list[str], oracles: set[str]) -> dict[str, Any]:
    """Accuracy with a 95% CI and mean compute per problem, for every strategy x budget.

    Args:
        problems: problems.jsonl records.
        order: strategy names in the order to report them.
        oracles: names of strategies that peek at the reference.
    """
    rows = []
    grouped = _rows_by_key(problems)
    for strategy, k in sorted(grouped, key=lambda key: (order.index(key[0]), key[1])):
        results = grouped[(strategy, k)]
        n = len(results)
        accuracy = sum(r["accuracy"] for r in results) / n
        low, high = wilson_interval(accuracy, n)
        row: dict[str, Any] = {
            "strategy": strategy,
            "k": k,
            "oracle": strategy in oracles,
            "problems": n,
            "accuracy": round(accuracy, 6),
            "ci95": [round(low, 6), round(high, 6)],
        }
        for name in SPEND_FIELDS:
            row[f"{name}_per_problem"] = round(sum(r["spend"][name] for r in results) / n, 3)
        rows.append(row)
    return {"rows": rows}


def rule_rewards(samples: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """DeepSeek-R1's rule rewards as metrics, per pool: the mean format and accuracy reward.

    The accuracy reward is each sample graded against the reference (pass@1 of the pool).
    """
    from tsbench.verifiers.rule_rewards import well_formatted

    by_pool: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in samples:
        by_pool[sample["pool"]].append(sample)
    return {
        pool: {
            "samples": len(rows),
            "format_reward": round(sum(well_formatted(r["text"]) for r in rows) / len(rows), 6),
            "accuracy_reward": round(sum(bool(r["correct"]) for r in rows) / len(rows), 6),
        }
        for pool, rows in sorted(by_pool.items())
    }


def performance(timings: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput over the whole run, and per strategy x budget latency and decode speed."""
    wall = sum(t["group_share_s"] for t in timings)
    generated = sum(t["generated_tokens"] for t in timings)
    per_key: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for t in timings:
        for strategy, by_budget in t["latency"].items():
            for k, (seconds, tokens) in by_budget.items():
                per_key[(strategy, int(k))].append((seconds, tokens))
    rows = []
    for (strategy, k), pairs in per_key.items():
        seconds = [s for s, _ in pairs]
        rows.append(
            {
                "strategy": strategy,
                "k": k,
                "latency_p50_s": round(percentile(seconds, 50), 4),
                "latency_p95_s": round(percentile(seconds, 95), 4),
                "tokens_per_s": round(sum(t for _, t in pairs) / max(sum(seconds), 1e-9), 2),
            }
        )
    ttfts, tpots = _first_token_and_per_token(timings)
    return {
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


def table(metric_data: dict[str, Any], perf: dict[str, Any] | None) -> str:
    """One row per strategy x budget level; levels in samples (k), or in tokens or FLOPs with the
    mean samples-equivalent that fit them."""
    unit = metric_data.get("budget_unit", "samples")
    perf_rows = {(r["strategy"], r["k"]): r for r in (perf or {}).get("rows", [])}
    lines = []
    for row in metric_data["rows"]:
        p = perf_rows.get((row["strategy"], row["k"]), {})
        low, high = row["ci95"]
        level = _si(row["k"]) if unit == "flops" else row["k"]
        extra = [] if unit == "samples" else [f"{row['samples_per_problem']:.1f}"]
        lines.append(
            [
                row["strategy"] + (" (oracle)" if row["oracle"] else ""),
                level,
                *extra,
                f"{100 * row['accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}]",
                f"{row['generated_tokens_per_problem']:.0f}",
                f"{row['verifier_tokens_per_problem']:.0f}",
                _si(row["flops_per_problem"]),
                p.get("tokens_per_s", "-"),
                f"{p['latency_p50_s']:.2f} / {p['latency_p95_s']:.2f}" if p else "-",
            ]
        )
    headers = [
        "strategy",
        BUDGET_HEADERS[unit],
        *([] if unit == "samples" else ["samples/prob"]),
        "accuracy % [95% CI]",
        "gen tok/prob",
        "verif tok/prob",
        "FLOPs/prob",
        "tok/s",
        "latency p50/p95 s",
    ]
    text = tabulate(lines, headers=headers, disable_numparse=True)
    for pool, reward in (metric_data.get("rewards") or {}).items():
        text += (
            f"\nrule rewards, {pool} pool ({reward['samples']} samples): format "
            f"{reward['format_reward']:.2f}, accuracy {reward['accuracy_reward']:.2f} (oracle)"
        )
    if perf and perf.get("generated_tokens_per_s"):
        text += f"\nengine: {perf['generated_tokens_per_s']} generated tok/s over the run"
        if perf.get("ttft_p50_s") is not None:
            text += f"; time to first token p50 {perf['ttft_p50_s']:.2f} s"
        if perf.get("tpot_p50_s") is not None:
            text += f"; time per output token p50 {1000 * perf['tpot_p50_s']:.1f} ms"
    return text
