"""Selection logic of the verifier-guided strategies, pinned on scripted runs and hand-built trees.

Most tests use test doubles: ScriptedRunner (deterministic step text per (continuation, sample,
seed)) and ScriptedVerifier (a fixed score per step text), so every number is computable by hand.
One test runs beam search for real on the embedded model.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from itertools import combinations
from math import comb
from typing import Any

import numpy as np
import pytest

from tsbench.contracts import (
    Completion,
    GenerationRequest,
    GenerationResult,
    Message,
    Problem,
    RunnerInfo,
)
from tsbench.ledger import forward_flops
from tsbench.plugins import strategies
from tsbench.strategies.base import Sample, SearchBudget
from tsbench.strategies.beam_search import BeamSearch, Path, top_paths
from tsbench.strategies.best_of_n import BestOfN, best
from tsbench.strategies.dvts import DVTS
from tsbench.strategies.mcts import MCTS, Node, backpropagate, most_visited, select, uct
from tsbench.strategies.weighted_best_of_n import WeightedBestOfN, weighted_vote
from tsbench.verifiers.base import Scored, VerifierSpend

PARAMETERS = 1000
DELIMITER = "\n\n"

# -- test doubles ---------------------------------------------------------------------------------

# (last step of the continuation, sample index, seed) -> (step text, finish_reason)
Script = Callable[[str, int, int], tuple[str, str]]


def named_steps(depth_done: int) -> Script:
    """Step names extend the parent's: "" -> "s0", "s1", ...; "s1" -> "s1.0", ... Steps at depth
    `depth_done` end by their token cap ("length"), which completes the solution."""

    def step(parent: str, index: int, seed: int) -> tuple[str, str]:
        name = f"{parent}.{index}" if parent else f"s{index}"
        return name, "length" if name.count(".") + 1 >= depth_done else "stop"

    return step


class ScriptedRunner:
    """TEST DOUBLE for Runner: no model. The text of a sample depends only on (continuation,
    sample index, seed) through `script`; every step costs `step_tokens` tokens and a prompt
    costs 10 tokens plus one per continuation character, so the ledger is computable by hand."""

    def __init__(self, script: Script, step_tokens: int = 5) -> None:
        self.script = script
        self.step_tokens = step_tokens
        self.calls: list[list[GenerationRequest]] = []
        self.produced: list[Completion] = []

    def info(self) -> RunnerInfo:
        return RunnerInfo("scripted", PARAMETERS, "script", "0", "none")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(list(requests))
        results = []
        for request in requests:
            parent = request.continuation.rstrip(DELIMITER).split(DELIMITER)[-1]
            completions = []
            for i in range(request.n):
                text, finish = self.script(parent, i, request.seed_for(i))
                tokens = self.step_tokens if text else 0
                completions.append(Completion(text, tokens, finish, request.seed_for(i)))
            self.produced += completions
            prompt = 10 + len(request.continuation)
            results.append(GenerationResult(completions, prompt, prompt, 0.0))
        return results

    def close(self) -> None:
        pass


class ScriptedVerifier:
    """TEST DOUBLE for a process verifier: each step's score comes from a table (else from a hash
    of its text); each scored step costs 3 verifier tokens."""

    name = "scripted"
    oracle = False

    def __init__(self, table: dict[str, float] | None = None) -> None:
        self.table = table or {}
        self.calls = 0
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def value(self, step: str) -> float:
        return self.table.get(step, zlib.crc32(step.encode()) % 1000 / 1000)

    def score_steps(self, problem: Problem, task: object, steps: Sequence[Sequence[str]]) -> list[Scored]:
        self.calls += 1
        return [
            Scored(
                [self.value(s) for s in path], VerifierSpend(3 * len(path), forward_flops(7, 3 * len(path)))
            )
            for path in steps
        ]


class LastStepTask:
    """TEST DOUBLE for Task: the answer is the name of the last step."""

    name = "scripted"
    description = "scripted"

    def load(self, limit: int | None, seed: int, data_dir: str | None) -> list[Problem]:
        return [PROBLEM]

    def messages(self, problem: Problem) -> list[Message]:
        return [{"role": "user", "content": problem.question}]

    def extract(self, text: str) -> str | None:
        return text.split(DELIMITER)[-1] or None

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return answer == problem.reference


PROBLEM = Problem("p0", "question?", "s1.0")
TASK = LastStepTask()
UNLIMITED = math.inf


def solve(strategy, runner, verifier, samples, tokens=UNLIMITED, seed=0):  # type: ignore[no-untyped-def]
    return strategy.solve(
        PROBLEM, TASK, runner, verifier, SearchBudget(samples, tokens), np.random.default_rng(seed)
    )


# -- best-of-N and weighted best-of-N -------------------------------------------------------------


def sample(i: int, answer: str | None, correct: bool, score: float | None) -> Sample:
    return Sample(i, answer, correct, 10, score=score)


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
        brute = np.mean([best([pool[i] for i in subset]) for subset in combinations(range(len(pool)), k)])
        estimate = strategy.expected_accuracy(pool, k, np.random.default_rng(0))
        assert estimate == pytest.approx(brute)
        assert estimate == pytest.approx(best_of_n_closed_form(pool, k))


def test_best_of_n_ties_are_a_uniform_pick_among_the_tied_samples() -> None:
    pool = [
        sample(0, "1", True, 0.9),
        sample(1, "2", False, 0.9),
        sample(2, "3", False, 0.9),
        sample(3, "1", True, 0.1),
    ]
    assert best(pool) == pytest.approx(1 / 3)
    assert best(pool[2:]) == 0.0


def test_weighted_best_of_n_sums_scores_per_answer() -> None:
    # "7": 0.3 + 0.3 + 0.3 = 0.9 beats "8": 0.8 even though "8" holds the single best sample.
    pool = [
        sample(0, "7", True, 0.3),
        sample(1, "8", False, 0.8),
        sample(2, "7", True, 0.3),
        sample(3, "7", True, 0.3),
        sample(4, None, False, 0.99),  # no answer: no vote, whatever its score
    ]
    assert weighted_vote(pool) == 1.0
    assert (
        BestOfN().expected_accuracy(pool, 5, np.random.default_rng(0)) == 0.0
    )  # plain best-of-N takes the 0.99
    # A tie of sums (0.3 + 0.3 + 0.3 versus 0.9) counts as a uniform pick of the two answers.
    tied = [*pool[:1], sample(1, "8", False, 0.9), *pool[2:4]]
    assert weighted_vote(tied) == pytest.approx(0.5)
    # Over all 2-subsets of the first four samples, by hand: the pairs {7,7} (3 of them) win,
    # {7, 8} (3 of them) lose: 0.5.
    assert WeightedBestOfN().expected_accuracy(pool[:4], 2, np.random.default_rng(0)) == pytest.approx(0.5)


@pytest.mark.parametrize("strategy", [BestOfN(), WeightedBestOfN()])
def test_scores_missing_is_a_clear_error(strategy) -> None:  # type: ignore[no-untyped-def]
    pool = [sample(0, "1", True, None), sample(1, "2", False, 0.5)]
    with pytest.raises(ValueError, match="needs a verifier score"):
        strategy.expected_accuracy(pool, 2, np.random.default_rng(0))


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


def test_beam_search_keeps_the_top_m_by_score_and_extends_each_by_n_over_m() -> None:
    scores = {"s0": 0.1, "s1": 0.9, "s2": 0.5, "s3": 0.7, "s1.0": 0.2, "s1.1": 0.8, "s3.0": 0.6, "s3.1": 0.95}
    runner, verifier = ScriptedRunner(named_steps(depth_done=2)), ScriptedVerifier(scores)
    attempt = solve(BeamSearch(beam_width=2), runner, verifier, samples=4)

    first, second = attempt.trace["rounds"]
    assert [c["steps"] for c in first["children"]] == [["s0"], ["s1"], ["s2"], ["s3"]]
    assert [k["steps"] for k in first["kept"]] == [["s1"], ["s3"]]  # the top 2 of 0.1, 0.9, 0.5, 0.7
    # Round 1: the root alone, 4 samples. Round 2: each of the 2 beams, 4 / 2 = 2 samples, each
    # continuing its own text, stopping at the delimiter.
    assert [(r.continuation, r.n, r.stop) for r in runner.calls[0]] == [("", 4, (DELIMITER,))]
    assert [(r.continuation, r.n) for r in runner.calls[1]] == [("s1\n\n", 2), ("s3\n\n", 2)]
    # Depth-2 steps end by "length": all four complete; the best by last-step score wins.
    assert [c["steps"][-1] for c in second["children"]] == ["s1.0", "s1.1", "s3.0", "s3.1"]
    assert attempt.answer == "s3.1"
    assert attempt.trace["chosen"]["scores"] == [0.7, 0.95]


def test_beam_search_aggregate_min_changes_the_pick() -> None:
    scores = {"s0": 0.1, "s1": 0.9, "s2": 0.5, "s3": 0.7, "s1.0": 0.2, "s1.1": 0.8, "s3.0": 0.6, "s3.1": 0.95}
    attempt = solve(
        BeamSearch(beam_width=2, aggregate="min"), ScriptedRunner(named_steps(2)), ScriptedVerifier(scores), 4
    )
    assert attempt.answer == "s1.1"  # min(0.9, 0.8) = 0.8 beats min(0.7, 0.95) = 0.7


def test_top_paths_keeps_order_among_equal_scores() -> None:
    paths = [Path(["a"], [0.5]), Path(["b"], [0.7]), Path(["c"], [0.5]), Path(["d"], [0.1])]
    assert [p.steps for p in top_paths(paths, 3, "last")] == [["b"], ["a"], ["c"]]


def test_an_empty_step_completes_its_parent() -> None:
    # After "s0" the model ends at once (an empty step: end of sequence right after the delimiter).
    def step(parent: str, index: int, seed: int) -> tuple[str, str]:
        return ("", "stop") if parent else (f"s{index}", "stop")

    attempt = solve(BeamSearch(beam_width=1), ScriptedRunner(step), ScriptedVerifier({"s0": 0.4}), samples=1)
    assert attempt.answer == "s0"
    assert attempt.trace["completed"] == [{"steps": ["s0"], "scores": [0.4], "done": True}]


def test_beam_search_budgets_are_those_at_least_the_beam_width() -> None:
    assert BeamSearch(beam_width=4).budgets([1, 2, 4, 8, 16]) == [4, 8, 16]
    assert DVTS(beam_width=4).budgets([2, 4, 8]) == [4, 8]
    assert MCTS().budgets([1, 2, 4]) == [1, 2, 4]


# -- DVTS -----------------------------------------------------------------------------------------


def test_dvts_splits_n_into_n_over_m_greedy_subtrees() -> None:
    # Children depend on the seed, so the two subtrees, seeded apart, grow different steps.
    def step(parent: str, index: int, seed: int) -> tuple[str, str]:
        name = f"{parent}.{seed % 97}" if parent else f"s{seed % 97}"
        return name, "length" if name.count(".") >= 2 else "stop"

    runner, verifier = ScriptedRunner(step), ScriptedVerifier()
    attempt = solve(DVTS(beam_width=4), runner, verifier, samples=8)

    assert attempt.trace["subtrees"] == 2
    for call in runner.calls:  # every round: one generate call, one request per live subtree, M each
        assert [r.n for r in call] == [4] * len(call) and len(call) == 2
    rounds = attempt.trace["rounds"]
    assert len(rounds) == 3
    for r in rounds:
        for group, kept in zip(r["children"], r["kept"], strict=True):
            # Each subtree keeps its best child (the first among equals).
            best_child = max(group, key=lambda c: c["scores"][-1])
            assert kept["steps"] == best_child["steps"]
    # The kept step of round 2 is the parent of round 3's children, per subtree.
    for kept, group in zip(rounds[1]["kept"], rounds[2]["children"], strict=True):
        assert all(c["steps"][:-1] == kept["steps"] for c in group)
    leaves = attempt.trace["leaves"]
    assert all(leaf["done"] for leaf in leaves)
    assert attempt.trace["chosen"] == max(leaves, key=lambda leaf: leaf["scores"][-1])
    assert attempt.spend.samples == 3 * 8  # 3 rounds of N = 8 step generations


# -- MCTS -----------------------------------------------------------------------------------------


def node(visits: int, value_sum: float, *children: Node, steps: tuple[str, ...] = ()) -> Node:
    return Node(Path(list(steps), [0.0] * len(steps)), list(children), visits, value_sum)


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
    #    s0.0 (0.4), s0.1 (0.1); s0: visits 3, value 0.7 / 3. Four complete solutions: stop.
    tree = attempt.trace["tree"]
    assert attempt.trace["iterations"] == 3
    assert [r.continuation for call in runner.calls for r in call] == ["", "s1\n\n", "s0\n\n"]
    assert tree["visits"] == 6 and tree["value"] == pytest.approx(2.5 / 6, abs=1e-6)
    s0, s1 = tree["children"]
    assert (s0["text"], s0["visits"], s0["value"]) == ("s0", 3, pytest.approx(0.7 / 3, abs=1e-6))
    assert (s1["text"], s1["visits"], s1["value"]) == ("s1", 3, pytest.approx(0.6, abs=1e-6))
    assert [(c["text"], c["visits"], c["value"], c["done"]) for c in s1["children"]] == [
        ("s1.0", 1, 0.9, True),
        ("s1.1", 1, 0.3, True),
    ]
    # Most visited path: s0 and s1 tie on 3 visits, s1's value is higher; then s1.0.
    assert attempt.answer == "s1.0"
    assert attempt.trace["complete"] == 4


def test_mcts_rollout_evaluation_values_a_child_by_its_rolled_out_end() -> None:
    # A rollout (no stop string) writes the rest of the solution: "end" is its last step.
    def step(parent: str, index: int, seed: int) -> tuple[str, str]:
        return (f"s{index}", "stop") if not parent else ("middle\n\nend", "stop")

    class Rolls(ScriptedRunner):
        def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
            results = super().generate(requests)
            for request, result in zip(requests, results, strict=True):
                if not request.stop:  # the rollout
                    result.completions = [Completion(f"end-of-{request.continuation.strip()}", 7, "stop", 0)]
            return results

    runner = Rolls(step)
    verifier = ScriptedVerifier({"s0": 0.5, "s1": 0.5, "end-of-s0": 0.1, "end-of-s1": 0.8})
    attempt = solve(MCTS(expansions=2, evaluation="rollout", max_iterations=1), runner, verifier, samples=4)
    s0, s1 = attempt.trace["tree"]["children"]
    assert (s0["value"], s1["value"]) == (0.1, 0.8)
    assert attempt.answer == "s1"  # equal visits; the higher rolled-out value
    assert attempt.spend.generated_tokens == 2 * 5 + 2 * 7  # two steps, two rollouts


# -- the ledger ----------------------------------------------------------------------------------


def deep_steps(parent: str, index: int, seed: int) -> tuple[str, str]:
    return (f"{parent}.{seed % 89}" if parent else f"s{seed % 89}"), "stop"  # never complete


@pytest.mark.parametrize(
    "strategy",
    [
        BeamSearch(beam_width=2, max_step_tokens=5),
        DVTS(beam_width=2, max_step_tokens=5),
        MCTS(max_step_tokens=5),
    ],
    ids=["beam-search", "dvts", "mcts"],
)
@pytest.mark.parametrize("budget_tokens", [1, 23, 60])
def test_the_ledger_never_exceeds_the_budget_by_more_than_one_step(strategy, budget_tokens) -> None:  # type: ignore[no-untyped-def]
    runner, verifier = ScriptedRunner(deep_steps, step_tokens=5), ScriptedVerifier()
    attempt = solve(strategy, runner, verifier, samples=4, tokens=budget_tokens)
    spend = attempt.spend
    # One round generates at most N samples x 5 tokens (MCTS: k = 4 expansions x 5).
    assert budget_tokens <= spend.generated_tokens < budget_tokens + 4 * 5
    generated = [c.tokens for c in runner.produced]
    assert spend.generated_tokens == sum(generated)
    assert spend.samples == len(generated)
    prompts = sum(10 + len(r.continuation) for call in runner.calls for r in call)
    assert spend.prompt_tokens == prompts
    assert spend.verifier_tokens > 0
    # FLOPs: the policy's 2 x P x (prompt + generated) plus the verifier's own (7 "parameters").
    verifier_flops = forward_flops(7, spend.verifier_tokens)
    assert spend.flops == pytest.approx(
        forward_flops(PARAMETERS, prompts + spend.generated_tokens) + verifier_flops
    )


def test_each_search_starts_its_verifier_afresh() -> None:
    # A memoising verifier (llm-judge) would otherwise let a second search of the same problem
    # score for free: searches call its reset() first, and so pay the same twice.
    verifier = ScriptedVerifier()
    spends = [
        solve(strategy, ScriptedRunner(named_steps(2)), verifier, samples=4).spend
        for strategy in (BeamSearch(beam_width=2), BeamSearch(beam_width=2), DVTS(beam_width=2), MCTS())
    ]
    assert verifier.resets == 4
    assert spends[0] == spends[1]


# -- the real model ------------------------------------------------------------------------------


class Recording:
    """Passes requests to a real runner and keeps them, to check what a search sent."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.requests: list[GenerationRequest] = []

    def info(self) -> RunnerInfo:
        return self.runner.info()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.requests += requests
        return self.runner.generate(requests)

    def close(self) -> None:
        pass


@pytest.mark.slow
def test_beam_search_on_the_embedded_model_with_llm_judge(llamacpp_runner: Any) -> None:
    from tsbench.plugins import tasks, verifiers

    task = tasks.get("arith")(levels="1")
    problem = task.load(1, 0, None)[0]
    policy = Recording(llamacpp_runner)
    judge = verifiers.get("llm-judge")(llamacpp_runner)
    strategy = BeamSearch(beam_width=2, max_step_tokens=32, max_steps=2)
    attempt = strategy.solve(problem, task, policy, judge, SearchBudget(4, 4 * 64), np.random.default_rng(0))
    spend, trace = attempt.spend, attempt.trace
    rounds = trace["rounds"]
    assert 1 <= len(rounds) <= 2
    assert len(rounds[0]["children"]) == 4  # the root's N = 4 samples
    assert all(0.0 <= s <= 1.0 for r in rounds for c in r["children"] for s in c["scores"])
    assert spend.samples == sum(len(r["children"]) for r in rounds) == sum(r.n for r in policy.requests)
    # Each later request continues one kept beam, stopping at the step delimiter.
    kept = [beam["steps"] for beam in rounds[0]["kept"]]
    assert [r.continuation for r in policy.requests[1:]] == ["".join(s + "\n\n" for s in k) for k in kept][
        : len(policy.requests) - 1
    ]
    assert all(r.stop == ("\n\n",) and r.max_tokens == 32 for r in policy.requests)
    assert 0 < spend.generated_tokens <= len(rounds) * 4 * 32
    assert spend.prompt_tokens > 0 and spend.verifier_tokens > 0
    # Policy and judge are one model: FLOPs are 2 x P x every token either evaluated.
    parameters = llamacpp_runner.info().parameters
    tokens = spend.prompt_tokens + spend.generated_tokens + spend.verifier_tokens
    assert spend.flops == pytest.approx(forward_flops(parameters, tokens))
    assert trace["chosen"]["steps"] and attempt.answer == task.extract("\n\n".join(trace["chosen"]["steps"]))
