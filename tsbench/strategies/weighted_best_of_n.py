"""Weighted best-of-N: each distinct answer (by canonical form) gets the sum of its samples'
verifier scores; the highest sum wins (Li et al. 2023, "weighted majority voting")."""

from __future__ import annotations

from collections.abc import Sequence

from tsbench.plugins import strategies

from .base import Candidate
from .best_of_n import scores_of
from .majority import by_answer, spread


def weighted_vote(candidates: Sequence[Candidate]) -> dict[int, float]:
    """The answer with the largest score sum; ties count as a uniform pick among them.

    Samples without an answer carry no vote, as in majority voting.
    """
    score = dict(zip((c.index for c in candidates), scores_of(candidates, "weighted-best-of-n"), strict=True))
    groups = by_answer(candidates)
    if not groups:
        return {}
    totals = {answer: sum(score[i] for i in members) for answer, members in groups.items()}
    top = max(totals.values())
    # Sums of equal scores can differ in the last bit; such answers are tied.
    return spread(groups, [answer for answer, total in totals.items() if top - total <= 1e-9])


@strategies.register("weighted-best-of-n", "the answer whose samples' verifier scores sum highest")
class WeightedBestOfN:
    name = "weighted-best-of-n"
    pool = "sampled"
    needs_verifier = True  # ranks samples by Candidate.score
    oracle = False

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return list(requested)

    def pick(self, candidates: Sequence[Candidate]) -> dict[int, float]:
        return weighted_vote(candidates)
