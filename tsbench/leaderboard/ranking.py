"""Ranks that respect the intervals: a row is outranked only by rows significantly better than it.

The rule, shown on the index page as RULE: rank = 1 + the number of rows significantly better
(Chatbot Arena's rule). Rows over the same problems are compared with a paired test; rows over
different problems by their 95% intervals. Oracle rows read the reference and are not ranked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tsbench.paired import compare_scores

ALPHA = 0.05

RULE = (
    "Rank = 1 + the number of rows significantly better than this row (Chatbot Arena's rule), "
    "so rows that are statistically tied share a rank. Row B is significantly better than row A when "
    "both cover the same problems (same task data) and the paired test of tsbench.paired.compare_scores "
    f"(McNemar's exact test for 0/1 scores, a paired permutation test otherwise) gives p < {ALPHA} "
    "with B ahead; rows over different problems are compared by their 95% Wilson intervals "
    "(B is better when its lower bound is above A's upper bound). 'Tied with leader' marks rows the "
    "best row is not significantly better than. Oracle rows (pass@k, oracle verifiers) read the "
    "reference: they are shown but not ranked. There is no correction for multiple comparisons."
)


@dataclass
class Ranked:
    """A row's rank, its tie with the leader, and the test that decided against the leader."""

    rank: int | None
    tied_with_leader: bool | None
    versus_leader: str


@dataclass(frozen=True)
class Entry:
    """What ranking needs of one table row.

    Attributes:
        accuracy: mean score; ci95: its 95% interval.
        oracle: whether the row read the reference.
        data: the task data's identity (rows with equal data and problem ids are paired).
        scores: loads problem id -> score for this row (called only when a paired test is needed).
    """

    accuracy: float
    ci95: tuple[float, float]
    oracle: bool
    data: str
    scores: Callable[[], dict[str, float]]


def _better(b: Entry, a: Entry, cache: dict[int, dict[str, float]], ids: tuple[int, int]) -> tuple[bool, str]:
    """Whether b is significantly better than a, and how that was decided."""
    if b.accuracy <= a.accuracy:
        return False, "not ahead"
    if b.data and b.data == a.data:
        for index, entry in ((ids[0], b), (ids[1], a)):
            if index not in cache:
                cache[index] = entry.scores()
        sb, sa = cache[ids[0]], cache[ids[1]]
        if sa and set(sa) == set(sb):
            result = compare_scores(sa, sb)
            return result.p_value < ALPHA, f"{result.test} p={result.p_value:.3g}"
    better = b.ci95[0] > a.ci95[1]
    return better, "95% intervals " + ("apart" if better else "overlap")


def rank(entries: Sequence[Entry]) -> list[Ranked]:
    """Rank the non-oracle entries of one table; oracle entries get rank None.

    Args:
        entries: the table's rows.

    Returns:
        One Ranked per entry, in the same order.
    """
    cache: dict[int, dict[str, float]] = {}
    ranked_ids = [i for i, e in enumerate(entries) if not e.oracle]
    if not ranked_ids:
        return [Ranked(None, None, "oracle") for _ in entries]
    leader = max(ranked_ids, key=lambda i: entries[i].accuracy)
    out = []
    for i, entry in enumerate(entries):
        if entry.oracle:
            out.append(Ranked(None, None, "oracle: not ranked"))
            continue
        above = sum(_better(entries[j], entry, cache, (j, i))[0] for j in ranked_ids if j != i)
        if i == leader:
            out.append(Ranked(1 + above, True, "leader"))
            continue
        beaten, how = _better(entries[leader], entry, cache, (leader, i))
        out.append(Ranked(1 + above, not beaten, how))
    return out
