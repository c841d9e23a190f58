"""Scores from stored records: every sample graded, every pool arm at every budget level, every
search answer. Nothing here generates, so a grader fix re-scores a finished run in seconds.

Budget levels map to samples the same way whatever other arms a run has. With budgets in samples
a level is k policy samples (for searches, N), and verifier spend is reported beside it, not
bounded. With tokens or FLOPs a level bounds a row's whole spend on a problem: policy prompt +
generated tokens + verifier tokens, or their FLOPs. A pool arm takes the most samples whose
expected spend fits; where not even one sample (with its verifier score) fits, it falls back to
one sample of its pool, unscored, and the row counts it as a fallback.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from math import comb
from typing import Any

import numpy as np

from tsbench.contracts import Problem, Task, canonical_answer, verdict_of
from tsbench.ledger import Spend, forward_flops
from tsbench.spec import RunSpec
from tsbench.strategies.base import Sample

MAX_SUBSETS = 200


@dataclass(frozen=True)
class Arm:
    """One row family of the table: a strategy, with the verifier it consults if any."""

    strategy: Any
    verifier: str | None

    @property
    def key(self) -> str:
        return self.strategy.name if self.verifier is None else f"{self.strategy.name}/{self.verifier}"


def stable_int(*parts: object) -> int:
    """A 31-bit integer fixed by its parts, the same on every machine and Python run."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def k_subsets(n: int, k: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Index subsets of size k from n: all of them when few, else MAX_SUBSETS drawn with `rng`."""
    if comb(n, k) <= MAX_SUBSETS:
        return list(combinations(range(n), k))
    return [tuple(sorted(rng.choice(n, size=k, replace=False).tolist())) for _ in range(MAX_SUBSETS)]


def expected_accuracy(strategy: Any, samples: Sequence[Sample], k: int, rng: np.random.Generator) -> float:
    """A pool strategy's expected correctness at budget k over k-subsets of the pool.

    An oracle strategy scores itself from graded samples; any other only picks among public
    candidates, and the harness grades its pick.
    """
    if strategy.oracle and hasattr(strategy, "expected_accuracy"):
        return float(strategy.expected_accuracy(samples, k, rng))
    correct = {s.index: s.correct for s in samples}
    candidates = [s.public() for s in samples]
    values = []
    for subset in k_subsets(len(samples), k, rng):
        weights = strategy.pick([candidates[i] for i in subset])
        values.append(sum(w * correct[i] for i, w in weights.items()))
    return float(np.mean(values))


def affordable(budget: float, cost: Callable[[int], float], most: int) -> int:
    """The largest k <= most whose cost fits the budget; 0 when not even one fits."""
    k = 0
    while k < most and cost(k + 1) <= budget:
        k += 1
    return k


def budget_field(unit: str) -> Callable[[Spend], float]:
    """The part of a spend a level in this unit bounds."""
    if unit == "tokens":
        return lambda s: s.tokens
    if unit == "flops":
        return lambda s: s.flops
    return lambda s: s.samples


def pool_levels(
    spec: RunSpec, strategy: Any, cost: Callable[[int, bool], Spend], most: int
) -> list[tuple[int, int, bool]]:
    """(level, samples k, fallback) for a pool arm on one problem; cost(k, scored) is its spend."""
    if spec.budget_unit == "samples":
        return [(k, k, False) for k in strategy.budgets(spec.budgets) if k <= most]
    bounded = budget_field(spec.budget_unit)
    found = []
    for level in spec.budgets:
        k = affordable(level, lambda j: bounded(cost(j, True)), most)
        allowed = strategy.budgets([k]) if k else []
        found.append((level, allowed[0], False) if allowed else (level, 1, True))
    return found


@dataclass
class Pool:
    """A problem's stored pool: its samples as generated, and their grades."""

    records: list[dict[str, Any]]
    graded: list[Sample]

    @property
    def prompt_tokens(self) -> float:
        return float(self.records[0]["prompt_tokens"]) if self.records else 0.0

    @property
    def mean_generated(self) -> float:
        return sum(r["generated_tokens"] for r in self.records) / max(1, len(self.records))

    def verifier_spend(self, verifier: str) -> tuple[float, float]:
        """Mean verifier tokens and FLOPs per sample."""
        spent = [r.get("verifier_spend", {}).get(verifier, [0.0, 0.0]) for r in self.records]
        n = max(1, len(spent))
        return sum(t for t, _ in spent) / n, sum(f for _, f in spent) / n


class Grader:
    """Extracts, canonicalises and grades texts, each distinct answer once per problem."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self._canonical: dict[str, str] = {}
        self._verdicts: dict[tuple[str, str | None], tuple[bool, str]] = {}

    def grade_all(self, texts: Sequence[str], problem: Problem) -> list[dict[str, Any]]:
        """Answer, canonical form, grade and its status of each text. Canonical forms of the
        answers not seen yet come in one call where the task can batch them (one worker trip)."""
        answers = [self.task.extract(text) for text in texts]
        new = sorted({a for a in answers if a is not None and a not in self._canonical})
        many = getattr(self.task, "canonical_many", None)
        forms = many(new) if callable(many) else [canonical_answer(self.task, a) for a in new]
        self._canonical.update(zip(new, forms, strict=True))
        # A task that runs answers (code in a sandbox) grades the new ones together, in parallel.
        batch = getattr(self.task, "verdict_many", None)
        unseen = list(dict.fromkeys(a for a in answers if (problem.id, a) not in self._verdicts))
        if callable(batch) and len(unseen) > 1:
            for answer, verdict in zip(unseen, batch(unseen, problem), strict=True):
                self._verdicts[(problem.id, answer)] = (verdict.correct, verdict.status)
        graded = []
        for answer in answers:
            key = (problem.id, answer)
            if key not in self._verdicts:
                verdict = verdict_of(self.task, answer, problem)
                self._verdicts[key] = (verdict.correct, verdict.status)
            correct, status = self._verdicts[key]
            canonical = None if answer is None else self._canonical[answer]
            graded.append({"answer": answer, "canonical": canonical, "correct": correct, "status": status})
        return graded


def score_run(
    spec: RunSpec,
    task: Task,
    arms: Sequence[Arm],
    parameters: int,
    problems: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    rescore: Callable[[str, Problem, list[str]], list[float] | None] = lambda *_: None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Grades of every stored sample and scores of every arm x level x problem.

    Args:
        spec: the run's spec (budgets, unit, seed).
        task: the task whose extractor, canonical form and grader score.
        arms: the run's arms.
        parameters: the policy's parameter count, for FLOPs.
        problems, samples: problems.jsonl and samples.jsonl records.
        rescore: verifier name, problem, texts -> fresh scores for verifiers that must be
            re-run with the scoring code (oracle verifiers read the grader), else None.

    Returns:
        grades.jsonl records and scores.jsonl records.
    """
    grader = Grader(task)
    by_pool: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in samples:
        by_pool[(record["problem_id"], record["pool"])].append(record)
    grades: list[dict[str, Any]] = []
    scores: list[dict[str, Any]] = []
    for record in problems:
        problem = Problem(record["problem_id"], record["question"], record["reference"], record["metadata"])
        pools: dict[str, Pool] = {}
        for pool in ("greedy", "sampled"):
            stored = sorted(by_pool.get((problem.id, pool), []), key=lambda r: r["index"])
            graded = []
            for r, grade in zip(stored, grader.grade_all([r["text"] for r in stored], problem), strict=True):
                grades.append({"problem_id": problem.id, "pool": pool, "index": r["index"], **grade})
                mean_lp = r.get("mean_logprob")
                graded.append(
                    Sample(r["index"], grade["canonical"], grade["correct"], r["generated_tokens"], mean_lp)
                )
            pools[pool] = Pool(stored, graded)
        for arm in arms:
            if arm.strategy.pool == "search":
                for level, attempt in record["searches"].get(arm.key, {}).items():
                    [grade] = grader.grade_all([attempt["text"]], problem)
                    scores.append(
                        {
                            "problem_id": problem.id,
                            "arm": arm.key,
                            "level": int(float(level)),
                            "accuracy": float(grade["correct"]),
                            "answer": grade["answer"],
                            "k": attempt["k"],
                            "spend": attempt["spend"],
                            "fallback": attempt["fallback"],
                        }
                    )
            else:
                scores += _score_pool_arm(spec, arm, parameters, problem, pools[arm.strategy.pool], rescore)
    return grades, scores


def _score_pool_arm(
    spec: RunSpec,
    arm: Arm,
    parameters: int,
    problem: Problem,
    pool: Pool,
    rescore: Callable[[str, Problem, list[str]], list[float] | None],
) -> list[dict[str, Any]]:
    samples = pool.graded
    per_token, per_flop = (0.0, 0.0) if arm.verifier is None else pool.verifier_spend(arm.verifier)
    if arm.verifier is not None:
        fresh = rescore(arm.verifier, problem, [r["text"] for r in pool.records])
        stored = [r["scores"][arm.verifier] for r in pool.records]
        samples = [replace(s, score=v) for s, v in zip(samples, fresh or stored, strict=True)]

    def cost(k: int, scored: bool = True) -> Spend:
        # Canonical cost: the pool's one request charges its prompt once, whatever k.
        generated = pool.mean_generated * k
        spend = Spend(
            samples=k,
            prompt_tokens=pool.prompt_tokens,
            generated_tokens=generated,
            flops=forward_flops(parameters, pool.prompt_tokens + generated),
        )
        if scored and arm.verifier is not None:
            spend = spend + Spend(verifier_tokens=per_token * k, flops=per_flop * k)
        return spend

    found = []
    for level, k, fallback in pool_levels(spec, arm.strategy, cost, len(samples)):
        rng = np.random.default_rng(stable_int(spec.seed, problem.id, arm.key, level))
        if fallback:  # one sample of the pool, unscored: a random pick among the pool
            accuracy = sum(s.correct for s in samples) / len(samples)
        else:
            accuracy = expected_accuracy(arm.strategy, samples, k, rng)
        found.append(
            {
                "problem_id": problem.id,
                "arm": arm.key,
                "level": level,
                "accuracy": round(accuracy, 6),
                "k": k,
                "spend": cost(k, not fallback).as_dict(),
                "fallback": fallback,
            }
        )
    return found
