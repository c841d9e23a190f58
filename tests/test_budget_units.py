"""Budgets in samples, generated tokens or FLOPs: how a level becomes samples k on one problem."""

from __future__ import annotations

import pytest

from tsbench.errors import UserError
from tsbench.ledger import Spend
from tsbench.report import table
from tsbench.run import _levels, affordable, pool_size
from tsbench.spec import DEFAULT_POOL_SIZE, build_spec
from tsbench.strategies.beam_search import BeamSearch
from tsbench.strategies.greedy import Greedy
from tsbench.strategies.majority import Majority


def test_affordable_is_the_most_samples_that_fit_and_at_least_one() -> None:
    cost = lambda k: 100.0 * k  # noqa: E731
    assert affordable(450, cost, most=16) == 4
    assert affordable(400, cost, most=16) == 4
    assert affordable(99, cost, most=16) == 1  # one sample is the smallest step: it may overshoot
    assert affordable(10_000, cost, most=16) == 16  # capped by the pool


def test_token_levels_map_to_k_per_problem_and_respect_the_strategy() -> None:
    spec = build_spec({"budget_unit": "tokens", "budgets": "250,1000"}, "test")
    spend_at = lambda k: Spend(samples=k, generated_tokens=120.0 * k)  # noqa: E731
    assert _levels(spec, Majority(), spend_at, most=16) == [(250, 2), (1000, 8)]
    assert _levels(spec, Greedy(), spend_at, most=16) == [(250, 1), (1000, 1)]
    # Beam search with M = 4 has no step that fits 250 tokens on this problem.
    assert _levels(spec, BeamSearch(beam_width=4), spend_at, most=16) == [(1000, 8)]


def test_flop_levels_count_verifier_flops_too() -> None:
    spec = build_spec({"budget_unit": "flops", "budgets": "1e11"}, "test")
    policy_only = lambda k: Spend(samples=k, flops=2e10 * k)  # noqa: E731
    with_verifier = lambda k: Spend(samples=k, flops=4e10 * k)  # noqa: E731
    assert _levels(spec, Majority(), policy_only, most=16) == [(100_000_000_000, 5)]
    assert _levels(spec, Majority(), with_verifier, most=16) == [(100_000_000_000, 2)]


def test_sample_levels_are_k_and_the_pool_is_sized_by_unit() -> None:
    samples = build_spec({"budgets": "1,4,16"}, "test")
    assert _levels(samples, Majority(), lambda k: Spend(), most=16) == [(1, 1), (4, 4), (16, 16)]
    assert pool_size(samples) == 16
    assert pool_size(build_spec({"budget_unit": "tokens", "budgets": "500"}, "test")) == DEFAULT_POOL_SIZE
    assert pool_size(build_spec({"budget_unit": "tokens", "budgets": "500", "pool_size": 8}, "t")) == 8


def test_defaults_keep_the_run_id_of_specs_without_budget_units() -> None:
    plain = build_spec({}, "test")
    assert "budget_unit" not in plain.identity() and "pool_size" not in plain.identity()
    assert build_spec({"budget_unit": "tokens", "budgets": "16"}, "t").run_id() != plain.run_id()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"budget_unit": "joules", "budgets": "1"}, "budget_unit 'joules' is unknown"),
        ({"budget_unit": "tokens"}, "needs budgets in tokens"),
        ({"budget_unit": "flops", "budgets": "1e11,lots"}, "'lots' is not a positive FLOP count"),
        ({"budget_unit": "tokens", "budgets": "0"}, "budgets: '0' must be at least 1"),
    ],
)
def test_bad_budget_units_are_user_errors(values: dict[str, str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_spec(values, "spec.yaml")


def test_table_labels_the_budget_axis() -> None:
    row = {
        "strategy": "majority",
        "k": 1000,
        "oracle": False,
        "accuracy": 0.5,
        "ci95": [0.2, 0.8],
        "samples_per_problem": 7.5,
        "generated_tokens_per_problem": 980.0,
        "verifier_tokens_per_problem": 0.0,
        "flops_per_problem": 3e11,
    }
    text = table({"rows": [row], "budget_unit": "tokens"}, None)
    assert "tokens <=" in text and "samples/prob" in text and "7.5" in text
    assert "k " in table({"rows": [row]}, None).splitlines()[0]
