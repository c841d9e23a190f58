"""Monte Carlo rollout value of a partial solution (Math-Shepherd, Wang et al. 2024).

From each prefix (steps 1..i) the policy completes the solution k times; the step's value is the
fraction of those completions that reach the majority answer among them (how settled the outcome
is), or, built with oracle=True, the fraction that reach the correct answer (Math-Shepherd's
"soft estimation"; an oracle, since it reads the reference).

Each prefix is sent as a continuation (the steps joined by the delimiter, plus one delimiter so the
model starts the next step), so an engine with prefix caching reuses the problem's prompt. The
answer is extracted from prefix + completion, since a prefix may already hold it.
Spend: per rolled-out prefix, its request's prompt tokens counted canonically (once for the k
rollouts, GenerationResult.prompt_tokens, whatever a prefix cache saved) plus the rollouts'
generated tokens, as verifier tokens. `cost_bound` says beforehand what process scoring will cost
at most: per prefix not yet rolled out, the runner's count of the continuation request's prompt
(the last step longer by `extra_tokens`, + SLACK_TOKENS for re-tokenisation) + k * max_tokens.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from tsbench.contracts import AnyProblem, GenerationRequest, Runner
from tsbench.ledger import forward_flops
from tsbench.plugins import verifiers

from .base import (
    STEP_DELIMITER,
    RemembersSteps,
    StepJob,
    VerifierSpend,
    as_bool,
    join_steps,
    prompt_bound,
    refuse_unknown,
)


def rollout_value(answers: Sequence[str | None], correct: Sequence[bool] | None = None) -> float:
    """Fraction of rollouts at the majority answer (None never counts), or the correct fraction.

    Args:
        answers: the answer each rollout reached.
        correct: whether each was graded correct; given for the oracle form.
    """
    if not answers:
        return 0.0
    if correct is not None:
        return sum(correct) / len(answers)
    votes = Counter(a for a in answers if a is not None)
    return max(votes.values()) / len(answers) if votes else 0.0


class RolloutValue(RemembersSteps):
    """Process verifier: each step's value from k sampled completions of the solution so far.

    Args:
        runner: the policy that rolls out (the run's runner by default).
        rollouts: completions per prefix (k).
        temperature: sampling temperature of the rollouts.
        max_tokens: cap per rollout.
        oracle: score by the correct answer rather than the rollouts' majority.
        delimiter: what joins steps into text.
        seed: seeds of the rollouts are seed, seed + 1, ...; the same for every prefix.
    """

    name = "rollout-value"

    def __init__(
        self,
        runner: Runner,
        rollouts: int = 4,
        temperature: float = 0.8,
        max_tokens: int = 256,
        oracle: bool = False,
        delimiter: str = STEP_DELIMITER,
        seed: int = 0,
    ) -> None:
        if rollouts < 1:
            raise ValueError(f"rollouts must be at least 1, got {rollouts}")
        self.runner = runner
        self.rollouts = rollouts
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.oracle = oracle
        self.delimiter = delimiter
        self.seeds = tuple(range(seed, seed + rollouts))
        self._parameters: int | None = None
        self.reset()

    def _request(self, messages: tuple[tuple[str, str], ...], prefix: Sequence[str]) -> GenerationRequest:
        return GenerationRequest(
            messages=messages,
            n=self.rollouts,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seeds=self.seeds,
            continuation=join_steps(prefix, self.delimiter) + self.delimiter,
        )

    def _spend(self, tokens: float) -> VerifierSpend:
        if self._parameters is None:
            self._parameters = self.runner.info().parameters
        return VerifierSpend(tokens, forward_flops(self._parameters, tokens))

    def score_prefixes(
        self, jobs: Sequence[StepJob], news: Sequence[dict[tuple[str, ...], int]]
    ) -> Iterable[tuple[float, VerifierSpend]]:
        """Every search's new rollouts in one generate call (RemembersSteps): each prefix's value
        is the rollouts' agreement, its spend their prompt and generated tokens."""
        requests = []
        for job, new in zip(jobs, news, strict=True):
            messages = tuple((m["role"], m["content"]) for m in job.task.messages(job.problem))
            requests += [self._request(messages, prefix) for prefix in new]
        rolled = iter(zip(requests, self.runner.generate(requests) if requests else [], strict=True))
        for job, new in zip(jobs, news, strict=True):
            for _ in new:
                request, result = next(rolled)
                answers = [job.task.extract(request.continuation + c.text) for c in result.completions]
                correct = [job.task.grade(a, job.problem) for a in answers] if self.oracle else None
                spend = self._spend(result.prompt_tokens + sum(c.tokens for c in result.completions))
                yield rollout_value(answers, correct), spend

    def cost_bound(
        self,
        problem: AnyProblem,
        task: Any,
        steps: Sequence[Sequence[str]],
        extra_tokens: int,
        memo: dict[tuple[str, ...], float] | None = None,
    ) -> VerifierSpend:
        """At least what scoring these paths would spend now, each path being one of `steps` whose
        last step is longer by up to extra_tokens tokens (CostBounded); `memo` is the search's own
        (StepJob.memo), else what score_steps remembers for this problem.

        Each path's last prefix stands for a step not yet written, so it is counted for every path;
        earlier prefixes are counted once, and only when not remembered.
        """
        messages = tuple((m["role"], m["content"]) for m in task.messages(problem))
        tokens = prompt_bound(
            self.runner,
            "rollout-value",
            steps,
            self.remembered(problem, memo),
            extra_tokens,
            lambda prefix: self._request(messages, prefix),
            generated_per_prefix=self.rollouts * self.max_tokens,
        )
        return self._spend(tokens)


@verifiers.register(
    "rollout-value", "Math-Shepherd value: share of k rollouts from a step reaching the majority answer"
)
def create(
    runner: Runner,
    rollouts: Any = 4,
    temperature: Any = 0.8,
    max_tokens: Any = 256,
    oracle: Any = False,
    delimiter: str = STEP_DELIMITER,
    seed: Any = 0,
    **options: Any,
) -> RolloutValue:
    refuse_unknown("rollout-value", options, "rollouts, temperature, max_tokens, oracle, delimiter, seed")
    return RolloutValue(
        runner, int(rollouts), float(temperature), int(max_tokens), as_bool(oracle), delimiter, int(seed)
    )
