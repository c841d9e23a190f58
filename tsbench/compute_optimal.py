"""The compute-optimal policy of Snell et al. (2024): per difficulty bin, the best strategy at each
budget, chosen on one half of the problems and scored on the other half.

Difficulty is the task's own level where every problem has one (arith's `level`), else bins of the
model's pass@1 on each problem (the share of its sampled pool graded correct: an oracle difficulty,
as in the paper), with bin edges set on the selection half. The halves are split from the run's
seed, within each level when levels are known, so the split repeats to the byte. Oracle arms are
never chosen: a policy must be one that can run without the reference. The policy is shown
against the best single strategy at the same budget level, chosen on the same half.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tsbench.paired import compare_scores
from tsbench.scoring import stable_int
from tsbench.stats import wilson_interval


@dataclass
class ComputeOptimal:
    """What the policy chose and how it scored.

    Attributes:
        difficulty: how problems were binned ("level" or "pass@1 (oracle)").
        selection, evaluation: the problem ids of each half.
        bins: problem id -> its difficulty bin.
        levels: one row per budget level: level, policy_accuracy, policy_ci_low, policy_ci_high,
            baseline_arm, baseline_accuracy, baseline_ci_low, baseline_ci_high, difference
            (policy - baseline), p_value (paired test on the evaluation half),
            policy_tokens_per_problem, baseline_tokens_per_problem, evaluation_problems,
            selection_problems, policy (the choice per bin, "bin: arm; ...").
        choices: one row per level x bin: level, bin, arm, selection_accuracy, selection_problems.
        arms: one row per level x arm: level, arm, selection_accuracy, evaluation_accuracy.
    """

    difficulty: str
    selection: list[str]
    evaluation: list[str]
    bins: dict[str, str]
    levels: pd.DataFrame
    choices: pd.DataFrame
    arms: pd.DataFrame


def split_halves(
    problem_ids: Sequence[str], seed: int, strata: Mapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Selection and evaluation halves, fixed by the seed; within each stratum when given, so each
    difficulty level has problems on both sides. An odd stratum gives its extra one to selection."""
    groups: dict[str, list[str]] = defaultdict(list)
    for pid in sorted(problem_ids):
        groups[(strata or {}).get(pid, "")].append(pid)
    selection: list[str] = []
    evaluation: list[str] = []
    for name in sorted(groups):
        members = groups[name]
        order = np.random.default_rng(stable_int(seed, "compute-optimal split", name)).permutation(
            len(members)
        )
        half = (len(members) + 1) // 2
        selection += [members[i] for i in order[:half]]
        evaluation += [members[i] for i in order[half:]]
    return sorted(selection), sorted(evaluation)


def pass_at_1(grades: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each problem's share of correct samples in its sampled pool (its greedy one if it has none)."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for g in grades:
        c = counts[(g["problem_id"], g["pool"])]
        c[0] += bool(g["correct"])
        c[1] += 1
    found: dict[str, float] = {}
    for (pid, pool), (right, total) in sorted(counts.items()):
        if pool == "sampled" or pid not in found:
            found[pid] = right / total
    return found


def pass1_bins(values: Mapping[str, float], selection: Sequence[str], bins: int) -> dict[str, str]:
    """Quantile bins of pass@1 whose edges come from the selection half alone; bin 1 is hardest."""
    chosen = [values[p] for p in selection if p in values]
    edges = np.unique(np.quantile(chosen, np.linspace(0, 1, bins + 1)[1:-1])) if chosen else np.array([])
    count = len(edges) + 1
    return {
        pid: f"pass@1 bin {int(np.searchsorted(edges, v, side='right')) + 1}/{count}"
        for pid, v in values.items()
    }


def _mean(table: Mapping[str, float], ids: Sequence[str]) -> float:
    return float(np.mean([table[i] for i in ids])) if ids else float("nan")


def _best(
    candidates: list[str],
    accuracy: Mapping[tuple[str, int], Mapping[str, float]],
    tokens: Mapping[tuple[str, int], Mapping[str, float]],
    level: int,
    ids: list[str],
) -> str:
    """The arm with the highest mean accuracy on `ids`; ties go to the cheaper arm, then the name."""
    return min(
        candidates,
        key=lambda arm: (-_mean(accuracy[(arm, level)], ids), _mean(tokens[(arm, level)], ids), arm),
    )


def compute_optimal(
    scores: Sequence[Mapping[str, Any]],
    bins: Mapping[str, str],
    selection: Sequence[str],
    evaluation: Sequence[str],
    oracle_arms: set[str] | frozenset[str] = frozenset(),
    difficulty: str = "level",
) -> ComputeOptimal:
    """Choose per bin and level on `selection`, score on `evaluation`.

    Args:
        scores: scores.jsonl records (problem_id, arm, level, accuracy, spend).
        bins: problem id -> difficulty bin.
        selection, evaluation: disjoint problem ids (see `split_halves`).
        oracle_arms: arm keys that read the reference; never chosen.
        difficulty: what the bins are, for the record.

    Returns:
        The choices and their scores. A bin with no selection problem takes the best single arm.
        Only arms with a score at that level on every problem compete.
    """
    if set(selection) & set(evaluation):
        raise ValueError("the selection and evaluation halves overlap")
    accuracy: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    tokens: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for s in scores:
        key = (s["arm"], int(s["level"]))
        accuracy[key][s["problem_id"]] = float(s["accuracy"])
        spend = s.get("spend", {})
        tokens[key][s["problem_id"]] = float(
            spend.get("prompt_tokens", 0) + spend.get("generated_tokens", 0) + spend.get("verifier_tokens", 0)
        )
    every = set(selection) | set(evaluation)
    level_rows, choice_rows, arm_rows = [], [], []
    for level in sorted({lv for _, lv in accuracy}):
        arms = sorted(
            a
            for (a, lv), got in accuracy.items()
            if lv == level and a not in oracle_arms and every <= set(got)
        )
        if not arms:
            continue

        def best(ids: list[str], lv: int = level, candidates: list[str] = arms) -> str:
            return _best(candidates, accuracy, tokens, lv, ids)

        baseline = best(list(selection))
        for arm in arms:
            arm_rows.append(
                {
                    "level": level,
                    "arm": arm,
                    "selection_accuracy": _mean(accuracy[(arm, level)], list(selection)),
                    "evaluation_accuracy": _mean(accuracy[(arm, level)], list(evaluation)),
                }
            )
        policy: dict[str, str] = {}
        for name in sorted({bins[p] for p in every}):
            chosen_on = [p for p in selection if bins[p] == name]
            policy[name] = best(chosen_on) if chosen_on else baseline
            choice_rows.append(
                {
                    "level": level,
                    "bin": name,
                    "arm": policy[name],
                    "selection_accuracy": _mean(accuracy[(policy[name], level)], chosen_on),
                    "selection_problems": len(chosen_on),
                }
            )
        ours = {p: accuracy[(policy[bins[p]], level)][p] for p in evaluation}
        theirs = {p: accuracy[(baseline, level)][p] for p in evaluation}
        n = len(evaluation)
        mine, base = _mean(ours, list(evaluation)), _mean(theirs, list(evaluation))
        paired = compare_scores(theirs, ours) if n else None
        level_rows.append(
            {
                "level": level,
                "policy_accuracy": mine,
                "policy_ci_low": wilson_interval(mine, n)[0],
                "policy_ci_high": wilson_interval(mine, n)[1],
                "baseline_arm": baseline,
                "baseline_accuracy": base,
                "baseline_ci_low": wilson_interval(base, n)[0],
                "baseline_ci_high": wilson_interval(base, n)[1],
                "difference": mine - base,
                "p_value": paired.p_value if paired else float("nan"),
                "policy_tokens_per_problem": _mean(
                    {p: tokens[(policy[bins[p]], level)][p] for p in evaluation}, list(evaluation)
                ),
                "baseline_tokens_per_problem": _mean(tokens[(baseline, level)], list(evaluation)),
                "evaluation_problems": n,
                "selection_problems": len(selection),
                "policy": "; ".join(f"{b}: {a}" for b, a in policy.items()),
            }
        )
    return ComputeOptimal(
        difficulty=difficulty,
        selection=sorted(selection),
        evaluation=sorted(evaluation),
        bins=dict(bins),
        levels=pd.DataFrame(level_rows),
        choices=pd.DataFrame(choice_rows),
        arms=pd.DataFrame(arm_rows),
    )


def for_run(run: Any, pass1_bin_count: int = 3) -> ComputeOptimal:
    """The compute-optimal policy of one scored run (a `tsbench.tables.RunData`)."""
    problems = {p["problem_id"]: p for p in run.problems}
    seed = int(run.spec.get("seed", 0))
    levels = {pid: (p.get("metadata") or {}).get("level") for pid, p in problems.items()}
    oracles = {
        a["strategy"] if not a["verifier"] else f"{a['strategy']}/{a['verifier']}"
        for a in run.arms
        if a["oracle"]
    }
    if levels and all(v is not None for v in levels.values()):
        bins = {pid: f"level {v}" for pid, v in levels.items()}
        selection, evaluation = split_halves(list(problems), seed, bins)
        return compute_optimal(run.scores, bins, selection, evaluation, oracles, "level")
    selection, evaluation = split_halves(list(problems), seed)
    values = pass_at_1(run.grades())
    bins = pass1_bins({p: values.get(p, 0.0) for p in problems}, selection, pass1_bin_count)
    return compute_optimal(run.scores, bins, selection, evaluation, oracles, "pass@1 (oracle)")
