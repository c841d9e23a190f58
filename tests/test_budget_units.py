"""Budgets in samples, generated tokens or FLOPs: how a level becomes samples k on one problem."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tsbench.errors import UserError
from tsbench.generation import search_budgets
from tsbench.ledger import Spend
from tsbench.report import table
from tsbench.run import pool_size
from tsbench.scoring import affordable, pool_levels
from tsbench.spec import DEFAULT_POOL_SIZE, build_spec
from tsbench.strategies.beam_search import BeamSearch
from tsbench.strategies.greedy import Greedy
from tsbench.strategies.majority import Majority


def test_affordable_is_the_most_samples_that_fit_and_zero_when_none_does() -> None:
    cost = lambda k: 100.0 * k  # noqa: E731
    assert affordable(450, cost, most=16) == 4
    assert affordable(400, cost, most=16) == 4
    assert affordable(99, cost, most=16) == 0
    assert affordable(10_000, cost, most=16) == 16  # capped by the pool


def spend(per_sample: float, prompt: float = 0.0) -> Callable[[int, bool], Spend]:
    """A pool whose samples cost `per_sample` tokens each (half of it verifier when scored)."""
    return lambda k, scored: Spend(  # noqa: E731
        samples=k,
        prompt_tokens=prompt,
        generated_tokens=per_sample / 2 * k,
        verifier_tokens=per_sample / 2 * k if scored else 0.0,
        flops=1e10 * per_sample * k,
    )


def test_token_levels_bound_the_total_and_fall_back_below_one_sample() -> None:
    spec = build_spec({"budget_unit": "tokens", "budgets": "100,250,1000"}, "test")
    # prompt 20 + 120 per sample: 100 affords none, 250 one, 1000 eight.
    assert pool_levels(spec, Majority(), spend(120, 20), most=16) == [
        (100, 1, True),
        (250, 1, False),
        (1000, 8, False),
    ]
    assert pool_levels(spec, Greedy(), spend(120, 20), most=1) == [
        (100, 1, True),
        (250, 1, False),
        (1000, 1, False),
    ]


def test_flop_levels_count_verifier_flops_too() -> None:
    spec = build_spec({"budget_unit": "flops", "budgets": "1e12"}, "test")
    assert pool_levels(spec, Majority(), spend(20), most=16) == [(1_000_000_000_000, 5, False)]
    assert pool_levels(spec, Majority(), spend(40), most=16) == [(1_000_000_000_000, 2, False)]


def test_sample_levels_are_k_and_the_pool_is_sized_by_unit() -> None:
    samples = build_spec({"budgets": "1,4,16"}, "test")
    assert pool_levels(samples, Majority(), spend(1), most=16) == [
        (1, 1, False),
        (4, 4, False),
        (16, 16, False),
    ]
    assert pool_size(samples) == 16
    assert pool_size(build_spec({"budget_unit": "tokens", "budgets": "500"}, "test")) == DEFAULT_POOL_SIZE
    assert pool_size(build_spec({"budget_unit": "tokens", "budgets": "500", "pool_size": 8}, "t")) == 8


def test_search_budgets_do_not_depend_on_other_arms() -> None:
    spec = build_spec({"budget_unit": "tokens", "budgets": "600,2400", "max_tokens": 100}, "test")
    found = search_budgets(spec, BeamSearch(beam_width=2), prompt_tokens=50, parameters=10)
    assert [(level, b.samples, b.tokens, b.policy_only) for level, b in found] == [
        (600, 4, 600.0, False),
        (2400, 16, 2400.0, False),
    ]
    samples = build_spec({"budgets": "1,4,8", "max_tokens": 100}, "test")
    found = search_budgets(samples, BeamSearch(beam_width=4), prompt_tokens=50, parameters=10)
    assert [(level, b.samples, b.tokens, b.policy_only) for level, b in found] == [
        (4, 4, 600.0, True),
        (8, 8, 1200.0, True),
    ]


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


def row(**values: object) -> dict[str, object]:
    base = {
        "strategy": "majority",
        "k": 1000,
        "oracle": False,
        "problems": 4,
        "accuracy": 0.5,
        "ci95": [0.2, 0.8],
        "width_per_problem": 7.5,
        "fallbacks": 0,
        "tokens_per_problem": 990.0,
        "generated_tokens_per_problem": 980.0,
        "verifier_tokens_per_problem": 0.0,
        "flops_per_problem": 3e11,
        "within_budget": True,
    }
    return {**base, **values}


def test_table_labels_the_budget_axis_and_says_when_compute_is_matched() -> None:
    text = table({"rows": [row()], "budget_unit": "tokens"}, None)
    assert "tokens <=" in text and "N/k per prob" in text and "7.5" in text
    assert text.startswith("matched compute: every row's mean prompt + generated + verifier tokens")
    over = table({"rows": [row(), row(k=500, within_budget=False)], "budget_unit": "tokens"}, None)
    assert over.startswith("NOT matched compute: mean spend over its level in majority@500")
    uneven = table({"rows": [row(), row(k=500, problems=3)], "budget_unit": "tokens"}, None)
    assert uneven.startswith("NOT matched compute") and "[3, 4]" in uneven.splitlines()[0]
    samples = table(
        {"rows": [row(k=4, width_per_problem=4, tokens_per_problem=90)], "budget_unit": "samples"}, None
    )
    assert "k " in samples.splitlines()[1] and "not at matched compute" not in samples
    judged = table(
        {"rows": [row(k=4, width_per_problem=4, verifier_tokens_per_problem=9)], "budget_unit": "samples"},
        None,
    )
    assert "not at matched compute" in judged.splitlines()[0]
    unknown = table({"rows": [row(k=4, flops_per_problem=0.0)], "budget_unit": "samples"}, None)
    # strategy, k, accuracy and its interval (3 fields), total, gen, verif, FLOPs
    assert unknown.splitlines()[-1].split()[8] == "-"  # no parameter count: FLOPs unknown, not 0
