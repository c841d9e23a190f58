"""What a strategy sees and returns.

Sampling strategies read one pool of samples per problem and report, for every budget k, the
expected accuracy of the strategy had it drawn k samples. Estimating every k from one pool
(rather than re-sampling per k) is what makes the budget curve cheap and low-variance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from tsbench.contracts import Problem, Runner, Task
from tsbench.ledger import Spend

Pool = Literal["greedy", "sampled"]


@dataclass(frozen=True)
class Sample:
    """One graded completion from a problem's pool."""

    index: int
    answer: str | None
    correct: bool
    generated_tokens: int
    mean_logprob: float | None = None
    score: float | None = None  # the outcome verifier's score, when the run has a verifier


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


@dataclass(frozen=True)
class SearchBudget:
    """What a search may spend on one problem.

    Args:
        samples: the samples-equivalent budget k (N in search-and-learn: beams or paths).
        generated_tokens: policy tokens the search may generate; it stops at the first step that
            reaches it, so it overshoots by at most one step.
        flops: policy and verifier FLOPs it may spend, checked the same way (budgets in FLOPs).
    """

    samples: int
    generated_tokens: float
    flops: float = float("inf")


@dataclass
class Attempt:
    """A search's final answer, what it spent, and its trace (the tree, for tree searches)."""

    answer: str | None
    spend: Spend  # policy and verifier spend; verifier_tokens and its FLOPs included
    trace: dict[str, Any]


class SearchStrategy(Protocol):
    """Spends a budget interactively with the runner and a verifier; runs once per budget."""

    name: str
    pool: Literal["search"]
    oracle: bool

    def budgets(self, requested: Sequence[int]) -> list[int]: ...

    def solve(
        self,
        problem: Problem,
        task: Task,
        runner: Runner,
        verifier: Any,
        budget: SearchBudget,
        rng: np.random.Generator,
    ) -> Attempt: ...
