"""Self-certainty: how sure the policy was of its own solution, from its token logprobs.

The score is exp(mean token logprob), the geometric-mean probability of the solution's tokens,
which lies in [0, 1] and needs no extra model. (Kang et al. 2025 define self-certainty as the KL
divergence of each next-token distribution from uniform; that needs the full distributions, which
runners do not return, so this is the mean-logprob form of the same idea.)

The verifier contract hands a verifier text only, and text cannot be scored back into the
policy's logprobs through the Runner contract (a request returns logprobs of what it generates,
not of a given continuation). So the caller passes the logprobs the policy already reported when
it sampled the solutions: `score(..., mean_logprobs=[Sample.mean_logprob, ...])`. It costs
nothing beyond the sampling, so its spend is zero.

It is a process verifier too: a step's score is exp(the step's own mean token logprob), which the
search hands over as it sampled the step (`score_steps(..., step_logprobs=...)`): a free process
score, so a search guided by it spends on the policy alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tsbench.contracts import Problem, Runner, Task
from tsbench.plugins import verifiers

from .base import Scored, VerifierSpend, refuse_unknown


def self_certainty(mean_logprob: float) -> float:
    """exp(mean token logprob), in [0, 1]."""
    return math.exp(min(0.0, mean_logprob))


def mean_logprob(logprobs: Sequence[float] | None) -> float | None:
    """Mean of a completion's token logprobs; None when it has none (no tokens or none asked)."""
    return sum(logprobs) / len(logprobs) if logprobs else None


class SelfCertainty:
    """Outcome and process verifier: exp(mean logprob) of each solution or step, from the policy's
    own logprobs."""

    name = "self-certainty"
    oracle = False

    def score(
        self,
        problem: Problem,
        task: Task,
        solutions: Sequence[str],
        *,
        mean_logprobs: Sequence[float | None] | None = None,
    ) -> Scored:
        if mean_logprobs is None or len(mean_logprobs) != len(solutions):
            raise ValueError(
                "self-certainty needs one mean logprob per solution (mean_logprobs=...); "
                "sample the pool with logprobs so each Sample has its mean_logprob"
            )
        # A solution with no tokens has no certainty to report: it scores lowest.
        scores = [0.0 if lp is None else self_certainty(lp) for lp in mean_logprobs]
        return Scored(scores, VerifierSpend())

    def score_steps(
        self,
        problem: Problem,
        task: Task,
        steps: Sequence[Sequence[str]],
        *,
        step_logprobs: Sequence[Sequence[float | None]] | None = None,
    ) -> list[Scored]:
        """For each path, exp(mean logprob) of each of its steps."""
        if step_logprobs is None or [len(p) for p in step_logprobs] != [len(p) for p in steps]:
            raise ValueError(
                "self-certainty scores a step by its own mean logprob (step_logprobs=...), one per "
                "step; step-wise searches hand them over, other callers cannot score steps with it"
            )
        return [
            Scored([0.0 if lp is None else self_certainty(lp) for lp in path], VerifierSpend())
            for path in step_logprobs
        ]

    def cost_bound(
        self, problem: Problem, task: Task, steps: Sequence[Sequence[str]], extra_tokens: int
    ) -> VerifierSpend:
        """Zero: it reads logprobs the policy already reported (CostBounded)."""
        return VerifierSpend()


@verifiers.register(
    "self-certainty", "exp(mean token logprob) of each sample or step; no extra model, no spend"
)
def create(runner: Runner | None = None, **options: Any) -> SelfCertainty:
    refuse_unknown("self-certainty", options, "no options")
    return SelfCertainty()
