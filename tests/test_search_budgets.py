"""Searches keep within their budget: every round's worst case is checked before it is taken, a late
round may get a shorter step cap, a search that stops with nothing complete finishes its best path
greedily, and one that cannot afford its first round falls back to one greedy solution.

Runs on the doubles of test_search_doubles.py (one token per character), with the real llm-judge
and rollout-value verifiers on scripted runners, so their cost_bound is what the searches use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from test_search_doubles import (
    PARAMETERS,
    PROBLEM,
    TASK,
    ScriptedRunner,
    ScriptedVerifier,
    hashed,
    solve,
)

from tsbench.contracts import PublicTask
from tsbench.ledger import forward_flops
from tsbench.scheduler import estimates
from tsbench.strategies.base import SearchBudget
from tsbench.strategies.beam_search import BeamSearch
from tsbench.strategies.dvts import DVTS
from tsbench.strategies.mcts import MCTS
from tsbench.strategies.particle_filtering import ParticleFiltering
from tsbench.strategies.stepping import StepOptions, Stepper
from tsbench.verifiers.base import BoundVerifier, VerifierSpend
from tsbench.verifiers.llm_judge import LLMJudge
from tsbench.verifiers.rollout_value import RolloutValue

PROMPT = 10 + len("question?")  # the root request's prompt tokens


def uneven_steps(parent: str, index: int, seed: int) -> tuple[str, str]:
    """Steps of 3 to 32 tokens, about a third of which run past a cap of 24; siblings collide
    (seed mod 7); about a fifth end at EOS."""
    name = f"{parent[:6]}.{seed % 7}" if parent else f"s{seed % 7}"
    text = name + "x" * (seed % 26)
    return text, "eos" if hashed(text) < 0.2 else "stop"


SEARCHES: dict[str, Callable[[], Any]] = {
    "beam-search": lambda: BeamSearch(beam_width=2, max_step_tokens=24, max_steps=4),
    "dvts": lambda: DVTS(beam_width=2, max_step_tokens=24, max_steps=4),
    "mcts": lambda: MCTS(expansions=3, max_step_tokens=24, max_steps=4),
    "particle-filtering": lambda: ParticleFiltering(max_step_tokens=24, max_steps=4),
    "mcts-rollout": lambda: MCTS(
        expansions=3, evaluation="rollout", rollout_tokens=16, max_step_tokens=24, max_steps=4
    ),
}
VERIFIERS: dict[str, Callable[[], Any]] = {
    "flat": ScriptedVerifier,
    "llm-judge": lambda: LLMJudge(ScriptedRunner(uneven_steps)),
    "rollout-value": lambda: RolloutValue(ScriptedRunner(uneven_steps), rollouts=2, max_tokens=12),
}
LEVELS = [30, 150, 400, 1200, 4000]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kind", ["tokens", "flops", "policy_only"])
@pytest.mark.parametrize("verifier", VERIFIERS)
@pytest.mark.parametrize("search", SEARCHES)
def test_spend_stays_within_the_budget(search: str, verifier: str, kind: str, level: int) -> None:
    limits: dict[str, Any] = {
        "tokens": {"tokens": level},
        "flops": {"flops": forward_flops(PARAMETERS, level)},
        "policy_only": {"tokens": level, "policy_only": True},
    }[kind]
    attempt = solve(
        SEARCHES[search](), ScriptedRunner(uneven_steps), VERIFIERS[verifier](), 8, seed=level, **limits
    )
    spend = attempt.spend
    used = {"tokens": spend.tokens, "flops": spend.flops, "policy_only": spend.policy_tokens}[kind]
    assert used <= next(iter(limits.values()))
    if level == LEVELS[-1]:
        assert not attempt.fallback


def fixed_steps(parent: str, index: int, seed: int) -> tuple[str, str]:
    """The root's children are "a" and "b"; every later step wants to be long."""
    return ("a" if index == 0 else "b", "stop") if not parent else (f"{parent}-long-step", "stop")


def test_a_late_round_takes_the_largest_step_cap_that_fits() -> None:
    # Round 1, at cap 10: the root's prompt (19) + 2 steps of 3 tokens ("a" + delimiter), and the
    # verifier's 3 per step of each path: 2 x 3. Spent: 19 + 6 + 6 = 31.
    # Round 2, at cap e: 2 prompts of 19 + 3 ("a\n\n"), 2 x e, and 2 paths of 2 steps: 12, so
    # 56 + 2e. With 31 + 56 + 8 = 95 to spend, e = 4: both steps are cut at 4 tokens, complete.
    runner = ScriptedRunner(fixed_steps)
    attempt = solve(BeamSearch(beam_width=1, max_step_tokens=10), runner, ScriptedVerifier(), 2, tokens=95)
    assert [r["step_cap"] for r in attempt.trace["rounds"]] == [10, 4]
    assert [c["steps"] for c in attempt.trace["completed"]] == [["a", "a-lo"], ["b", "b-lo"]]
    assert attempt.spend.tokens == 95 and not attempt.fallback
    # One token less and round 2 gets cap 3.
    fewer = solve(
        BeamSearch(beam_width=1, max_step_tokens=10),
        ScriptedRunner(fixed_steps),
        ScriptedVerifier(),
        2,
        tokens=94,
    )
    assert [r["step_cap"] for r in fewer.trace["rounds"]] == [10, 3] and fewer.spend.tokens <= 94


def test_policy_only_bounds_policy_tokens_and_reports_the_verifier_beside_them() -> None:
    # Round 1's policy tokens are 19 + 6 = 25; round 2's are 44 + 2e: with 83 to spend, e = 7.
    # Counting the verifier's 6 + 12 as well, round 2 would not fit at all.
    def run(policy_only: bool) -> Any:
        search = BeamSearch(beam_width=1, max_step_tokens=10)
        return solve(
            search, ScriptedRunner(fixed_steps), ScriptedVerifier(), 2, tokens=83, policy_only=policy_only
        )

    attempt = run(policy_only=True)
    assert [r["step_cap"] for r in attempt.trace["rounds"]] == [10, 7]
    assert attempt.spend.policy_tokens == 83 and attempt.spend.verifier_tokens == 6 + 12
    assert [r["step_cap"] for r in run(policy_only=False).trace["rounds"]] == [10]


def test_a_search_that_stops_with_nothing_complete_finishes_its_best_path_greedily() -> None:
    # Round 1 spends 31 (as above); round 2 needs 56 + 2 at the least. With 31 + 40 left for the
    # finisher: the best live path "b" (0.9) is continued greedily with a cap of
    # min(max_tokens, 40 - its prompt of 22) = 18.
    runner = ScriptedRunner(fixed_steps)
    verifier = ScriptedVerifier({"a": 0.1, "b": 0.9})
    attempt = solve(BeamSearch(beam_width=1, max_step_tokens=10), runner, verifier, 2, tokens=31 + 40)
    finisher = runner.calls[-1][0]
    assert (finisher.continuation, finisher.temperature, finisher.stop, finisher.max_tokens) == (
        "b\n\n",
        0.0,
        (),
        18,
    )
    assert attempt.text == "b\n\nend-of-b" and attempt.answer == "end-of-b"
    assert attempt.trace["stopped"] == "budget" and attempt.trace["finished"] and not attempt.fallback
    assert attempt.spend.tokens <= 71


@pytest.mark.parametrize("search", SEARCHES)
def test_a_budget_too_small_for_the_first_round_falls_back_to_one_greedy_solution(search: str) -> None:
    runner = ScriptedRunner(fixed_steps, rollout=lambda continuation, seed: "the answer is 42")
    attempt = solve(SEARCHES[search](), runner, ScriptedVerifier(), 8, tokens=PROMPT + 5, max_tokens=64)
    assert attempt.fallback
    [[request]] = runner.calls
    assert (request.continuation, request.temperature, request.max_tokens) == ("", 0.0, 5)
    assert attempt.text == "the a" and attempt.spend.tokens == PROMPT + 5
    # The cap is also the task's cap on a solution; and at least one token, even past the budget.
    assert (
        solve(SEARCHES[search](), runner, ScriptedVerifier(), 8, tokens=300, max_tokens=3).fallback is False
    )
    tiny = ScriptedRunner(fixed_steps)
    assert solve(SEARCHES[search](), tiny, ScriptedVerifier(), 8, tokens=2).fallback
    assert tiny.calls[0][0].max_tokens == 1


def test_the_largest_cap_is_checked_not_only_solved() -> None:
    stepper = Stepper(
        PROBLEM.public(),
        PublicTask(TASK),
        estimates(ScriptedRunner(fixed_steps), BoundVerifier(ScriptedVerifier(), PROBLEM, TASK)),
        SearchBudget(1, tokens=40),
        np.random.default_rng(0),
        StepOptions(),
    )

    def concave(c: int) -> tuple[float, VerifierSpend]:
        return 20 * math.sqrt(c), VerifierSpend()

    # Solved as if affine from c = 0 and c = 10: 6; but 20 sqrt(6) = 49 > 40: the largest that fits is 4.
    assert stepper.largest(concave, 10) == 4
    assert stepper.largest(lambda c: (2.0 * c, VerifierSpend()), 10) == 10
    assert stepper.largest(lambda c: (41.0 + c, VerifierSpend()), 10) == 0
    assert stepper.largest(lambda c: (c, VerifierSpend(tokens=4.0 * c)), 10) == 8


@pytest.mark.parametrize("search", ["beam-search", "dvts"])
def test_a_first_round_too_wide_for_the_budget_narrows_before_it_falls_back(search: str) -> None:
    # With N = 8 the root round's 8 children at a 24-token cap cost far more than 120 tokens; with
    # N = 2 (one beam, or one subtree of M = 2) it fits.
    runner = ScriptedRunner(fixed_steps, rollout=lambda continuation, seed: "the answer is 42")
    attempt = solve(SEARCHES[search](), runner, ScriptedVerifier(), 8, tokens=120, max_tokens=64)
    assert not attempt.fallback and attempt.trace["width"] < 8 and attempt.trace["rounds"]
    assert attempt.spend.tokens <= 120
    wide = solve(SEARCHES[search](), ScriptedRunner(fixed_steps), ScriptedVerifier(), 8, tokens=4000)
    assert wide.trace["width"] == 8
