"""pass@k: does any of k samples hold the right answer? An oracle upper bound, never a method:
it reads each sample's grade, which only strategies declared oracle receive."""

from __future__ import annotations

from collections.abc import Sequence
from math import comb

import numpy as np

from tsbench.plugins import strategies

from .base import Sample


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of Chen et al. 2021: 1 - C(n-c, k) / C(n, k).

    Args:
        n: samples drawn.
        c: correct samples among them.
        k: budget, k <= n.
    """
    if k > n:
        raise ValueError(f"k={k} exceeds the pool of n={n} samples")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


@strategies.register("pass@k", "oracle coverage: any of k samples correct (an upper bound)")
class PassAtK:
    name = "pass@k"
    pool = "sampled"
    oracle = True

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return list(requested)

    def expected_accuracy(self, samples: Sequence[Sample], k: int, rng: np.random.Generator) -> float:
        return pass_at_k(len(samples), sum(s.correct for s in samples), k)
