"""Weighted best-of-N: each distinct answer gets the sum of its samples' verifier scores; the
highest sum wins (Li et al. 2023, "weighted majority voting")."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from tsbench.plugins import strategies

from .base import Sample
from .best_of_n import scores_of
from .majority import k_subsets


def weighted_vote(samples: Sequence[Sample]) -> float:
    """Correctness of the answer with the largest score sum; ties count as a uniform pick among them.

    Samples without an answer carry no vote, as in majority voting.
    """
    totals: dict[str, float] = defaultdict(float)
    for sample, score in zip(samples, scores_of(samples, "weighted-best-of-n"), strict=True):
        if sample.answer is not None:
            totals[sample.answer] += score
    if not totals:
        return 0.0
    top = max(totals.values())
    # Sums of equal scores can differ in the last bit; such answers are tied.
    tied = [answer for answer, total in totals.items() if top - total <= 1e-9]
    correct = {s.answer for s in samples if s.correct}
    return sum(answer in correct for answer in tied) / len(tied)


@strategies.register("weighted-best-of-n", "the answer whose samples' verifier scores sum highest")
class WeightedBestOfN:
    name = "weighted-best-of-n"
    pool = "sampled"
    needs_verifier = True  # ranks samples by Sample.score
    oracle = False

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return list(requested)

    def expected_accuracy(self, samples: Sequence[Sample], k: int, rng: np.random.Generator) -> float:
        subsets = k_subsets(len(samples), k, rng)
        return float(np.mean([weighted_vote([samples[i] for i in subset]) for subset in subsets]))
