"""`tsbench compare RUN [RUN_B] --a ROW --b ROW`: two rows of a report on the same problems.

A row is named as the report names it, `ARM@LEVEL`: `majority@16`, `beam-search/llm-judge@16`,
`pass@k@4` (the arm is everything before the last "@"). With a second run folder, row B is read
from it; both runs must hold the same problems. The statistics are `tsbench.paired`'s.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tsbench.errors import UserError
from tsbench.paired import PairedResult, compare_scores
from tsbench.tables import RunData, load_run


def parse_row(name: str, flag: str) -> tuple[str, float]:
    """'beam-search/llm-judge@16' -> ('beam-search/llm-judge', 16.0)."""
    arm, at, level = name.strip().removesuffix(" (oracle)").rpartition("@")
    try:
        value = float(level)
    except ValueError:
        value = float("nan")
    if not at or not arm or value != value:
        raise UserError(f"{flag}: '{name}' is not a row name; write ARM@LEVEL, e.g. majority@16")
    return arm, value


def row_names(run: RunData) -> list[str]:
    """Every row of a run, as `ARM@LEVEL`, in the report's order."""
    return [f"{r['strategy']}@{r['k']}" for r in run.metrics["rows"]]


def row_scores(run: RunData, name: str, flag: str) -> dict[str, float]:
    """Per-problem scores of one row; a name the run does not hold is one clear error."""
    arm, level = parse_row(name, flag)
    found = {
        s["problem_id"]: float(s["accuracy"])
        for s in run.scores
        if s["arm"] == arm and float(s["level"]) == level
    }
    if not found:
        names = row_names(run)
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise UserError(f"{flag}: no row '{name}' in {run.path}; its rows are {shown}")
    return found


def same_problems(first: RunData, second: RunData) -> None:
    """Two runs hold the same problems only if every shared id has the same question and reference
    (arith under another seed reuses ids for other problems)."""
    mine = {p["problem_id"]: (p.get("question"), p.get("reference")) for p in first.problems}
    theirs = {p["problem_id"]: (p.get("question"), p.get("reference")) for p in second.problems}
    for pid in sorted(set(mine) & set(theirs)):
        if mine[pid] != theirs[pid]:
            raise UserError(
                f"runs {first.path} and {second.path} hold different problems under the same id "
                f"({pid}); compare rows of runs over the same task data and seed"
            )


def _oracle(run: RunData, name: str) -> bool:
    arm, level = parse_row(name, "")
    return any(r["strategy"] == arm and r["oracle"] for r in run.metrics["rows"])


def describe(result: PairedResult, a: str, b: str, run_a: RunData, run_b: RunData) -> str:
    """The comparison as a few lines people read."""

    def label(run: RunData, name: str) -> str:
        return name + (" (oracle)" if _oracle(run, name) else "")

    where = "" if run_a.path == run_b.path else f" (A from {run_a.path.name}, B from {run_b.path.name})"
    low, high = result.ci95
    lines = [
        f"A: {label(run_a, a)}  accuracy {100 * result.accuracy_a:.1f}%",
        f"B: {label(run_b, b)}  accuracy {100 * result.accuracy_b:.1f}%",
        f"B - A: {100 * result.difference:+.1f} points, 95% CI [{100 * low:+.1f}, {100 * high:+.1f}] "
        f"(paired bootstrap over {result.problems} problems){where}",
    ]
    if result.test == "mcnemar-exact":
        lines.append(
            f"McNemar's exact test: B right and A wrong on {result.b_only}, A right and B wrong on "
            f"{result.a_only}; two-sided p = {result.p_value:.4g}"
        )
    else:
        lines.append(
            "paired permutation test (sign flips of per-problem differences; scores are expected "
            f"accuracies, not 0/1): two-sided p = {result.p_value:.4g}"
        )
    return "\n".join(lines)


def compare_command(runs: list[str], a: str, b: str, as_json: bool, resamples: int, seed: int) -> int:
    """Print the paired comparison of row A and row B; exit code 0."""
    if len(runs) > 2:
        raise UserError(f"compare takes one run folder, or two (A's then B's); got {len(runs)}")
    run_a = load_run(Path(runs[0]))
    run_b = load_run(Path(runs[1])) if len(runs) == 2 else run_a
    if run_b is not run_a:
        same_problems(run_a, run_b)
    scores_a, scores_b = row_scores(run_a, a, "--a"), row_scores(run_b, b, "--b")
    result = compare_scores(scores_a, scores_b, resamples=resamples, seed=seed)
    if as_json:
        record: dict[str, Any] = {"a": a, "b": b, "run_a": str(run_a.path), "run_b": str(run_b.path)}
        print(json.dumps({**record, **asdict(result)}, indent=1))
    else:
        print(describe(result, a, b, run_a, run_b))
    return 0
