"""Generation speed of each arm of a spec, side by side: `tsbench speed` (the run's flags).

Each arm runs alone over the spec's problems, in one process on one loaded runner, one after
another (and, with --repeats, again in reverse order, so that a drift in the machine's load does
not favour the arms that ran first). An arm's speed is the tokens its policy generated over the
wall time of generating them, its own verifier scoring included; nothing is recorded in results/.
This is the side-by-side figure the batched-search issue asks for: a search against the sample
pool over the same problems at the same budget.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tsbench.generation import batch_sequences, generate_all
from tsbench.records import TIMINGS, RunFolder, read_jsonl
from tsbench.run import (
    Prepared,
    build_verifiers,
    check_budgets,
    open_runner,
    prepare,
)
from tsbench.spec import RunSpec


def arm_speeds(prepared: Prepared, runner: Any, repeats: int = 1) -> list[dict[str, Any]]:
    """One row per arm and repeat: generated tokens, wall seconds, tokens per second.

    Args:
        prepared: the spec, prepared as for a run.
        runner: the policy runner, loaded once for every arm.
        repeats: passes over the arms, every other one in reverse order.
    """
    parameters = runner.info().parameters
    verifiers = build_verifiers(prepared, runner)
    check_budgets(prepared, runner, parameters, verifiers)
    rows = []
    for repeat in range(repeats):
        arms = prepared.arms if repeat % 2 == 0 else list(reversed(prepared.arms))
        for arm in arms:
            alone = Prepared(prepared.spec, prepared.task, prepared.problems, [arm])
            with tempfile.TemporaryDirectory() as scratch:
                folder = RunFolder.open(Path(scratch) / "run", alone.spec.to_yaml(), {"arm": arm.key})
                started = time.perf_counter()
                generate_all(alone, runner, parameters, verifiers, folder)
                wall = time.perf_counter() - started
                tokens = sum(t["generated_tokens"] for t in read_jsonl(folder.path / TIMINGS))
            rows.append(
                {
                    "arm": arm.key,
                    "repeat": repeat,
                    "generated_tokens": tokens,
                    "wall_s": round(wall, 3),
                    "tokens_per_s": round(tokens / wall, 2) if wall else None,
                }
            )
    return rows


def speed_table(rows: list[dict[str, Any]]) -> str:
    """Median tokens/s per arm and its ratio to the first arm (the spec's first strategy)."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        arms.setdefault(row["arm"], []).append(row)
    medians = {arm: statistics.median(r["tokens_per_s"] or 0.0 for r in found) for arm, found in arms.items()}
    first = next(iter(medians.values()))
    width = max(len(arm) for arm in arms)
    lines = [f"{'arm':<{width}}  gen tok/s (median)  vs {next(iter(arms))}  runs: tokens / wall s"]
    for arm, found in arms.items():
        runs = ", ".join(f"{r['generated_tokens']} / {r['wall_s']:.1f}" for r in found)
        ratio = medians[arm] / first if first else float("nan")
        lines.append(f"{arm:<{width}}  {medians[arm]:>18.1f}  {ratio:>5.2f}x  {runs}")
    return "\n".join(lines)


def speed_command(spec: RunSpec, repeats: int, json_path: str | None) -> int:
    """`tsbench speed`: load the runner once, time every arm, print the table."""
    prepared = prepare(spec)
    runner = open_runner(prepared.spec, cache=False)  # speed is measured, never read back
    try:
        prepared.spec = replace(prepared.spec, batch_sequences=batch_sequences(prepared.spec, runner))
        rows = arm_speeds(prepared, runner, repeats)
    finally:
        runner.close()
    print(speed_table(rows))
    print(
        f"runner: {prepared.spec.runner}; problems: {len(prepared.problems)}; "
        f"batch_sequences: {prepared.spec.batch_sequences}"
    )
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1) + "\n")
    return 0
