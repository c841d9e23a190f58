"""Small estimators: confidence intervals, order statistics, percentiles."""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054


def wilson_interval(mean: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for a mean of n per-problem scores in [0, 1].

    Per-problem scores may be fractional (expected accuracy over k-subsets); the Wilson form
    still gives an honest non-degenerate interval at 0% and 100%, unlike mean +/- 1.96 se.
    """
    if n == 0:
        return (0.0, 1.0)
    denom = 1 + z * z / n
    centre = (mean + z * z / (2 * n)) / denom
    half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def expected_max_of_subset(values: Sequence[float], k: int) -> float:
    """E[max of a uniformly random k-subset of `values`], exactly (order statistics)."""
    ordered = sorted(values)
    n = len(ordered)
    total = math.comb(n, k)
    return sum(ordered[i] * math.comb(i, k - 1) for i in range(k - 1, n)) / total


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
