"""What a strategy sees and returns.

Sampling strategies read one pool of samples per problem and report, for every budget k, the
expected accuracy of the strategy had it drawn k samples. Estimating every k from one pool
(rather than re-sampling per k) is what makes the budget curve cheap and low-variance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

Pool = Literal["greedy", "sampled"]


@dataclass(frozen=True)
class Sample:
    """One graded completion from a problem's pool."""

    index: int
    answer: str | None
    correct: bool
    generated_tokens: int
    mean_logprob: float | None = None


class PoolStrategy(Protocol):
    """Picks a final answer from k samples of a pool; scored in expectation over k-subsets."""

    name: str
    pool: Pool
    oracle: bool  # True when it peeks at the reference (an upper bound, not a method)

    def budgets(self, requested: Sequence[int]) -> list[int]:
        """The budgets this strategy reports, given those the user asked for."""
        ...

    def expected_accuracy(self, samples: Sequence[Sample], k: int, rng: np.random.Generator) -> float:
        """Expected correctness at budget k, estimated from the whole pool."""
        ...
