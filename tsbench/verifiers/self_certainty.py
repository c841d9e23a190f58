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
    """Outcome verifier: exp(mean logprob) of each solution, from the policy's own logprobs."""

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


@verifiers.register("self-certainty", "exp(mean token logprob) of each sample; no extra model, no spend")
def create(runner: Runner | None = None, **options: Any) -> SelfCertainty:
    refuse_unknown("self-certainty", options, "no options")
    return SelfCertainty()
