"""Greedy chain of thought: one sample at temperature 0."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tsbench.plugins import strategies

from .base import Sample


@strategies.register("greedy", "one chain-of-thought sample at temperature 0")
class Greedy:
    name = "greedy"
    pool = "greedy"
    oracle = False

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return [1]

    def expected_accuracy(self, samples: Sequence[Sample], k: int, rng: np.random.Generator) -> float:
        return float(samples[0].correct)
