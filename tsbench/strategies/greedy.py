"""Greedy chain of thought: one sample at temperature 0."""

from __future__ import annotations

from collections.abc import Sequence

from tsbench.plugins import strategies

from .base import Candidate


@strategies.register("greedy", "one chain-of-thought sample at temperature 0")
class Greedy:
    name = "greedy"
    pool = "greedy"
    oracle = False

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return [1]

    def pick(self, candidates: Sequence[Candidate]) -> dict[int, float]:
        return {candidates[0].index: 1.0} if candidates else {}
