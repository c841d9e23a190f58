"""Adaptive-Consistency (Aggarwal et al. 2023, "Let's Sample Step by Step: Adaptive-Consistency
for Efficient Reasoning and Coding with LLMs"): majority vote that stops sampling once the vote
is decided.

Samples are drawn in batches of `batch` (one request of n = batch each), at most the level's
k = budget.samples in all. After each batch the votes are counted by canonical answer (samples
without an answer cast none) and the paper's Beta stopping rule is applied to the two leading
answers: with v1 and v2 votes, the leader's share p1 of their votes is Beta(v1 + 1, v2 + 1) under
a uniform prior, and sampling stops once P(p1 > 1/2), the chance that the leader stays ahead, is
at least `confidence`. Votes 3 to 0 give 1 - 0.5^4 = 0.9375 (go on at 0.95), 4 to 0 give
1 - 0.5^5 = 0.96875 (stop).

The answer is the majority vote over every sample drawn (majority.py; a tie is a uniform pick,
drawn from the search's rng). The spend holds the samples and tokens actually drawn and
trace["width"] the samples used, so the table shows what stopping early saved against majority@k.

Budget: before each batch the worst case (its prompt + n x the task's cap) is checked; n shrinks
until it fits, and sampling stops when not even one whole sample does. A search that cannot draw
its first sample answers with one greedy solution capped to what is left (stepping.Stepper.fallback).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from scipy.stats import beta

from tsbench.contracts import Completion, GenerationRequest, PublicProblem, PublicTask
from tsbench.plugins import strategies
from tsbench.verifiers.base import VerifierSpend

from .base import Estimates, Search, SearchBudget
from .majority import canonical_of, voted
from .stepping import StepOptions, Stepper


def leader_stays_ahead(leading: int, second: int) -> float:
    """P(p1 > 1/2) for p1 ~ Beta(leading + 1, second + 1): the Beta stopping rule's confidence."""
    return float(beta.sf(0.5, leading + 1, second + 1))


def top_two(answers: Sequence[str | None]) -> tuple[int, int]:
    """The vote counts of the two leading answers (0 where there is no such answer)."""
    counts = sorted(Counter(a for a in answers if a is not None).values(), reverse=True)
    return (counts[0] if counts else 0, counts[1] if len(counts) > 1 else 0)


@strategies.register(
    "adaptive-consistency",
    "majority vote that stops sampling once the vote is decided (Beta rule), at most k",
)
class AdaptiveConsistency:
    """Adaptive-Consistency with the Beta stopping rule (module docstring).

    Args:
        batch: samples drawn between two checks of the stopping rule.
        confidence: stop once the leading answer stays ahead with at least this probability.
        temperature, top_p: sampling of each sample.
    """

    name = "adaptive-consistency"
    pool = "search"
    oracle = False
    needs_verifier = False

    def __init__(
        self, batch: int = 1, confidence: float = 0.95, temperature: float = 0.7, top_p: float = 0.95
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}; set batch to 1 or more")
        if not 0.5 < confidence <= 1:
            # At 0.5 or below the rule would stop before any vote (no votes give exactly 0.5).
            raise ValueError(f"confidence must be above 0.5 and at most 1, got {confidence}; e.g. 0.95")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(
                f"temperature {temperature} / top_p {top_p}: need temperature >= 0, 0 < top_p <= 1"
            )
        self.batch, self.confidence = int(batch), float(confidence)
        self.options = StepOptions(temperature=float(temperature), top_p=float(top_p))

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return list(requested)

    def search(
        self,
        problem: PublicProblem,
        task: PublicTask,
        estimates: Estimates,
        budget: SearchBudget,
        rng: np.random.Generator,
    ) -> Search:
        stepper = Stepper(
            problem, task, estimates, budget, rng, replace(self.options, max_step_tokens=budget.max_tokens)
        )
        drawn: list[Completion] = []
        answers: list[str | None] = []
        checks: list[dict[str, Any]] = []
        stopped = "k samples drawn"
        while len(drawn) < budget.samples:
            request = self.request(stepper, min(self.batch, budget.samples - len(drawn)), budget.max_tokens)
            n = self.fitting(stepper, request)
            if n < 1:
                stopped = "budget: not one more whole sample fits"
                break
            [completions] = yield from stepper.generate([replace(request, n=n, seeds=request.seeds[:n])])
            drawn += completions
            answers += [canonical_of(task, c.text)[1] for c in completions]
            leading, second = top_two(answers)
            confident = leader_stays_ahead(leading, second)
            checks.append(
                {"samples": len(drawn), "top_two": [leading, second], "p_leader": round(confident, 6)}
            )
            if confident >= self.confidence:
                stopped = "confident"
                break
        trace: dict[str, Any] = {
            "width": len(drawn),
            "samples_used": len(drawn),
            "k": budget.samples,
            "checks": checks,
            "votes": dict(Counter(a for a in answers if a is not None)),
            "stopped": stopped,
        }
        if not drawn:  # one greedy solution answers instead
            return (yield from stepper.fallback({**trace, "width": 1}))
        index = voted(answers, [c.tokens for c in drawn], rng)
        text = drawn[0 if index is None else index].text
        return stepper.answer(text, {**trace, "chosen": index})

    def request(self, stepper: Stepper, n: int, cap: int) -> GenerationRequest:
        """n samples of a whole solution, each seeded from the search's rng."""
        return GenerationRequest(
            messages=stepper.messages,
            n=n,
            temperature=self.options.temperature,
            top_p=self.options.top_p,
            max_tokens=cap,
            stop=stepper.task_stop,
            seeds=tuple(int(s) for s in stepper.rng.integers(0, 2**31 - 1, size=n)),
        )

    @staticmethod
    def fitting(stepper: Stepper, request: GenerationRequest) -> int:
        """The most samples (<= request.n) whose worst case fits what is left; 0 when none does."""
        if not stepper.bounded:
            return request.n
        prompt = stepper.count(request)
        n = request.n
        while n >= 1 and not stepper.fits(prompt + n * request.max_tokens, VerifierSpend()):
            n -= 1
        return n
