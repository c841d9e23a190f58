"""Best-of-N: of k samples, keep the one an outcome verifier scores highest (Cobbe et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence

from tsbench.plugins import strategies

from .base import Candidate


def scores_of(candidates: Sequence[Candidate], strategy: str) -> list[float]:
    """The candidates' verifier scores; a clear error when the run scored none."""
    scores = [c.score for c in candidates]
    if any(score is None for score in scores):
        raise ValueError(
            f"strategy {strategy} needs a verifier score on every sample; run it with a verifier "
            "(e.g. --verifier llm-judge) so each sample has a score"
        )
    return [float(score) for score in scores if score is not None]


def best(candidates: Sequence[Candidate]) -> dict[int, float]:
    """The top-scored candidate; a tie counts as a uniform pick among the tied candidates."""
    if not candidates:
        return {}
    scores = scores_of(candidates, "best-of-n")
    top = max(scores)
    tied = [c.index for c, score in zip(candidates, scores, strict=True) if score == top]
    return {index: 1.0 / len(tied) for index in tied}


@strategies.register("best-of-n", "the highest-scored of k samples, by an outcome verifier")
class BestOfN:
    name = "best-of-n"
    pool = "sampled"
    needs_verifier = True  # ranks samples by Candidate.score
    oracle = False

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return list(requested)

    def pick(self, candidates: Sequence[Candidate]) -> dict[int, float]:
        return best(candidates)
