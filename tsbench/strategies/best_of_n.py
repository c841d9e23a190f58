"""Best-of-N: of k samples, keep the one an outcome verifier scores highest (Cobbe et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tsbench.plugins import strategies

from .base import Sample
from .majority import k_subsets


def scores_of(samples: Sequence[Sample], strategy: str) -> list[float]:
    """The samples' verifier scores; a clear error when the run scored none."""
    scores = [s.score for s in samples]
    if any(score is None for score in scores):
        raise ValueError(
            f"strategy {strategy} needs a verifier score on every sample; run it with a verifier "
            "(e.g. --verifier llm-judge) so each Sample has a score"
        )
    return [float(score) for score in scores if score is not None]


def best(samples: Sequence[Sample]) -> float:
    """Correctness of the top-scored sample; a tie counts as a uniform pick among the tied samples."""
    scores = scores_of(samples, "best-of-n")
    top = max(scores)
    tied = [s for s, score in zip(samples, scores, strict=True) if score == top]
    return sum(s.correct for s in tied) / len(tied)


@strategies.register("best-of-n", "the highest-scored of k samples, by an outcome verifier")
class BestOfN:
    name = "best-of-n"
    pool = "sampled"
    needs_verifier = True  # ranks samples by Sample.score
    oracle = False

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return list(requested)

    def expected_accuracy(self, samples: Sequence[Sample], k: int, rng: np.random.Generator) -> float:
        subsets = k_subsets(len(samples), k, rng)
        return float(np.mean([best([samples[i] for i in subset]) for subset in subsets]))
