"""Paired comparison of two arms on the same problems: is "B beats A" more than noise?

0/1 outcomes get McNemar's exact test (a binomial test on the discordant pairs); fractional
per-problem scores (expected accuracy over k-subsets, pass@k) get a paired sign-flip permutation
test. Both report the difference B - A with a paired bootstrap 95% interval. The distributions come
from scipy, not from hand-written formulas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from tsbench.errors import UserError


@dataclass(frozen=True)
class PairedResult:
    """B - A on the same problems.

    Attributes:
        test: "mcnemar-exact" or "paired-permutation".
        problems: number of paired problems.
        accuracy_a: mean score of A.
        accuracy_b: mean score of B.
        difference: accuracy_b - accuracy_a.
        ci95: paired bootstrap 95% interval of the difference.
        p_value: two-sided p-value of "no difference".
        b_only: problems B got right and A wrong (McNemar's discordant counts; None otherwise).
        a_only: problems A got right and B wrong.
    """

    test: str
    problems: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    ci95: tuple[float, float]
    p_value: float
    b_only: int | None = None
    a_only: int | None = None


def mcnemar_exact(b_only: int, a_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none)."""
    discordant = b_only + a_only
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(b_only, discordant, 0.5, alternative="two-sided").pvalue)


def bootstrap_difference(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of mean(b) - mean(a) with problems resampled in pairs."""
    diffs = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if len(diffs) < 2 or np.all(diffs == diffs[0]):
        value = float(diffs.mean()) if len(diffs) else 0.0
        return (value, value)
    result = stats.bootstrap(
        (diffs,),
        np.mean,
        n_resamples=resamples,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return (float(interval.low), float(interval.high))


def _permutation_p(diffs: np.ndarray, resamples: int, seed: int) -> float:
    if not np.any(diffs):
        return 1.0
    result = stats.permutation_test(
        (diffs,),
        np.mean,
        permutation_type="samples",
        n_resamples=resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def compare_scores(
    a: Mapping[str, float], b: Mapping[str, float], *, resamples: int = 2000, seed: int = 0
) -> PairedResult:
    """Compare two arms' per-problem scores on the problems they share.

    Args:
        a: problem id -> score of arm A, in [0, 1].
        b: problem id -> score of arm B.
        resamples: bootstrap / permutation resamples.
        seed: seed of the resampling, so a report repeats to the byte.

    Returns:
        The paired result; McNemar's exact test when every score is 0 or 1.

    Raises:
        UserError: when the two arms share no problem or cover different problems.
    """
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        which = f"A alone has {only_a[:3]}" if only_a else f"B alone has {only_b[:3]}"
        raise UserError(
            f"paired comparison needs the same problems in both arms: {which}; "
            "compare rows of runs over the same task data"
        )
    if not a:
        raise UserError("paired comparison: the two arms share no problem")
    ids = sorted(a)
    xs = np.array([a[i] for i in ids], dtype=float)
    ys = np.array([b[i] for i in ids], dtype=float)
    low, high = bootstrap_difference(xs, ys, resamples=resamples, seed=seed)
    common: dict[str, Any] = {
        "problems": len(ids),
        "accuracy_a": float(xs.mean()),
        "accuracy_b": float(ys.mean()),
        "difference": float(ys.mean() - xs.mean()),
        "ci95": (low, high),
    }
    if np.all(np.isin(xs, (0.0, 1.0))) and np.all(np.isin(ys, (0.0, 1.0))):
        b_only = int(np.sum((ys == 1) & (xs == 0)))
        a_only = int(np.sum((xs == 1) & (ys == 0)))
        return PairedResult(
            test="mcnemar-exact",
            p_value=mcnemar_exact(b_only, a_only),
            b_only=b_only,
            a_only=a_only,
            **common,
        )
    return PairedResult(test="paired-permutation", p_value=_permutation_p(ys - xs, resamples, seed), **common)
