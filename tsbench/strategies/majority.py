"""Majority vote (self-consistency, Wang et al. 2022) over k samples' extracted answers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import combinations
from math import comb

import numpy as np

from tsbench.plugins import strategies

from .base import Sample

MAX_SUBSETS = 200


def vote(samples: Sequence[Sample]) -> float:
    """Correctness of the plurality answer; a tie counts as a uniform pick among the tied answers."""
    votes = Counter(s.answer for s in samples if s.answer is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    tied = [answer for answer, count in votes.items() if count == top]
    correct = {s.answer for s in samples if s.correct}
    return sum(answer in correct for answer in tied) / len(tied)


def k_subsets(n: int, k: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Index subsets of size k from n: all of them when few, else MAX_SUBSETS drawn with `rng`."""
    if comb(n, k) <= MAX_SUBSETS:
        return list(combinations(range(n), k))
    return [tuple(sorted(rng.choice(n, size=k, replace=False).tolist())) for _ in range(MAX_SUBSETS)]


@strategies.register("majority", "self-consistency: the most common answer among k samples")
class Majority:
    name = "majority"
    pool = "sampled"
    oracle = False

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return list(requested)

    def expected_accuracy(self, samples: Sequence[Sample], k: int, rng: np.random.Generator) -> float:
        subsets = k_subsets(len(samples), k, rng)
        return float(np.mean([vote([samples[i] for i in subset]) for subset in subsets]))
