"""What a strategy sees and returns.

Pool strategies read one pool of samples per problem and are scored, for every budget k, in
expectation over k-subsets of that pool (estimating every k from one pool, rather than re-sampling
per k, is what makes the budget curve cheap and low-variance). A strategy that is not an oracle
sees each sample's public view (a `Candidate`: canonical answer, tokens, scores), never whether it
is correct; it says which candidates it would answer with (`pick`), and the harness grades that.
Only strategies declared oracle (pass@k) receive graded `Sample`s.

Search strategies spend a budget step by step. A search is a generator: it yields what it needs
(`Generate`: policy samples; `ScoreSteps`: the process verifier's scores) and receives the results,
and returns its `Attempt`. It never calls the runner or the verifier itself: the scheduler
(tsbench.scheduler) gathers the needs of every live search into engine-sized batches. It sees the
problem without its reference (`PublicProblem`), the task without its grader (`PublicTask`), and
`Estimates` (prompt token counts, the verifier's cost bound), so it cannot read the answer either.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from tsbench.contracts import GenerationRequest, PublicProblem, PublicTask
from tsbench.ledger import Spend
from tsbench.verifiers.base import VerifierSpend

Pool = Literal["greedy", "sampled"]


@dataclass(frozen=True)
class Candidate:
    """A sample as a non-oracle strategy sees it.

    Args:
        index: position in the problem's pool.
        answer: the task's canonical form of the extracted answer (equal meaning, equal text), or None.
        generated_tokens: tokens the policy generated for it.
        mean_logprob: mean token logprob, when the runner gave logprobs.
        score: the outcome verifier's score, when the arm has a verifier.
    """

    index: int
    answer: str | None
    generated_tokens: int
    mean_logprob: float | None = None
    score: float | None = None


@dataclass(frozen=True)
class Sample:
    """A graded sample: only oracle strategies receive these."""

    index: int
    answer: str | None
    correct: bool
    generated_tokens: int
    mean_logprob: float | None = None
    score: float | None = None

    def public(self) -> Candidate:
        return Candidate(self.index, self.answer, self.generated_tokens, self.mean_logprob, self.score)


class PoolStrategy(Protocol):
    """Picks a final answer from k candidates of a pool.

    `pick` returns, for the candidates it is given, the probability that it answers with each
    (by Candidate.index; ties spread evenly, weights summing to 1, or nothing for no answer).
    """

    name: str
    pool: Pool
    oracle: bool  # False: receives Candidates through pick(); True: receives Samples

    def budgets(self, requested: Sequence[int]) -> list[int]:
        """The budgets this strategy reports, given those the user asked for."""
        ...

    def pick(self, candidates: Sequence[Candidate]) -> dict[int, float]: ...


class OraclePoolStrategy(Protocol):
    """An upper bound that reads correctness (pass@k): scored by its own estimator."""

    name: str
    pool: Pool
    oracle: Literal[True]

    def budgets(self, requested: Sequence[int]) -> list[int]: ...

    def expected_accuracy(self, samples: Sequence[Sample], k: int, rng: np.random.Generator) -> float: ...


@dataclass(frozen=True)
class SearchBudget:
    """What a search may spend on one problem.

    Args:
        samples: N, the search's width (search-and-learn's n: beams, or paths to complete).
        tokens: the most tokens it may spend in all: policy prompt + generated, plus verifier
            tokens (rollouts included) unless `policy_only`.
        flops: the most FLOPs it may spend, counted the same way.
        policy_only: with budgets in samples, the bounds hold policy tokens only; the verifier's
            spend is reported beside them, not bounded (the table says so).
        max_tokens: the task's cap on one whole solution (a fallback answer's cap).
    """

    samples: int
    tokens: float = float("inf")
    flops: float = float("inf")
    policy_only: bool = False
    max_tokens: int = 256


@dataclass
class Attempt:
    """A search's final solution, what it spent, and its trace (the tree, for tree searches).

    Args:
        text: the solution text the answer is extracted from (kept, so a run can be re-scored).
        answer: the extracted answer (raw, as the task's extractor gives it), or None.
        spend: policy and verifier spend; verifier tokens and FLOPs included.
        trace: the search's rounds or tree.
        fallback: the search could not take its first step within the budget and answered with
            one greedy solution capped to what the budget had left.
    """

    text: str
    answer: str | None
    spend: Spend
    trace: dict[str, Any] = field(default_factory=dict)
    fallback: bool = False


@dataclass(frozen=True)
class Generate:
    """A search's need: the runner's results for these requests, in order (list[GenerationResult])."""

    requests: tuple[GenerationRequest, ...]


@dataclass(frozen=True)
class ScoreSteps:
    """A search's need: its process verifier's step scores of these paths (list[Scored]).

    Args:
        paths: partial solutions, each a tuple of steps.
        logprobs: per path, each step's mean token logprob as the policy sampled it (None where
            unknown); verifiers that read the policy's own certainty (self-certainty) use it.
    """

    paths: tuple[tuple[str, ...], ...]
    logprobs: tuple[tuple[float | None, ...], ...] | None = None


Need = Generate | ScoreSteps
# A running search: yields needs, is sent each need's results, returns its Attempt.
Search = Generator[Need, Any, Attempt]


@dataclass(frozen=True)
class Estimates:
    """What a search may ask before it spends: nothing here generates or scores.

    Args:
        parameters: the policy's parameter count (FLOPs on the ledger).
        count_prompt_tokens: GenerationResult.prompt_tokens of a request, without generating.
        verifier_cost_bound: at least what scoring these paths would cost now, each path's last
            step longer by up to extra_tokens (verifiers.base.CostBounded).
    """

    parameters: int
    count_prompt_tokens: Callable[[GenerationRequest], int]
    verifier_cost_bound: Callable[[Sequence[Sequence[str]], int], VerifierSpend]


class SearchStrategy(Protocol):
    """Spends a budget step by step through the scheduler; runs once per problem and budget."""

    name: str
    pool: Literal["search"]
    oracle: bool

    def budgets(self, requested: Sequence[int]) -> list[int]: ...

    def search(
        self,
        problem: PublicProblem,
        task: PublicTask,
        estimates: Estimates,
        budget: SearchBudget,
        rng: np.random.Generator,
    ) -> Search:
        """A generator of needs (Generate, ScoreSteps) that returns the Attempt."""
        ...
