"""Run folders -> one pandas table: a row per model x runner x task x strategy x verifier x level.

`report_table(folders)` is what `tsbench report`, the plots and the leaderboard read. Each run is
re-scored with the installed code first (as `tsbench report` always did), unless asked not to.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tsbench.errors import UserError
from tsbench.records import ARMS, GRADES, IDENTITY, METRICS, PERFORMANCE, PROBLEMS, SCORES, RunFolder

COLUMNS = (
    "run_id", "run_dir", "model", "runner", "engine", "dtype", "task", "task_options", "seed",
    "seed_group", "arm", "strategy", "verifier", "oracle", "budget_unit", "level", "problems",
    "accuracy", "ci_low", "ci_high", "truncated", "samples_per_problem", "width_per_problem",
    "prompt_tokens_per_problem", "generated_tokens_per_problem", "verifier_tokens_per_problem",
    "tokens_per_problem", "flops_per_problem", "fallbacks", "within_budget", "tokens_per_s",
    "latency_p50_s", "latency_p95_s", "thinking_tokens_per_problem", "train_flops", "seeds",
    "seed_mean_accuracy", "seed_sd_accuracy",
)  # fmt: skip


@dataclass
class RunData:
    """A scored run folder, as the report reads it.

    Attributes:
        path: the folder.
        identity: identity.json.
        spec: spec.yaml's fields as written.
        arms: arms.json.
        metrics: metrics.json (fresh when re-scored).
        perf: performance.json.
        scores: scores.jsonl, one record per problem x arm x level.
        problems: problems.jsonl (question, reference, metadata; searches dropped).
        pools: arm key -> the pool it reads ("greedy", "sampled" or "search").
        truncated: pool -> problem id -> (samples cut by the token cap, samples).
    """

    path: Path
    identity: dict[str, Any]
    spec: dict[str, Any]
    arms: list[dict[str, Any]]
    metrics: dict[str, Any]
    perf: dict[str, Any]
    scores: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    pools: dict[str, str]
    truncated: dict[str, dict[str, tuple[int, int]]]

    def grades(self) -> list[dict[str, Any]]:
        return RunFolder(self.path).read_jsonl(GRADES)


def arm_key(arm: dict[str, Any]) -> str:
    return arm["strategy"] if not arm["verifier"] else f"{arm['strategy']}/{arm['verifier']}"


def check_run_folder(path: Path) -> RunFolder:
    """The folder, if it holds a run with at least one finished problem; else one clear UserError."""
    folder = RunFolder(path)
    if not path.is_dir() or not (path / ARMS).exists() or not (path / IDENTITY).exists():
        raise UserError(
            f"{path} is not a tsbench run folder (no {ARMS}); give a folder like results/<run-id>"
        )
    if not folder.complete and not folder.done_ids():
        raise UserError(
            f"{path} has no finished problem yet; run `tsbench run` with its spec to generate them"
        )
    return folder


def load_run(path: Path, rescore: bool = True) -> RunData:
    """Read a run folder, re-scoring it with the installed code first unless `rescore` is False.

    Args:
        path: a run folder (results/<run-id>).
        rescore: re-grade and re-score from stored samples (rewrites the derived files);
            False reads metrics.json, performance.json and scores.jsonl as stored.

    Raises:
        UserError: not a run folder, nothing finished, or (without rescore) never scored.
    """
    import yaml

    from tsbench.rescoring import load_spec
    from tsbench.rescoring import rescore as rescore_folder
    from tsbench.run import build_strategy

    folder = check_run_folder(path)
    if rescore:
        metric_data, perf = rescore_folder(folder)
    elif folder.complete and (path / PERFORMANCE).exists() and (path / SCORES).exists():
        metric_data, perf = folder.read_json(METRICS), folder.read_json(PERFORMANCE)
    else:
        raise UserError(f"{path} has not been scored yet; run `tsbench report {path}` once to score it")
    spec = load_spec(folder)
    arms = folder.read_json(ARMS)
    pools = {arm_key(a): build_strategy(spec, a["strategy"]).pool for a in arms}
    truncated: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for sample in folder.samples():
        counts = truncated[sample["pool"]][sample["problem_id"]]
        counts[0] += sample.get("stop_reason") == "length"
        counts[1] += 1
    problems = [{k: v for k, v in p.items() if k != "searches"} for p in folder.read_jsonl(PROBLEMS)]
    return RunData(
        path=path,
        identity=folder.read_json(IDENTITY),
        spec=yaml.safe_load((path / "spec.yaml").read_text(encoding="utf-8")) or {},
        arms=arms,
        metrics=metric_data,
        perf=perf,
        scores=folder.read_jsonl(SCORES),
        problems=problems,
        pools=pools,
        truncated={pool: {p: (c[0], c[1]) for p, c in by.items()} for pool, by in truncated.items()},
    )


def seed_group(identity: dict[str, Any]) -> str:
    """What a run is apart from its seed: the sample identity without the seed and the problems the
    seed draws (procedural tasks draw other problems under another seed)."""
    rest = {k: v for k, v in identity.items() if k not in ("data_sha256", "prompts_sha256")}
    rest["spec"] = {k: v for k, v in identity.get("spec", {}).items() if k != "seed"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:12]


def _options(options: dict[str, Any] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((options or {}).items()))


def _truncated_share(run: RunData, arm: str, problem_ids: Iterable[str]) -> float:
    pool = run.pools.get(arm, "search")
    if pool == "search":  # a search's final text has no single stop reason on record
        return float("nan")
    cut = total = 0
    for pid in problem_ids:
        c, n = run.truncated.get(pool, {}).get(pid, (0, 0))
        cut, total = cut + c, total + n
    return cut / total if total else float("nan")


def run_rows(run: RunData) -> list[dict[str, Any]]:
    """One dict per arm x level of a run, with the columns of `report_table` (seed columns aside)."""
    perf_rows = {(r["strategy"], int(r["k"])): r for r in run.perf.get("rows", [])}
    ids: dict[tuple[str, int], list[str]] = defaultdict(list)
    for s in run.scores:
        ids[(s["arm"], int(s["level"]))].append(s["problem_id"])
    by_key = {arm_key(a): a for a in run.arms}
    spec = run.spec
    train_flops = _train_flops(run.path)
    rows = []
    for m in run.metrics["rows"]:
        arm, level = m["strategy"], int(m["k"])
        p = perf_rows.get((arm, level), {})
        nan = float("nan")
        rows.append(
            {
                "run_id": run.path.name,
                "run_dir": str(run.path),
                "model": run.identity.get("model_id") or spec.get("model") or "-",
                "runner": spec.get("runner", "-"),
                "engine": run.identity.get("engine", "-"),
                "dtype": run.identity.get("dtype", ""),
                "task": spec.get("task", "-"),
                "task_options": _options(spec.get("task_options")),
                "seed": int(spec.get("seed", 0)),
                "seed_group": seed_group(run.identity),
                "arm": arm,
                "strategy": by_key[arm]["strategy"] if arm in by_key else arm.split("/")[0],
                "verifier": (by_key[arm]["verifier"] if arm in by_key else None) or "",
                "oracle": bool(m["oracle"]),
                "budget_unit": run.metrics.get("budget_unit", "samples"),
                "level": level,
                "problems": int(m["problems"]),
                "accuracy": float(m["accuracy"]),
                "ci_low": float(m["ci95"][0]),
                "ci_high": float(m["ci95"][1]),
                "truncated": _truncated_share(run, arm, ids[(arm, level)]),
                "samples_per_problem": float(m["samples_per_problem"]),
                "width_per_problem": float(m["width_per_problem"]),
                "prompt_tokens_per_problem": float(m["prompt_tokens_per_problem"]),
                "generated_tokens_per_problem": float(m["generated_tokens_per_problem"]),
                "verifier_tokens_per_problem": float(m["verifier_tokens_per_problem"]),
                "tokens_per_problem": float(m["tokens_per_problem"]),
                "flops_per_problem": float(m["flops_per_problem"]),
                "fallbacks": int(m["fallbacks"]),
                "within_budget": bool(m["within_budget"]),
                "tokens_per_s": float(p.get("tokens_per_s", nan)),
                "latency_p50_s": float(p.get("latency_p50_s", nan)),
                "latency_p95_s": float(p.get("latency_p95_s", nan)),
                "thinking_tokens_per_problem": float(m.get("thinking_tokens_per_problem", 0.0)),
                "train_flops": train_flops,
            }
        )
    return rows


def _train_flops(path: Path) -> float:
    """FLOPs spent training the run's model (STaR's `train_compute` in provenance.json), 0 for none."""
    try:
        provenance = json.loads((path / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0.0
    compute = provenance.get("train_compute") or {}
    return float(compute.get("train_flops", 0.0)) if isinstance(compute, dict) else 0.0


def add_seed_spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample standard deviation of accuracy across the seeds of a spec, on every row."""
    keys = ["seed_group", "arm", "level"]
    grouped = frame.groupby(keys, sort=False)["accuracy"]
    frame["seeds"] = frame.groupby(keys, sort=False)["seed"].transform("nunique").astype(int)
    frame["seed_mean_accuracy"] = grouped.transform("mean")
    # ddof=1: one seed has no spread (NaN), not a spread of zero.
    frame["seed_sd_accuracy"] = grouped.transform(lambda s: s.std(ddof=1))
    return frame


def report_table(folders: Sequence[Path | str], rescore: bool = True) -> pd.DataFrame:
    """One row per run x arm x budget level, for any number of run folders.

    Args:
        folders: run folders (results/<run-id>); each appears once however often it is named.
        rescore: re-score each run with the installed code first (as `tsbench report` does).

    Returns:
        A DataFrame with these columns, in this order:
        run_id, run_dir (the folder as given), model (model id), runner, engine, dtype,
        task, task_options ("k=v,..."), seed, seed_group (hash of the sample identity without
        the seed: runs sharing it differ only in seed),
        arm (the row's key as in scores.jsonl: "majority", "beam-search/llm-judge"), strategy,
        verifier ("" for none), oracle (bool: reads the reference),
        budget_unit ("samples" | "tokens" | "flops"), level (the budget level),
        problems, accuracy (mean per-problem score in [0, 1]), ci_low, ci_high (95% Wilson),
        truncated (share of the row's samples cut by the token cap, stop reason "length"; NaN for
        searches), samples_per_problem (policy samples spent), width_per_problem (k, or N),
        prompt_tokens_per_problem, generated_tokens_per_problem, verifier_tokens_per_problem,
        tokens_per_problem (their sum), flops_per_problem (0 where the parameter count is
        unknown), fallbacks (problems that fell back to one answer), within_budget,
        tokens_per_s, latency_p50_s, latency_p95_s (NaN where the run has no timing),
        thinking_tokens_per_problem (of the generated tokens, those inside the thinking; 0 for
        none), train_flops (FLOPs spent training the run's model, e.g. by STaR; 0 for none),
        seeds (runs of this seed_group x arm x level), seed_mean_accuracy, seed_sd_accuracy
        (across those runs; sd NaN with one seed).

    Raises:
        UserError: a folder is not a run folder, or holds no finished problem.
    """
    rows: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for folder in folders:
        path = Path(folder)
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        rows += run_rows(load_run(path, rescore=rescore))
    frame = pd.DataFrame(rows, columns=list(COLUMNS[:-3]))
    return add_seed_spread(frame)[list(COLUMNS)]
