"""Sequential revision, Adaptive-Consistency and the certainty probe: their logic on a FAKE runner
(no model: one token per character, scripted replies), then the real embedded model end to end.

The fake runner's prompt costs 10 tokens plus one per character of its messages and continuation
(count_prompt_tokens says the same); a completion costs one token per character, plus one for EOS,
and is cut at max_tokens ("length"). The numbers below are computed by hand from those rules.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tsbench.contracts import (
    Completion,
    GenerationRequest,
    GenerationResult,
    Problem,
    PublicProblem,
    PublicTask,
    RunnerInfo,
)
from tsbench.ledger import forward_flops
from tsbench.scheduler import solve_alone
from tsbench.strategies.adaptive_consistency import AdaptiveConsistency, leader_stays_ahead
from tsbench.strategies.base import Attempt, SearchBudget
from tsbench.strategies.certainty_probe import DEFAULT_PROBE_PREFIX, SEAM_TOKENS, CertaintyProbe
from tsbench.strategies.revision import DEFAULT_REVISE_PROMPT, SequentialRevision

PARAMETERS = 1000
QUESTION = "q?"
PROMPT = 10 + len(QUESTION)  # the task's own prompt, in the fake's tokens

# (request, sample index) -> (text the sample wants to write, "eos" or "length")
Reply = Callable[[GenerationRequest, int], tuple[str, str]]


class FakeTask:
    """FAKE task: the question as the one user turn; the answer is the last integer in a text."""

    name = "fake"
    description = "fake task for strategy logic"

    def messages(self, problem: Any) -> list[dict[str, str]]:
        return [{"role": "user", "content": problem.question}]

    def extract(self, text: str) -> str | None:
        found = re.findall(r"-?\d+", text)
        return found[-1] if found else None

    def canonical(self, answer: str) -> str:
        return answer.strip().lstrip("0") or "0"

    def load(self, limit: int | None, seed: int, data_dir: str | None) -> list[Problem]:
        return []

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return False


class FakeRunner:
    """FAKE runner (module docstring): replies come from a script, tokens are characters."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.calls: list[list[GenerationRequest]] = []
        self.results: list[GenerationResult] = []

    def info(self) -> RunnerInfo:
        return RunnerInfo("fake", PARAMETERS, "fake", "0", "none")

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return 10 + sum(len(content) for _, content in request.messages) + len(request.continuation)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(list(requests))
        found = []
        for request in requests:
            completions = []
            for index in range(request.n):
                text, reason = self.reply(request, index)
                needed = len(text) + (1 if reason == "eos" else 0)
                seed = request.seed_for(index)
                if needed > request.max_tokens:
                    completions.append(
                        Completion(text[: request.max_tokens], request.max_tokens, "length", seed)
                    )
                else:
                    completions.append(Completion(text, needed, reason, seed))
            prompt = self.count_prompt_tokens(request)
            found.append(GenerationResult(completions, prompt, prompt, 0.0))
        self.results += found
        return found

    def close(self) -> None:
        pass

    def spent_tokens(self) -> int:
        """Canonical policy tokens of everything it generated: each prompt once, plus completions."""
        return sum(r.prompt_tokens + sum(c.tokens for c in r.completions) for r in self.results)


def solve(strategy: Any, runner: FakeRunner, samples: int, seed: int = 0, **limits: Any) -> Attempt:
    budget = SearchBudget(samples=samples, max_tokens=limits.pop("max_tokens", 16), **limits)
    task = PublicTask(FakeTask())
    attempt = solve_alone(
        strategy, PublicProblem("p", QUESTION), task, runner, None, budget, np.random.default_rng(seed)
    )
    assert isinstance(attempt, Attempt)
    return attempt


# -- sequential revision ---------------------------------------------------------------------------

FIRST = ["Answer: 1", "Answer: 1", "Answer: 2", "Answer: 3"]
REVISED = {"Answer: 1": "Answer: 2", "Answer: 2": "Answer: 2", "Answer: 3": "Answer: 3"}


def revising(request: GenerationRequest, index: int) -> tuple[str, str]:
    """First attempts by sample index (1, 1, 2, 3); a revision maps 1 -> 2 and keeps 2 and 3."""
    if len(request.messages) == 1:
        return FIRST[index % 4], "eos"
    return REVISED[request.messages[-2][1]], "eos"


def test_revision_runs_k_over_r_chains_advanced_together_and_votes_their_last_answers() -> None:
    runner = FakeRunner(revising)
    attempt = solve(SequentialRevision(rounds=2), runner, samples=8)
    # Level 8, rounds 2: 4 chains. Round 1 is one request of n = 4; round 2 one request per chain.
    assert [[r.n for r in call] for call in runner.calls] == [[4], [1, 1, 1, 1]]
    for request, previous in zip(runner.calls[1], FIRST, strict=True):
        assert request.messages == (
            ("user", QUESTION),
            ("assistant", previous),
            ("user", DEFAULT_REVISE_PROMPT),
        )
    # The first answers vote 1 (two of four); after revision 2 wins three to one.
    assert attempt.trace["chains"] == [["1", "2"], ["1", "2"], ["2", "2"], ["3", "3"]]
    assert attempt.answer == "2" and attempt.text == "Answer: 2"
    assert (
        attempt.trace["rounds_taken"] == 2 and attempt.trace["width"] == 8 and attempt.trace["changed"] == 2
    )
    assert attempt.spend.samples == 8 and attempt.spend.tokens == runner.spent_tokens()


def test_only_the_last_attempt_stays_in_context() -> None:
    def growing(request: GenerationRequest, index: int) -> tuple[str, str]:
        return ("Answer: 1", "eos") if len(request.messages) == 1 else (request.messages[-2][1] + "!", "eos")

    runner = FakeRunner(growing)
    attempt = solve(SequentialRevision(rounds=3), runner, samples=6)
    assert [[r.n for r in call] for call in runner.calls] == [[2], [1, 1], [1, 1]]
    third = runner.calls[2][0].messages
    assert [role for role, _ in third] == ["user", "assistant", "user"] and third[1][1] == "Answer: 1!"
    assert attempt.text == "Answer: 1!!"


@pytest.mark.parametrize(
    ("samples", "rounds", "calls"),
    [(4, 1, [[4]]), (4, 4, [[1], [1], [1], [1]]), (2, 4, [[1], [1]]), (1, 2, [[1]])],
)
def test_revision_spans_parallel_to_sequential(samples: int, rounds: int, calls: list[list[int]]) -> None:
    # rounds 1: parallel sampling; rounds = k: one chain revised k - 1 times; rounds > k: one chain
    # cut to k attempts, so no level draws more than k.
    runner = FakeRunner(revising)
    attempt = solve(SequentialRevision(rounds=rounds), runner, samples=samples)
    assert [[r.n for r in call] for call in runner.calls] == calls
    assert attempt.spend.samples == sum(map(sum, calls)) <= samples


def test_a_revision_round_that_does_not_fit_is_not_taken() -> None:
    # Round 1 spends the prompt once plus four attempts of 9 characters + EOS: 12 + 40 = 52.
    # Round 2's worst case, per chain: 10 + "q?" + the attempt + the revise prompt, + the cap 16.
    round_one = PROMPT + 4 * (len("Answer: 1") + 1)
    round_two = 4 * (10 + len(QUESTION) + len("Answer: 1") + len(DEFAULT_REVISE_PROMPT) + 16)
    fits = solve(SequentialRevision(rounds=2), FakeRunner(revising), samples=8, tokens=round_one + round_two)
    assert fits.trace["rounds_taken"] == 2
    runner = FakeRunner(revising)
    short = solve(SequentialRevision(rounds=2), runner, samples=8, tokens=round_one + round_two - 1)
    assert short.trace["rounds_taken"] == 1 and short.trace["stopped"].startswith("budget: round 2")
    assert len(runner.calls) == 1 and short.spend.tokens == round_one <= round_one + round_two - 1
    assert short.answer == "1"  # the vote of the first answers


@pytest.mark.parametrize("level", [5, 30, 60, 120, 200, 400])
@pytest.mark.parametrize("unit", ["tokens", "flops"])
@pytest.mark.parametrize("rounds", [1, 2, 4])
def test_revision_spend_stays_within_the_budget(level: int, unit: str, rounds: int) -> None:
    limits = {"tokens": level} if unit == "tokens" else {"flops": forward_flops(PARAMETERS, level)}
    attempt = solve(SequentialRevision(rounds=rounds), FakeRunner(revising), samples=8, seed=level, **limits)
    if attempt.fallback:  # not even one attempt fits: one greedy answer of at least one token
        assert level < PROMPT + 16
    else:
        assert attempt.spend.tokens <= level and attempt.spend.flops <= forward_flops(PARAMETERS, level)


# -- adaptive consistency ---------------------------------------------------------------------------


def test_the_beta_rule_matches_hand_computed_values() -> None:
    # P(p1 > 1/2) for p1 ~ Beta(v1 + 1, v2 + 1) is P(Binomial(v1 + v2 + 1, 1/2) <= v1) ... for v2 = 0
    # it is 1 - 0.5^(v1 + 1); for (3, 1), Beta(4, 2): 1 - (C(5,4) + C(5,5)) / 32 = 26/32.
    assert leader_stays_ahead(2, 0) == pytest.approx(0.875)
    assert leader_stays_ahead(3, 0) == pytest.approx(0.9375)  # < 0.95: go on
    assert leader_stays_ahead(4, 0) == pytest.approx(0.96875)  # >= 0.95: stop
    assert leader_stays_ahead(3, 1) == pytest.approx(0.8125)
    assert leader_stays_ahead(0, 0) == pytest.approx(0.5) and leader_stays_ahead(5, 5) == pytest.approx(0.5)


def always(text: str) -> Reply:
    return lambda request, index: (text, "eos")


def cycling(texts: Sequence[str]) -> Reply:
    """Replies texts[0], texts[1], ... in the order samples are asked for."""
    drawn = iter(range(10**6))
    return lambda request, index: (texts[next(drawn) % len(texts)], "eos")


@pytest.mark.parametrize(("confidence", "used"), [(0.95, 4), (0.85, 2), (0.75, 1)])
def test_adaptive_consistency_stops_once_the_vote_is_decided(confidence: float, used: int) -> None:
    # Unanimous samples: the leader stays ahead with 0.75, 0.875, 0.9375, 0.96875 after 1 to 4.
    runner = FakeRunner(always("Answer: 7"))
    attempt = solve(AdaptiveConsistency(confidence=confidence), runner, samples=16)
    assert attempt.trace["samples_used"] == attempt.trace["width"] == used and attempt.spend.samples == used
    assert attempt.trace["stopped"] == "confident" and attempt.answer == "7"
    assert [r.n for call in runner.calls for r in call] == [1] * used
    assert attempt.spend.tokens == runner.spent_tokens() == used * (PROMPT + len("Answer: 7") + 1)


def test_adaptive_consistency_never_draws_more_than_k() -> None:
    runner = FakeRunner(cycling(["Answer: 1", "Answer: 2", "Answer: 3"]))
    attempt = solve(AdaptiveConsistency(), runner, samples=8)
    assert attempt.trace["samples_used"] == 8 and attempt.trace["stopped"] == "k samples drawn"
    assert attempt.trace["votes"] == {"1": 3, "2": 3, "3": 2} and attempt.answer in ("1", "2")
    # In batches of 3 at k = 5: 3 (0.9375, unanimous), then the last 2: 5 to 0 decides.
    runner = FakeRunner(always("Answer: 7"))
    batched = solve(AdaptiveConsistency(batch=3), runner, samples=5)
    assert [r.n for call in runner.calls for r in call] == [3, 2] and batched.spend.samples == 5
    assert [c["p_leader"] for c in batched.trace["checks"]] == [0.9375, 0.984375]


def test_adaptive_consistency_shrinks_a_batch_to_the_budget() -> None:
    # A batch of 4 at cap 16 needs 12 + 64; with 50 tokens two whole samples fit (12 + 32 = 44),
    # and after they spend 12 + 20 the 18 left hold no whole sample (12 + 16).
    runner = FakeRunner(always("Answer: 7"))
    attempt = solve(AdaptiveConsistency(batch=4), runner, samples=4, tokens=50)
    assert [r.n for call in runner.calls for r in call] == [2]
    assert attempt.spend.tokens == 32 <= 50 and attempt.trace["stopped"].startswith("budget")
    fallback = solve(AdaptiveConsistency(), FakeRunner(always("Answer: 7")), samples=1, tokens=20)
    assert fallback.fallback and fallback.trace["samples_used"] == 0


# -- certainty probe ---------------------------------------------------------------------------------

CHAIN = "x" * 60 + " so Answer: 5"


def probed(answer: Callable[[int], str]) -> Reply:
    """The chain writes CHAIN, then ends (EOS); a probe after c chain tokens answers answer(c)."""

    def reply(request: GenerationRequest, index: int) -> tuple[str, str]:
        if request.continuation.endswith(DEFAULT_PROBE_PREFIX):
            return answer(len(request.continuation) - len(DEFAULT_PROBE_PREFIX)), "eos"
        return CHAIN[len(request.continuation) :], "eos"

    return reply


def test_the_probe_stops_after_agree_equal_answers_and_charges_its_tokens() -> None:
    runner = FakeRunner(probed(lambda chain: "7"))
    attempt = solve(CertaintyProbe(chunk_tokens=10, agree=3), runner, samples=4, max_tokens=100)
    # Chunk, probe, chunk, probe, chunk, probe: three probes say 7.
    kinds = ["probe" if r.temperature == 0 else "chunk" for call in runner.calls for r in call]
    assert kinds == ["chunk", "probe"] * 3
    assert attempt.answer == "7" and attempt.text == DEFAULT_PROBE_PREFIX + "7"
    assert attempt.trace["answered_by"] == "probe" and attempt.trace["chain_tokens"] == 30
    assert attempt.trace["chain_tokens_saved"] == 70
    assert [p["answer"] for p in attempt.trace["probes"]] == ["7", "7", "7"]
    # Chunk i's prompt holds the chain so far (10 (i - 1)); probe i's the chain (10 i) + the prefix.
    chunks = sum(PROMPT + 10 * (i - 1) + 10 for i in (1, 2, 3))
    probes = sum(PROMPT + 10 * i + len(DEFAULT_PROBE_PREFIX) + 2 for i in (1, 2, 3))
    assert attempt.spend.tokens == chunks + probes == runner.spent_tokens()
    assert attempt.spend.samples == 6


def test_a_chain_whose_probes_disagree_runs_to_its_end_and_answers_itself() -> None:
    runner = FakeRunner(probed(lambda chain: str(chain)))  # a new answer every probe
    attempt = solve(CertaintyProbe(chunk_tokens=20, agree=2), runner, samples=8, max_tokens=100)
    assert attempt.trace["stopped"] == "the chain ended by itself" and attempt.trace["answered_by"] == "chain"
    assert attempt.text == CHAIN and attempt.answer == "5"
    assert [p["answer"] for p in attempt.trace["probes"]] == ["20", "40", "60"]


def test_the_task_cap_ends_the_chain() -> None:
    runner = FakeRunner(probed(lambda chain: str(chain)))
    attempt = solve(CertaintyProbe(chunk_tokens=10, agree=3), runner, samples=8, max_tokens=25)
    # Chunks of 10, 10 and the last 5 tokens to the cap; no probe after the last.
    assert [r.max_tokens for call in runner.calls for r in call if r.temperature > 0] == [10, 10, 5]
    assert attempt.trace["chain_tokens"] == 25 and attempt.trace["answered_by"] == "chain"
    assert attempt.text == CHAIN[:25]


@pytest.mark.parametrize("level", [10, 80, 150, 250, 400, 1000])
@pytest.mark.parametrize("unit", ["tokens", "flops"])
def test_the_probe_stays_within_the_budget(level: int, unit: str) -> None:
    limits = {"tokens": level} if unit == "tokens" else {"flops": forward_flops(PARAMETERS, level)}
    runner = FakeRunner(probed(lambda chain: str(chain // 30)))
    attempt = solve(CertaintyProbe(chunk_tokens=10, agree=3), runner, samples=4, max_tokens=100, **limits)
    if attempt.fallback:  # the first chunk of one token and its probe do not fit
        assert level < 2 * PROMPT + len(DEFAULT_PROBE_PREFIX) + SEAM_TOKENS + 2 * 1 + 16
        return
    assert attempt.spend.tokens == runner.spent_tokens() <= level
    if attempt.trace["stopped"].startswith("budget") and attempt.trace["probes"]:
        assert attempt.trace["answered_by"] == "probe"  # the latest probe answers for a cut chain


# -- the real model end to end -----------------------------------------------------------------------


def test_a_real_run_keeps_every_row_within_its_budget(tmp_path: Path) -> None:
    """The embedded SmolLM2-135M on llama.cpp: all three strategies (revision at r = 2 and r = 4)
    on two arith problems, budgets in tokens, so each row's tokens per problem must be at most its level."""
    arms = ["sequential-revision:r2", "sequential-revision:r4", "adaptive-consistency", "certainty-probe"]
    spec = {
        "task": "arith",
        "task_options": {"levels": "1"},
        "limit": 2,
        "seed": 0,
        "runner": "llamacpp",
        "strategies": arms,
        "strategy_options": {
            "sequential-revision:r2": {"rounds": 2},
            "sequential-revision:r4": {"rounds": 4},
            "certainty-probe": {"chunk_tokens": 8, "probe_tokens": 8, "agree": 2},
        },
        "budgets": [150, 400],
        "budget_unit": "tokens",
        "max_tokens": 24,
        "batch_sequences": 16,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    output = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TSBENCH_GENERATION_CACHE": "off"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsbench.cli",
            "run",
            "-c",
            str(path),
            "--output",
            str(output),
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads((output / "metrics.json").read_text())["rows"]
    assert {(r["strategy"], r["k"]) for r in rows} == {(a, level) for a in arms for level in (150, 400)}
    for row in rows:
        assert row["tokens_per_problem"] <= row["k"] and row["within_budget"], row
        assert row["problems"] == 2
    scores = [json.loads(line) for line in (output / "scores.jsonl").read_text().splitlines()]
    assert all(s["spend"]["prompt_tokens"] + s["spend"]["generated_tokens"] <= s["level"] for s in scores)
    traces = [json.loads(line) for line in (output / "traces.jsonl").read_text().splitlines()]
    r4 = [t["trace"] for t in traces if t["arm"] == "sequential-revision:r4" and t["k"] == 400]
    assert all(t.get("rounds_planned") == 4 for t in r4), r4
