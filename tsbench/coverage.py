"""Coverage (pass@k, oracle) against k, and the power law Brown et al. (2024) fit to it.

The form fitted: coverage(k) = exp(a * k**b), with a < 0 and b < 0 (coverage rises towards 1 as k
grows), fitted as the straight line log(-log coverage) = log(-a) + b * log k by least squares over
the k whose coverage is strictly between 0 and 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import comb
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class PowerLaw:
    """coverage(k) = exp(a * k**b), fitted in log(-log) space; r2 of that linear fit."""

    a: float
    b: float
    r2: float
    points: int

    def __call__(self, k: Any) -> Any:
        return np.exp(self.a * np.power(np.asarray(k, dtype=float), self.b))


def fit_power_law(ks: Sequence[float], coverage: Sequence[float]) -> PowerLaw | None:
    """Fit Brown et al.'s exponentiated power law; None with fewer than two usable points."""
    k = np.asarray(ks, dtype=float)
    c = np.asarray(coverage, dtype=float)
    usable = (c > 0) & (c < 1) & (k > 0)
    if usable.sum() < 2 or len(np.unique(k[usable])) < 2:
        return None
    line = stats.linregress(np.log(k[usable]), np.log(-np.log(c[usable])))
    return PowerLaw(
        a=-float(np.exp(line.intercept)),
        b=float(line.slope),
        r2=float(line.rvalue**2),
        points=int(usable.sum()),
    )


def unbiased_pass_at_k(n: int, correct: int, k: int) -> float:
    """Chen et al. (2021): 1 - C(n-c, k) / C(n, k)."""
    return 1.0 - comb(n - correct, k) / comb(n, k) if n - correct >= k else 1.0


def coverage_curve(grades: Sequence[dict[str, Any]], pool: str = "sampled") -> pd.DataFrame:
    """Mean unbiased pass@k over problems for k = 1 .. the smallest pool size (columns k, coverage,
    problems)."""
    counts: dict[str, list[int]] = {}
    for g in grades:
        if g["pool"] == pool:
            c = counts.setdefault(g["problem_id"], [0, 0])
            c[0] += bool(g["correct"])
            c[1] += 1
    if not counts:
        return pd.DataFrame(columns=["k", "coverage", "problems"])
    most = min(n for _, n in counts.values())
    rows = [
        {
            "k": k,
            "coverage": float(np.mean([unbiased_pass_at_k(n, c, k) for c, n in counts.values()])),
            "problems": len(counts),
        }
        for k in range(1, most + 1)
    ]
    return pd.DataFrame(rows)
