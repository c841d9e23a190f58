"""The budget-curve estimators against brute force over every k-subset."""

from itertools import combinations
from math import comb

import numpy as np
import pytest

from tsbench.scoring import expected_accuracy, k_subsets
from tsbench.stats import expected_max_of_subset, percentile, wilson_interval
from tsbench.strategies.base import Sample
from tsbench.strategies.majority import Majority
from tsbench.strategies.majority import vote as pick_by_vote
from tsbench.strategies.pass_at_k import PassAtK, pass_at_k


def pool(answers: list[str | None], correct: str) -> list[Sample]:
    return [Sample(i, a, a == correct, 10) for i, a in enumerate(answers)]


def vote(samples: list[Sample]) -> float:
    """Correctness of majority's pick, graded as the harness grades it."""
    weights = pick_by_vote([s.public() for s in samples])
    return sum(w * next(s.correct for s in samples if s.index == i) for i, w in weights.items())


@pytest.mark.parametrize("n,c", [(16, 0), (16, 1), (16, 5), (16, 16), (8, 3), (5, 4)])
def test_pass_at_k_equals_fraction_of_subsets_with_a_correct_sample(n: int, c: int) -> None:
    flags = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(combinations(range(n), k))
        brute = sum(any(flags[i] for i in s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_pass_at_k_is_non_decreasing_in_k() -> None:
    for n in (4, 8, 16):
        for c in range(n + 1):
            values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
            assert all(a <= b + 1e-12 for a, b in zip(values, values[1:], strict=False))


def test_pass_at_k_rejects_k_above_n() -> None:
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_vote_counts_ties_as_a_uniform_pick() -> None:
    assert vote(pool(["3", "3", "4"], "3")) == 1.0
    assert vote(pool(["3", "4"], "3")) == 0.5
    assert vote(pool(["3", "4", "5", None, None], "5")) == pytest.approx(1 / 3)
    assert vote(pool([None, None], "5")) == 0.0


def test_majority_is_exact_mean_over_all_subsets_when_few() -> None:
    samples = pool(["1", "2", "2", "1", "1", "3"], "1")
    rng = np.random.default_rng(0)
    for k in range(1, 7):
        brute = np.mean([vote([samples[i] for i in s]) for s in combinations(range(6), k)])
        assert expected_accuracy(Majority(), samples, k, rng) == pytest.approx(brute)


def test_votes_split_by_canonical_answer_weight_each_sample_of_the_winner() -> None:
    samples = pool(["1/2", "1/2", "1/3", None], "1/2")
    assert pick_by_vote([s.public() for s in samples]) == {0: 0.5, 1: 0.5}


def test_majority_samples_subsets_with_the_given_rng_when_many() -> None:
    assert len(k_subsets(16, 8, np.random.default_rng(0))) == 200 < comb(16, 8)
    a = k_subsets(16, 8, np.random.default_rng(1))
    b = k_subsets(16, 8, np.random.default_rng(1))
    assert a == b and all(len(set(s)) == 8 for s in a)


def test_pass_at_k_bounds_majority_for_every_pool() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        answers = [str(x) for x in rng.integers(0, 4, size=16)]
        samples = pool(answers, "0")
        for k in (1, 2, 4, 8, 16):
            maj = expected_accuracy(Majority(), samples, k, np.random.default_rng(k))
            assert expected_accuracy(PassAtK(), samples, k, rng) >= maj - 1e-9


def test_wilson_interval_is_honest_at_the_edges() -> None:
    low, high = wilson_interval(0.0, 30)
    assert low == 0.0 and 0.1 < high < 0.13
    low, high = wilson_interval(1.0, 30)
    assert 0.87 < low < 0.9 and high == pytest.approx(1.0)
    low, high = wilson_interval(0.5, 100)
    assert low == pytest.approx(0.404, abs=1e-3) and high == pytest.approx(0.596, abs=1e-3)


def test_expected_max_of_subset_matches_brute_force() -> None:
    values = [0.3, 1.2, 0.7, 2.5, 0.1]
    for k in range(1, 6):
        subsets = list(combinations(values, k))
        assert expected_max_of_subset(values, k) == pytest.approx(np.mean([max(s) for s in subsets]))


def test_percentile() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 95) == 5
