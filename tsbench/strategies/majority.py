"""Majority vote (self-consistency, Wang et al. 2022) over k samples' answers, grouped by the
task's canonical form, so that answers equal in meaning ('\\frac12', '0.5') vote together."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from tsbench.contracts import PublicTask
from tsbench.plugins import strategies

from .base import Candidate


def spread(groups: dict[str, list[int]], chosen: Sequence[str]) -> dict[int, float]:
    """Weights over candidate indices: the chosen answers equally likely (a tie is a uniform
    pick), each answer's weight shared by the candidates that gave it."""
    weights: dict[int, float] = {}
    for answer in chosen:
        for index in groups[answer]:
            weights[index] = weights.get(index, 0.0) + 1.0 / len(chosen) / len(groups[answer])
    return weights


def by_answer(candidates: Sequence[Candidate]) -> dict[str, list[int]]:
    """Candidate indices per answer, in order of first appearance; no answer casts no vote."""
    groups: dict[str, list[int]] = defaultdict(list)
    for candidate in candidates:
        if candidate.answer is not None:
            groups[candidate.answer].append(candidate.index)
    return groups


def vote(candidates: Sequence[Candidate]) -> dict[int, float]:
    """The plurality answer; a tie counts as a uniform pick among the tied answers."""
    groups = by_answer(candidates)
    if not groups:
        return {}
    top = max(len(members) for members in groups.values())
    return spread(groups, [answer for answer, members in groups.items() if len(members) == top])


def voted(answers: Sequence[str | None], tokens: Sequence[int], rng: np.random.Generator) -> int | None:
    """The index of the sample that answers for the vote: the plurality answer (a tie a uniform
    pick), and among its samples a uniform pick, both drawn from rng; None when none has an answer.

    Args:
        answers: each sample's canonical answer, or None.
        tokens: each sample's generated tokens.
        rng: the search's generator.
    """
    weights = vote([Candidate(i, a, t) for i, (a, t) in enumerate(zip(answers, tokens, strict=True))])
    if not weights:
        return None
    indices = sorted(weights)
    p = np.array([weights[i] for i in indices])
    return int(indices[int(rng.choice(len(indices), p=p / p.sum()))])


def canonical_of(task: PublicTask, text: str) -> tuple[str | None, str | None]:
    """(raw extracted answer, its canonical form) of a text; (None, None) when it has none."""
    raw = task.extract(text)
    return raw, None if raw is None else task.canonical(raw)


@strategies.register("majority", "self-consistency: the most common answer among k samples")
class Majority:
    name = "majority"
    pool = "sampled"
    oracle = False

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return list(requested)

    def pick(self, candidates: Sequence[Candidate]) -> dict[int, float]:
        return vote(candidates)
