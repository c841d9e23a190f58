"""Selection logic of the search and pool strategies, pinned on scripted runs and hand-built trees.

The searches run on the test doubles of test_search_doubles.py (one token per character, a
scripted step per (parent, sample, seed), a fixed score per step), so every number is computable
by hand. One test runs beam search for real on the embedded model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from math import comb
from typing import Any

import numpy as np
import pytest
from test_search_doubles import (
    DELIMITER,
    PARAMETERS,
    ScriptedRunner,
    ScriptedVerifier,
    hashed,
    named_steps,
    solve,
)

from tsbench.contracts import GenerationRequest, GenerationResult, RunnerInfo
from tsbench.ledger import forward_flops
from tsbench.plugins import strategies
from tsbench.scheduler import solve_alone
from tsbench.scoring import expected_accuracy
from tsbench.strategies.base import Sample, SearchBudget
from tsbench.strategies.beam_search import BeamSearch, spread
from tsbench.strategies.best_of_n import BestOfN, best
from tsbench.strategies.dvts import DVTS
from tsbench.strategies.mcts import MCTS, Node, backpropagate, most_visited, select, select_leaves, uct
from tsbench.strategies.particle_filtering import ParticleFiltering
from tsbench.strategies.stepping import Path, top_paths
from tsbench.strategies.weighted_best_of_n import WeightedBestOfN, weighted_vote
from tsbench.verifiers.base import BoundVerifier, Scored, VerifierSpend

# -- best-of-N and weighted best-of-N -------------------------------------------------------------


def sample(i: int, answer: str | None, correct: bool, score: float | None) -> Sample:
    return Sample(i, answer, correct, 10, score=score)


def graded(pick: Any, samples: Sequence[Sample]) -> float:
    """How often a pick over these samples' public views is correct."""
    correct = {s.index: s.correct for s in samples}
    return float(sum(w * correct[i] for i, w in pick([s.public() for s in samples]).items()))


def best_of_n_closed_form(samples: Sequence[Sample], k: int) -> float:
    """Exact expectation by score groups: a group g (size t, c correct, L samples scored below) is
    the top one in C(t + L, k) - C(L, k) of the C(n, k) subsets, and then its pick is correct with
    probability c / t (uniform pick among the tied, hypergeometric count of correct ones)."""
    n = len(samples)
    total = 0.0
    for score in {s.score for s in samples}:
        group = [s for s in samples if s.score == score]
        below = sum(1 for s in samples if s.score is not None and score is not None and s.score < score)
        t, c = len(group), sum(s.correct for s in group)
        total += (c / t) * (comb(t + below, k) - comb(below, k))
    return total / comb(n, k)


def test_best_of_n_expected_accuracy_equals_the_closed_form_over_all_subsets() -> None:
    rng = np.random.default_rng(3)
    pool = [
        sample(i, str(i % 3), bool(c), float(s))
        for i, (c, s) in enumerate(zip(rng.integers(0, 2, 8), rng.integers(0, 4, 8), strict=True))
    ]
    strategy = BestOfN()
    for k in range(1, len(pool) + 1):
        brute = np.mean(
            [graded(best, [pool[i] for i in subset]) for subset in combinations(range(len(pool)), k)]
        )
        estimate = expected_accuracy(strategy, pool, k, np.random.default_rng(0))
        assert estimate == pytest.approx(brute)
        assert estimate == pytest.approx(best_of_n_closed_form(pool, k))


def test_best_of_n_ties_are_a_uniform_pick_among_the_tied_samples() -> None:
    pool = [
        sample(0, "1", True, 0.9),
        sample(1, "2", False, 0.9),
        sample(2, "3", False, 0.9),
        sample(3, "1", True, 0.1),
    ]
    assert graded(best, pool) == pytest.approx(1 / 3)
    assert graded(best, pool[2:]) == 0.0


def test_weighted_best_of_n_sums_scores_per_answer() -> None:
    # "7": 0.3 + 0.3 + 0.3 = 0.9 beats "8": 0.8 even though "8" holds the single best sample.
    pool = [
        sample(0, "7", True, 0.3),
        sample(1, "8", False, 0.8),
        sample(2, "7", True, 0.3),
        sample(3, "7", True, 0.3),
        sample(4, None, False, 0.99),  # no answer: no vote, whatever its score
    ]
    assert graded(weighted_vote, pool) == 1.0
    assert (
        expected_accuracy(BestOfN(), pool, 5, np.random.default_rng(0)) == 0.0
    )  # plain best-of-N takes the 0.99
    # A tie of sums (0.3 + 0.3 + 0.3 versus 0.9) counts as a uniform pick of the two answers.
    tied = [*pool[:1], sample(1, "8", False, 0.9), *pool[2:4]]
    assert graded(weighted_vote, tied) == pytest.approx(0.5)
    # Over all 2-subsets of the first four samples, by hand: the pairs {7,7} (3 of them) win,
    # {7, 8} (3 of them) lose: 0.5.
    assert expected_accuracy(WeightedBestOfN(), pool[:4], 2, np.random.default_rng(0)) == pytest.approx(0.5)


@pytest.mark.parametrize("strategy", [BestOfN(), WeightedBestOfN()])
def test_scores_missing_is_a_clear_error(strategy) -> None:  # type: ignore[no-untyped-def]
    pool = [sample(0, "1", True, None), sample(1, "2", False, 0.5)]
    with pytest.raises(ValueError, match="needs a verifier score"):
        expected_accuracy(strategy, pool, 2, np.random.default_rng(0))


def test_strategies_are_registered_with_their_pools() -> None:
    for name, pool in [
        ("best-of-n", "sampled"),
        ("weighted-best-of-n", "sampled"),
        ("beam-search", "search"),
        ("dvts", "search"),
        ("mcts", "search"),
    ]:
        assert strategies.get(name)().pool == pool


# -- beam search -----------------------------------------------------------------------------------

SCORES = {"s0": 0.1, "s1": 0.9, "s2": 0.5, "s3": 0.7, "s1.0": 0.2, "s1.1": 0.8, "s3.0": 0.6, "s3.1": 0.95}


def test_beam_search_keeps_n_over_m_beams_and_expands_each_m_times() -> None:
    runner, verifier = ScriptedRunner(named_steps(depth_done=2)), ScriptedVerifier(SCORES)
    attempt = solve(BeamSearch(beam_width=2), runner, verifier, samples=4)

    first, second = attempt.trace["rounds"]
    assert [c["steps"] for c in first["children"]] == [["s0"], ["s1"], ["s2"], ["s3"]]
    assert [k["steps"] for k in first["kept"]] == [["s1"], ["s3"]]  # N/M = 2 best of 0.1, 0.9, 0.5, 0.7
    # Round 1: the root alone, N = 4 samples. Round 2: each of the 2 beams M = 2 times, each
    # continuing its own text, stopping at the delimiter.
    assert [(r.continuation, r.n, r.stop) for r in runner.calls[0]] == [("", 4, (DELIMITER,))]
    assert [(r.continuation, r.n) for r in runner.calls[1]] == [("s1\n\n", 2), ("s3\n\n", 2)]
    # Depth-2 steps end at EOS: four distinct solutions >= N/M; the best by last-step score wins.
    assert [c["steps"][-1] for c in second["completed"]] == ["s1.0", "s1.1", "s3.0", "s3.1"]
    assert attempt.trace["stopped"] == "solutions"
    assert attempt.answer == "s3.1" and attempt.text == "s3\n\ns3.1"
    assert attempt.trace["chosen"]["scores"] == [0.7, 0.95]


def test_beam_search_aggregate_min_changes_the_pick() -> None:
    attempt = solve(
        BeamSearch(beam_width=2, aggregate="min"), ScriptedRunner(named_steps(2)), ScriptedVerifier(SCORES), 4
    )
    assert attempt.answer == "s1.1"  # min(0.9, 0.8) = 0.8 beats min(0.7, 0.95) = 0.7


def test_kept_beams_fill_n_candidates_as_search_and_learn_duplicates_them() -> None:
    assert spread(1, 16) == [16]
    assert spread(4, 16) == [4, 4, 4, 4]
    assert spread(3, 16) == [6, 5, 5]  # (beams * 6)[:16]: the best beam takes the extra one
    assert spread(2, 4) == [2, 2]


def test_top_paths_keeps_order_among_equal_scores() -> None:
    paths = [Path(["a"], [0.5]), Path(["b"], [0.7]), Path(["c"], [0.5]), Path(["d"], [0.1])]
    assert [p.steps for p in top_paths(paths, 3, "last")] == [["b"], ["a"], ["c"]]


def test_an_empty_step_at_eos_completes_its_parent() -> None:
    def step(parent: str, index: int, seed: int) -> tuple[str, str]:
        return ("", "eos") if parent else (f"s{index}", "stop")

    attempt = solve(BeamSearch(beam_width=1), ScriptedRunner(step), ScriptedVerifier({"s0": 0.4}), samples=1)
    assert attempt.answer == "s0"
    assert attempt.trace["completed"] == [{"steps": ["s0"], "scores": [0.4], "done": True}]


def test_a_step_cut_by_its_cap_completes_the_solution() -> None:
    def step(parent: str, index: int, seed: int) -> tuple[str, str]:
        return (f"{parent}.long-step", "stop") if parent else ("s0", "stop")

    runner = ScriptedRunner(step)
    attempt = solve(BeamSearch(beam_width=1, max_step_tokens=8), runner, ScriptedVerifier(), samples=1)
    assert [c.stop_reason for results in runner.results for r in results for c in r.completions] == [
        "stop",
        "length",
    ]
    assert attempt.trace["completed"][0]["steps"] == ["s0", "s0.long-"]  # cut at 8 tokens, then complete


def test_search_budgets_are_those_at_least_the_beam_width() -> None:
    assert BeamSearch(beam_width=4).budgets([1, 2, 4, 8, 16]) == [4, 8, 16]
    assert DVTS(beam_width=4).budgets([2, 4, 8]) == [4, 8]
    assert MCTS().budgets([1, 2, 4]) == [1, 2, 4]


# -- one beam finishing early (the issue: searches ended early) ------------------------------------


def early_finish(parent: str, index: int, seed: int) -> tuple[str, str]:
    """The root's first child ends the solution at once; later steps repeat in pairs (index % 2),
    so siblings collide; steps at depth 3 end at EOS."""
    if not parent:
        return f"s{index}", "eos" if index == 0 else "stop"
    name = f"{parent}.{index % 2}"
    return name, "eos" if name.count(".") >= 2 else "stop"


def finished_prefixes(runner: ScriptedRunner) -> list[set[str]]:
    """For each generate call, the continuations of every path completed before it, read from the
    runner's own log: a finished sample's continuation plus its step (or alone, for an empty step)."""
    finished: set[str] = set()
    before = []
    for call, results in zip(runner.calls, runner.results, strict=True):
        before.append(set(finished))
        for request, result in zip(call, results, strict=True):
            for c in result.completions:
                if request.stop and (c.stop_reason != "stop" or not c.text.strip()):
                    step = c.text.strip("\n")
                    finished.add(request.continuation + (step + DELIMITER if step.strip() else ""))
    return before


def assert_never_extends_a_finished_path(runner: ScriptedRunner, max_steps: int) -> None:
    for call, finished in zip(runner.calls, finished_prefixes(runner), strict=True):
        for request in call:
            assert request.continuation not in finished, request.continuation
            assert request.continuation.count(DELIMITER) < max_steps


def test_beam_search_goes_on_after_a_beam_finishes_until_n_over_m_distinct_solutions() -> None:
    verifier = ScriptedVerifier({"s0": 0.99})  # the finished beam is the best-scored candidate
    runner = ScriptedRunner(early_finish)
    attempt = solve(BeamSearch(beam_width=4), runner, verifier, samples=16)
    rounds = attempt.trace["rounds"]
    assert [c["steps"] for c in rounds[0]["completed"]] == [["s0"]]
    assert len(rounds) == 3 and attempt.trace["stopped"] == "solutions"
    completed = [tuple(c["steps"]) for c in attempt.trace["completed"]]
    assert len(completed) >= 4 and len(set(completed)) == len(completed)
    for r in rounds:  # each round's candidates are distinct; siblings that collided were merged
        keys = [tuple(c["steps"]) for c in r["children"]]
        assert len(set(keys)) == len(keys)
    # Round 2 expands the 4 kept live beams 4 times each: N = 16 samples, 8 distinct candidates.
    assert sum(r.n for r in runner.calls[1]) == 16 and len(rounds[1]["children"]) == 8
    assert_never_extends_a_finished_path(runner, 12)
    assert attempt.answer == "s0"


def test_dvts_goes_on_after_one_subtree_finishes_until_all_have_ended() -> None:
    class FirstSubtreeFinishes(ScriptedRunner):
        def reply(self, request: GenerationRequest, index: int) -> Any:
            completion = super().reply(request, index)
            if len(self.calls) == 1 and request is self.calls[0][0]:
                completion.stop_reason = "eos"
            return completion

    def steps(parent: str, index: int, seed: int) -> tuple[str, str]:
        name = f"{parent}.{seed % 89}" if parent else f"s{seed % 89}"
        return name, "eos" if name.count(".") >= 2 else "stop"

    runner = FirstSubtreeFinishes(steps)
    attempt = solve(DVTS(beam_width=4), runner, ScriptedVerifier(), samples=16)
    rounds = attempt.trace["rounds"]
    assert attempt.trace["subtrees"] == 4 and attempt.trace["stopped"] == "all subtrees ended"
    assert rounds[0]["kept"][0]["done"] and len(rounds) == 3
    assert [len(call) for call in runner.calls] == [4, 3, 3]  # subtree 0 is never extended again
    assert all(r.n == 4 for call in runner.calls for r in call)
    assert all(leaf["done"] for leaf in attempt.trace["leaves"])
    assert_never_extends_a_finished_path(runner, 12)


def test_dvts_keeps_each_subtree_s_best_child_and_merges_equal_subtrees() -> None:
    def steps(parent: str, index: int, seed: int) -> tuple[str, str]:
        name = f"{parent}.{seed % 97}" if parent else ("same" if index == 0 else f"s{seed % 97}")
        return name, "eos" if name.count(".") >= 2 else "stop"

    runner = ScriptedRunner(steps)
    attempt = solve(DVTS(beam_width=4), runner, ScriptedVerifier({"same": 0.999}), samples=8)
    first = attempt.trace["rounds"][0]
    # Both subtrees keep "same": the second is merged into the first and not extended again.
    assert [(k["steps"], k["merged_into"]) for k in first["kept"]] == [(["same"], None), (["same"], 0)]
    assert attempt.trace["merged"] == {1: 0}
    assert [len(call) for call in runner.calls] == [2, 1, 1]
    for r in attempt.trace["rounds"]:
        for group, kept in zip(r["children"], r["kept"], strict=True):
            assert kept["steps"] == max(group, key=lambda c: c["scores"][-1])["steps"]
    assert attempt.spend.samples == 8 + 4 + 4


# -- MCTS -----------------------------------------------------------------------------------------


def node(
    visits: int, value_sum: float, *children: Node, steps: tuple[str, ...] = (), done: bool = False
) -> Node:
    return Node(Path(list(steps), [0.0] * len(steps), done), list(children), visits, value_sum)


def test_uct_values_and_selection_on_a_hand_built_tree() -> None:
    a, b, c = node(2, 1.0, steps=("a",)), node(1, 0.9, steps=("b",)), node(0, 0.0, steps=("c",))
    root = node(3, 1.9, a, b)
    # Q + c * sqrt(ln N_parent / N_child), by hand: ln 3 = 1.098612
    assert uct(a, 3, 1.0) == pytest.approx(0.5 + math.sqrt(1.098612 / 2), abs=1e-6)  # 1.241153
    assert uct(b, 3, 1.0) == pytest.approx(0.9 + 1.048147, abs=1e-6)
    assert uct(a, 3, 0.0) == pytest.approx(0.5)
    assert uct(c, 3, 1.0) == math.inf
    assert select(root, 1.0)[-1] is b  # 1.948 > 1.241
    assert select(root, 0.1)[-1] is b  # exploitation alone: 0.9 > 0.5
    root.children.append(c)
    assert select(root, 1.0)[-1] is c  # an unvisited child goes first

    backpropagate([root, b], [0.3, 0.6])
    assert (root.visits, root.value_sum, b.visits) == (5, pytest.approx(2.8), 3)
    assert b.value == pytest.approx((0.9 + 0.3 + 0.6) / 3)
    assert most_visited(root)[1] is b  # 3 visits against a's 2


def test_mcts_visits_and_backed_up_values_match_hand_computation() -> None:
    scores = {"s0": 0.2, "s1": 0.6, "s1.0": 0.9, "s1.1": 0.3, "s0.0": 0.4, "s0.1": 0.1}
    runner, verifier = ScriptedRunner(named_steps(depth_done=2)), ScriptedVerifier(scores)
    attempt = solve(MCTS(exploration=1.0, expansions=2), runner, verifier, samples=4)
    # By hand:
    # 1. root expands: s0 (0.2), s1 (0.6); root visits 2.
    # 2. UCT s0 = 0.2 + sqrt(ln 2 / 1) = 1.0326, s1 = 0.6 + 0.8326 = 1.4326 -> s1 expands:
    #    s1.0 (0.9), s1.1 (0.3), both complete; s1: visits 3, value (0.6 + 0.9 + 0.3) / 3 = 0.6.
    # 3. UCT s0 = 0.2 + sqrt(ln 4 / 1) = 1.3774, s1 = 0.6 + sqrt(ln 4 / 3) = 1.2798 -> s0 expands:
    #    s0.0 (0.4), s0.1 (0.1); s0: visits 3, value 0.7 / 3. Four distinct solutions: stop.
    tree = attempt.trace["tree"]
    assert attempt.trace["iterations"] == 3 and attempt.trace["stopped"] == "solutions"
    assert [r.continuation for call in runner.calls for r in call] == ["", "s1\n\n", "s0\n\n"]
    assert tree["visits"] == 6 and tree["value"] == pytest.approx(2.5 / 6, abs=1e-6)
    s0, s1 = tree["children"]
    assert (s0["text"], s0["visits"], s0["value"]) == ("s0", 3, pytest.approx(0.7 / 3, abs=1e-6))
    assert (s1["text"], s1["visits"], s1["value"]) == ("s1", 3, pytest.approx(0.6, abs=1e-6))
    assert [(c["text"], c["visits"], c["value"], c["done"]) for c in s1["children"]] == [
        ("s1.0", 1, 0.9, True),
        ("s1.1", 1, 0.3, True),
    ]
    assert attempt.answer == "s1.0"  # the best complete leaf by value
    assert attempt.trace["complete"] == 4


def test_virtual_loss_steers_parallel_walks_to_distinct_leaves_and_is_removed() -> None:
    a, b = node(2, 1.0, steps=("a",)), node(1, 0.9, steps=("b",))
    done = node(1, 0.7, steps=("d",), done=True)
    root = node(4, 2.6, a, b, done)
    # Walk 1: b (0.9 + sqrt(ln 4 / 1) = 2.077) over d (0.7 + 1.177) and a (0.5 + 0.833).
    # Virtual loss on b (2 visits, value 0.45) and root (5): a 0.5 + 0.897, b 0.45 + 0.897,
    # d 0.7 + 1.269 = 1.969 -> d is complete: re-valued by its score 0 (root 6, d 2 visits, 0.35).
    # Walk 3: a 0.5 + 0.947 = 1.447 over b 1.397 and d 1.297 -> a (virtual: a 3, root 7).
    # Walk 4: b 0.45 + 0.986 = 1.436 over d 1.336 and a 1.139 -> b, already picked: stop.
    walks, revalued = select_leaves(root, 1.0, most=4)
    assert [walk[-1] for walk in walks] == [b, a] and revalued == 1
    assert (a.visits, b.visits, done.visits, root.visits) == (2, 1, 2, 5)  # virtual visits removed
    assert root.value_sum == pytest.approx(2.6)


def test_mcts_one_leaf_per_round_is_sequential_mcts() -> None:
    scores = {"s0": 0.2, "s1": 0.6, "s1.0": 0.9, "s1.1": 0.3, "s0.0": 0.4, "s0.1": 0.1}
    runner, verifier = ScriptedRunner(named_steps(depth_done=2)), ScriptedVerifier(scores)
    attempt = solve(MCTS(expansions=2, parallel_leaves=1), runner, verifier, samples=4)
    assert [[r.continuation for r in call] for call in runner.calls] == [[""], ["s1\n\n"], ["s0\n\n"]]
    parallel = ScriptedRunner(named_steps(depth_done=2))
    again = solve(MCTS(expansions=2, parallel_leaves=4), parallel, ScriptedVerifier(scores), samples=4)
    # By hand (the test above): after the root, virtual loss sends the second walk to s0, so both
    # expansions go in one call, and the tree is the same.
    assert [[r.continuation for r in call] for call in parallel.calls] == [[""], ["s1\n\n", "s0\n\n"]]
    assert again.trace["tree"] == attempt.trace["tree"] and again.answer == attempt.answer


def test_mcts_answers_from_the_best_finished_leaf_not_an_unfinished_most_visited_one() -> None:
    def steps(parent: str, index: int, seed: int) -> tuple[str, str]:
        if not parent:
            return ("a", "stop") if index == 0 else ("b", "eos")
        return f"{parent}.{index}", "stop"

    verifier = ScriptedVerifier({"a": 0.9, "b": 0.2, "a.0": 0.8, "a.1": 0.7})
    attempt = solve(MCTS(expansions=2, max_iterations=2), ScriptedRunner(steps), verifier, samples=8)
    # Iteration 2 expands a (UCT 0.9 + 0.83 against 0.2 + 0.83): a has 3 visits, b 1, and the
    # most visited path ends at a.0, unfinished. The one finished leaf is b.
    assert [c["visits"] for c in attempt.trace["tree"]["children"]] == [3, 1]
    assert attempt.answer == "b" and attempt.trace["chosen"]["steps"] == ["b"]


def test_mcts_with_no_finished_leaf_finishes_the_most_visited_path_greedily() -> None:
    runner = ScriptedRunner(
        lambda parent, index, seed: (f"{parent}.{index}" if parent else f"s{index}", "stop")
    )
    verifier = ScriptedVerifier({"s0": 0.1, "s1": 0.9})
    attempt = solve(MCTS(expansions=2, max_iterations=1), runner, verifier, samples=4, max_tokens=40)
    greedy = runner.calls[-1][0]
    assert (greedy.temperature, greedy.stop, greedy.continuation) == (0.0, (), "s1\n\n")
    assert attempt.text == "s1\n\nend-of-s1" and attempt.trace["finished"]


def test_mcts_dedupes_children_and_stops_at_n_distinct_solutions() -> None:
    def steps(parent: str, index: int, seed: int) -> tuple[str, str]:
        if not parent:
            return f"s{index % 3}", "eos" if index % 3 == 0 else "stop"
        return f"{parent}.{index % 2}", "eos"

    runner = ScriptedRunner(steps)
    attempt = solve(MCTS(expansions=4), runner, ScriptedVerifier({"s1.0": 0.9}), samples=4)
    tree = attempt.trace["tree"]
    assert [c["text"] for c in tree["children"]] == ["s0", "s1", "s2"]  # four samples, three distinct
    # s0 is complete at once; s1 and s2 each add two distinct solutions: 5 >= 4 after two more.
    assert attempt.trace["complete"] == 5 and attempt.trace["stopped"] == "solutions"
    assert [len(c["children"]) for c in tree["children"]] == [0, 2, 2]
    assert_never_extends_a_finished_path(runner, 12)
    assert attempt.answer == "s1.0"


def test_mcts_rollout_evaluation_values_a_child_by_its_rollout_as_one_final_step() -> None:
    def steps(parent: str, index: int, seed: int) -> tuple[str, str]:
        return (f"s{index}", "stop") if not parent else ("never", "stop")

    runner = ScriptedRunner(steps, rollout=lambda continuation, seed: f"r-{continuation.strip()}\n\nend")
    verifier = ScriptedVerifier({"s0": 0.5, "s1": 0.5, "r-s0\n\nend": 0.1, "r-s1\n\nend": 0.8})
    attempt = solve(MCTS(expansions=2, evaluation="rollout", max_iterations=1), runner, verifier, samples=4)
    s0, s1 = attempt.trace["tree"]["children"]
    assert (s0["value"], s1["value"]) == (0.1, 0.8)
    rollouts = runner.calls[1]
    assert [(r.continuation, r.stop, r.n) for r in rollouts] == [("s0\n\n", (), 1), ("s1\n\n", (), 1)]
    # Steps: 2 x ("sK" + delimiter); rollouts: 2 x ("r-sK\n\nend" + EOS); the finisher's greedy
    # continuation of the most visited path: s1's rollout text again + EOS.
    assert attempt.spend.generated_tokens == 2 * 4 + 2 * 10 + 10
    assert attempt.answer == "end"


# -- the ledger ------------------------------------------------------------------------------------


def random_steps(parent: str, index: int, seed: int) -> tuple[str, str]:
    """Steps named by seed (mod 7, so siblings collide), of varying length, ending at EOS about a
    third of the time."""
    name = f"{parent}.{seed % 7}" if parent else f"s{seed % 7}"
    text = name + "x" * (seed % 5)
    return text, "eos" if hashed(text) < 0.33 else "stop"


SEARCHES = {
    "beam-search": lambda: BeamSearch(beam_width=2, max_steps=4),
    "dvts": lambda: DVTS(beam_width=2, max_steps=4),
    "mcts": lambda: MCTS(expansions=3, max_steps=4),
    "mcts-rollout": lambda: MCTS(expansions=3, evaluation="rollout", rollout_tokens=16, max_steps=4),
    "particle-filtering": lambda: ParticleFiltering(max_steps=4),
}


class Counting(ScriptedVerifier):
    """ScriptedVerifier that adds up what it spent (in a list its per-search copies share)."""

    def __init__(self) -> None:
        super().__init__()
        self.spends: list[VerifierSpend] = []

    @property
    def spent(self) -> VerifierSpend:
        return sum(self.spends, VerifierSpend())

    def score_steps(self, problem: object, task: object, steps: Sequence[Sequence[str]]) -> list[Scored]:
        scored = super().score_steps(problem, task, steps)
        self.spends += [s.spend for s in scored]
        return scored


@pytest.mark.parametrize("search", SEARCHES)
def test_the_ledger_is_canonical_and_no_finished_path_is_extended(search: str) -> None:
    runner, verifier = ScriptedRunner(random_steps), Counting()
    attempt = solve(SEARCHES[search](), runner, verifier, samples=8, seed=3)
    spend = attempt.spend
    results = [r for call in runner.results for r in call]
    # A request's prompt is charged once, as counted (the double's cache "computed" half of it).
    assert spend.prompt_tokens == sum(r.prompt_tokens for r in results)
    assert spend.generated_tokens == sum(c.tokens for r in results for c in r.completions)
    assert spend.samples == sum(len(r.completions) for r in results)
    assert (spend.verifier_tokens, spend.flops) == (
        verifier.spent.tokens,
        pytest.approx(forward_flops(PARAMETERS, spend.policy_tokens) + verifier.spent.flops),
    )
    assert_never_extends_a_finished_path(runner, 4)


def test_each_search_starts_its_verifier_afresh() -> None:
    # A memoising verifier would otherwise let a second search of the same problem score for free:
    # each search gets its own copy of a verifier that can reset, reset; the one built is untouched.
    verifier = ScriptedVerifier()
    spends = [
        solve(strategy, ScriptedRunner(named_steps(2)), verifier, samples=4).spend
        for strategy in (BeamSearch(beam_width=2), BeamSearch(beam_width=2), DVTS(beam_width=2), MCTS())
    ]
    assert verifier.resets == 0
    assert spends[0] == spends[1]


# -- the real model ------------------------------------------------------------------------------


class Recording:
    """Passes requests to a real runner and keeps them, to check what a search sent."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.requests: list[GenerationRequest] = []

    def info(self) -> RunnerInfo:
        return self.runner.info()  # type: ignore[no-any-return]

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return self.runner.count_prompt_tokens(request)  # type: ignore[no-any-return]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.requests += requests
        return self.runner.generate(requests)  # type: ignore[no-any-return]

    def close(self) -> None:
        pass


@pytest.mark.slow
def test_beam_search_on_the_embedded_model_with_llm_judge(llamacpp_runner: Any) -> None:
    from tsbench.contracts import PublicTask
    from tsbench.plugins import tasks, verifiers

    task = tasks.get("arith")(levels="1")
    problem = task.load(1, 0, None)[0]
    policy = Recording(llamacpp_runner)
    judge = BoundVerifier(verifiers.get("llm-judge")(llamacpp_runner), problem, task)
    strategy = BeamSearch(beam_width=2, max_step_tokens=32, max_steps=2)
    budget = SearchBudget(4, tokens=2000, max_tokens=64)
    attempt = solve_alone(
        strategy, problem.public(), PublicTask(task), policy, judge, budget, np.random.default_rng(0)
    )
    spend, trace = attempt.spend, attempt.trace
    rounds = trace["rounds"]
    assert 1 <= len(rounds) <= 2 and not attempt.fallback
    assert all(0.0 <= s <= 1.0 for r in rounds for c in r["children"] for s in c["scores"])
    step_requests = [r for r in policy.requests if r.stop]
    assert step_requests[0].n == 4 and step_requests[0].continuation == ""  # the root's N samples
    assert all(r.stop == ("\n\n",) and r.max_tokens <= 32 for r in step_requests)
    # Each later request continues one kept beam.
    kept = {"".join(s + "\n\n" for s in k["steps"]) for k in rounds[0]["kept"]}
    assert all(r.continuation in kept for r in step_requests[1:])
    assert spend.tokens <= budget.tokens and spend.verifier_tokens > 0
    # Policy and judge are one model: FLOPs are 2 x P x every token either evaluated.
    parameters = llamacpp_runner.info().parameters
    assert spend.flops == pytest.approx(forward_flops(parameters, spend.tokens))
    assert attempt.answer == task.extract(attempt.text)
