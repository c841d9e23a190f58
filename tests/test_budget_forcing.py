"""Budget forcing (s1): its logic on a fake runner, then on the real llama.cpp and hf runners, then
a whole `tsbench run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tsbench.tasks.arith import ArithTask

from tsbench.contracts import (
    Completion,
    GenerationRequest,
    GenerationResult,
    Problem,
    PublicProblem,
    PublicTask,
    RunnerInfo,
)
from tsbench.errors import UserError
from tsbench.ledger import forward_flops
from tsbench.plugins import strategies
from tsbench.run import build_strategy, needs_verifier
from tsbench.scheduler import solve_alone
from tsbench.spec import build_spec
from tsbench.strategies.base import Attempt, SearchBudget
from tsbench.strategies.budget_forcing import WAIT_MIN_TOKENS, BudgetForcing
from tsbench.thinking import ThinkTags, answer_part, split_thinking

PARAMETERS = 1000
TASK = ArithTask([1])
ARITH = PublicTask(TASK)
PROBLEM = PublicProblem("p0", "What is 7 * 1?", {"level": 1})
PREFIX = "\nFinal answer:"
MESSAGES = tuple((m["role"], m["content"]) for m in ARITH.messages(PROBLEM))


class FakeThinker:
    """TEST DOUBLE for a reasoning model, so that a test can make it end its thinking early or late
    on demand. One token per character, counted alike before and after generating, so every count
    is exact. Thinking request k (one whose continuation does not end with the answer prefix)
    writes `rounds[k]` characters of `thought` (the last entry repeats), at least the request's
    min_tokens, then ends its thinking with `end`, the close tag (its tokens counted, as runners
    count a stop string), or "eos" (one token); max_tokens cuts it ("length"). The answer request
    writes `answer`, then EOS."""

    def __init__(
        self, rounds: Sequence[int], end: str = "</think>", thought: str = " hmm", answer: str = " 42"
    ) -> None:
        self.rounds, self.end, self.thought, self.answer = list(rounds), end, thought, answer
        self.requests: list[GenerationRequest] = []
        self.thinking_requests = 0

    def info(self) -> RunnerInfo:
        return RunnerInfo("fake-thinker", PARAMETERS, "fake", "0", "none")

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return sum(len(content) for _, content in request.messages) + len(request.continuation)

    def _write(self, text: str, stream: str, end: str | None, request: GenerationRequest) -> Completion:
        """`text`, then its end (the close tag, or EOS for None); max_tokens cuts it where `stream`
        (what the model would go on writing) has reached."""
        seed, end_tokens = request.seed_for(0), len(end) if end else 1
        if len(text) + end_tokens > request.max_tokens:
            return Completion(stream[: request.max_tokens], request.max_tokens, "length", seed)
        if end:
            return Completion(text, len(text) + end_tokens, "stop", seed, stop_string=end)
        return Completion(text, len(text) + 1, "eos", seed)

    def _complete(self, request: GenerationRequest) -> Completion:
        if request.continuation.endswith(PREFIX):
            return self._write(self.answer, self.answer, None, request)
        planned = self.rounds[min(self.thinking_requests, len(self.rounds) - 1)]
        self.thinking_requests += 1
        stream = self.thought * (request.max_tokens + max(planned, request.min_tokens) + 1)
        text = stream[: max(planned, request.min_tokens)]
        return self._write(text, stream, None if self.end == "eos" else self.end, request)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.requests += requests
        return [GenerationResult([self._complete(r)], self.count_prompt_tokens(r), 0, 0.0) for r in requests]

    def close(self) -> None:
        pass


def solve(strategy: BudgetForcing, runner: Any, budget: SearchBudget, problem: Any = PROBLEM) -> Attempt:
    attempt = solve_alone(strategy, problem, ARITH, runner, None, budget, np.random.default_rng(0))
    assert isinstance(attempt, Attempt)
    return attempt


def phases(attempt: Attempt, kind: str) -> list[dict[str, Any]]:
    return [p for p in attempt.trace["phases"] if p["phase"] == kind]


# -- the logic, on the fake runner -------------------------------------------------------------------


def test_the_cap_cuts_the_thinking_to_the_token_and_forces_the_answer() -> None:
    runner = FakeThinker([500])
    attempt = solve(BudgetForcing(cap=50), runner, SearchBudget(1))
    assert attempt.trace["thinking_tokens"] == attempt.spend.thinking_tokens == 50
    assert attempt.trace["cut"] == "cap" and attempt.trace["waits"] == 0
    [think] = phases(attempt, "think")
    assert (think["max_tokens"], think["tokens"], think["stop_reason"]) == (50, 50, "length")
    thinking = (" hmm" * 20)[:50]
    assert attempt.text == f"<think>{thinking}</think>{PREFIX} 42"
    assert split_thinking(attempt.text).thinking == thinking
    assert answer_part(attempt.text) == f"{PREFIX} 42" and attempt.answer == "42"
    # The answer request continues the closed thinking, greedily, stopping at either tag too.
    answer_request = runner.requests[-1]
    assert answer_request.continuation == f"<think>{thinking}</think>{PREFIX}"
    assert answer_request.temperature == 0.0 and {"<think>", "</think>"} <= set(answer_request.stop)


def test_the_floor_replaces_an_early_end_with_wait_and_continues() -> None:
    runner = FakeThinker([10])  # ends its thinking after 10 characters + the close tag: 18 tokens
    attempt = solve(BudgetForcing(cap=100, floor=40), runner, SearchBudget(1))
    assert attempt.trace["waits"] == 2 and attempt.trace["cut"] is None
    assert attempt.trace["thinking_tokens"] == attempt.spend.thinking_tokens == 3 * 18
    continuations = [r.continuation for r in runner.requests]
    assert continuations[:3] == [
        "<think>",
        "<think> hmm hmm h Wait",
        "<think> hmm hmm h Wait hmm hmm h Wait",
    ]
    # EOS cannot end a round after "Wait" before a few tokens; the first round is the model's own.
    assert [r.min_tokens for r in runner.requests[:3]] == [0, WAIT_MIN_TOKENS, WAIT_MIN_TOKENS]
    thought = split_thinking(attempt.text)
    assert thought.state == "closed" and thought.thinking.count("Wait") == 2
    assert thought.answer == f"{PREFIX} 42"
    # A model that ends at or past the floor is not forced on.
    ended = solve(BudgetForcing(cap=100, floor=30), FakeThinker([30]), SearchBudget(1))
    assert ended.trace["waits"] == 0 and "Wait" not in ended.text and ended.spend.thinking_tokens == 38


def test_the_cap_holds_across_wait_rounds() -> None:
    runner = FakeThinker([10])
    attempt = solve(BudgetForcing(cap=25, floor=20), runner, SearchBudget(1))
    rounds = phases(attempt, "think")
    expected = [(25, 18, "stop"), (7, 7, "length")]  # the second round gets what the cap has left
    assert [(p["max_tokens"], p["tokens"], p["stop_reason"]) for p in rounds] == expected
    assert attempt.spend.thinking_tokens == 25 and attempt.trace["cut"] == "cap"


def test_a_wait_round_asks_for_min_tokens_so_an_immediate_end_cannot_repeat() -> None:
    runner = FakeThinker([10, 0], end="eos")  # after "Wait" it would end at once
    attempt = solve(BudgetForcing(cap=100, floor=20), runner, SearchBudget(1))
    rounds = phases(attempt, "think")
    assert [(p["min_tokens"], p["tokens"], p["stop_reason"]) for p in rounds] == [
        (0, 11, "eos"),
        (WAIT_MIN_TOKENS, WAIT_MIN_TOKENS + 1, "eos"),
        (WAIT_MIN_TOKENS, WAIT_MIN_TOKENS + 1, "eos"),
    ]
    assert attempt.spend.thinking_tokens == 21 and attempt.trace["waits"] == 2


def test_spend_is_canonical_and_within_every_token_budget() -> None:
    prompt = FakeThinker([0]).count_prompt_tokens(GenerationRequest(MESSAGES))
    for floor in (0, 60):
        for tokens in range(prompt, 6 * prompt, 37):
            runner = FakeThinker([25, 3])
            attempt = solve(BudgetForcing(floor=floor), runner, SearchBudget(1, tokens=float(tokens)))
            spend, generated = attempt.spend, [p for p in attempt.trace["phases"] if "skipped" not in p]
            assert spend.tokens <= tokens, (floor, tokens, attempt.trace)
            assert spend.prompt_tokens == sum(runner.count_prompt_tokens(r) for r in runner.requests)
            assert spend.prompt_tokens == sum(p["prompt_tokens"] for p in generated)
            assert spend.generated_tokens == sum(p["tokens"] for p in generated)
            assert spend.thinking_tokens == sum(p["tokens"] for p in generated if p["phase"] == "think")
            assert spend.flops == forward_flops(PARAMETERS, spend.tokens)


def test_without_a_cap_the_thinking_takes_what_the_budget_leaves_for_it() -> None:
    runner = FakeThinker([100_000])
    attempt = solve(BudgetForcing(answer_tokens=32), runner, SearchBudget(1, tokens=1000.0))
    assert attempt.trace["cut"] == "budget" and attempt.spend.tokens <= 1000
    # What is left is the answer's unused room (it wrote 3 characters and EOS of its 32), and at
    # most one token of rounding: each thinking token costs two (generated, then read again).
    assert 1000 - attempt.spend.tokens <= 32 - 4 + 1
    assert attempt.answer == "42"
    # With no finite budget either, the task's cap on a solution bounds the thinking.
    unbounded = solve(BudgetForcing(), FakeThinker([100_000]), SearchBudget(1, max_tokens=70))
    assert unbounded.spend.thinking_tokens == 70 and unbounded.trace["cut"] == "cap"


def test_a_flops_budget_bounds_the_spend_the_same_way() -> None:
    for flops in (forward_flops(PARAMETERS, 400), forward_flops(PARAMETERS, 900)):
        runner = FakeThinker([100_000])
        attempt = solve(BudgetForcing(), runner, SearchBudget(1, flops=flops))
        assert attempt.spend.thinking_tokens > 0 and attempt.spend.flops <= flops
        assert attempt.spend.flops > flops - forward_flops(PARAMETERS, 40)


def test_no_room_for_one_thinking_token_answers_directly() -> None:
    runner = FakeThinker([100])
    thinking = runner.count_prompt_tokens(GenerationRequest(MESSAGES, continuation="<think>"))
    answer = runner.count_prompt_tokens(GenerationRequest(MESSAGES, continuation=f"<think></think>{PREFIX}"))
    tokens = thinking + answer + 32 + 1  # one thinking token costs two: it does not fit
    attempt = solve(BudgetForcing(cap=64), runner, SearchBudget(1, tokens=float(tokens)))
    assert attempt.trace["direct"] and attempt.fallback and not phases(attempt, "think")
    assert attempt.text == f"<think></think>{PREFIX} 42" and attempt.answer == "42"
    assert attempt.spend.tokens <= tokens and attempt.spend.thinking_tokens == 0
    # With two more tokens one thinking token fits.
    thinks = solve(BudgetForcing(cap=64), FakeThinker([100]), SearchBudget(1, tokens=float(tokens + 2)))
    assert not thinks.trace["direct"] and thinks.spend.thinking_tokens == 1
    # A budget below the prompt generates nothing.
    runner = FakeThinker([100])
    attempt = solve(BudgetForcing(), runner, SearchBudget(1, tokens=50.0))
    assert runner.requests == [] and attempt.spend.tokens == 0 and attempt.answer is None


def test_the_answer_is_read_after_the_thinking_only() -> None:
    # The thinking holds a wrong marked answer; the answer part holds none, then the right one.
    runner = FakeThinker([500], thought=" Answer: 9.", answer=" I cannot say")
    attempt = solve(BudgetForcing(cap=30), runner, SearchBudget(1))
    assert TASK.extract(attempt.text) == "9"  # graded whole, the thinking would answer
    assert attempt.answer is None and TASK.extract(answer_part(attempt.text)) is None
    right = solve(BudgetForcing(cap=30), FakeThinker([500], thought=" Answer: 9."), SearchBudget(1))
    assert right.answer == TASK.extract(answer_part(right.text)) == "42"


def test_tags_opened_in_the_thinking_custom_tags_and_a_prompt_opened_thinking() -> None:
    opens = solve(BudgetForcing(cap=20), FakeThinker([500], thought=" <think>x"), SearchBudget(1))
    assert split_thinking(opens.text).state == "closed" and answer_part(opens.text) == f"{PREFIX} 42"
    tags = ("<reasoning>", "</reasoning>")
    runner = FakeThinker([5], end="</reasoning>")
    attempt = solve(BudgetForcing(tags=tags, open_thinking=False), runner, SearchBudget(1))
    assert runner.requests[0].continuation == "" and "</reasoning>" in runner.requests[0].stop
    assert attempt.text == f" hmm </reasoning>{PREFIX} 42"
    assert answer_part(attempt.text, ThinkTags(*tags)) == f"{PREFIX} 42" and attempt.answer == "42"


def test_sampled_thinking_draws_its_seeds_from_the_search_rng() -> None:
    runner, again = FakeThinker([10]), FakeThinker([10])
    for each in (runner, again):
        solve(BudgetForcing(floor=30, temperature=0.7), each, SearchBudget(1))
    thinking = [r for r in runner.requests if r.temperature == 0.7]
    assert len(thinking) == 2 and thinking[0].seeds != thinking[1].seeds
    assert [r.seeds for r in runner.requests] == [r.seeds for r in again.requests]


def arm_spec(options: dict[str, Any]) -> Any:
    arm = "budget-forcing:cap32"
    return build_spec({"strategies": arm, "strategy_options": {arm: options}}, "test")


def test_a_registered_proposal_strategy_with_one_row_per_fixed_cap() -> None:
    strategy = strategies.get("budget-forcing")()
    assert (strategy.pool, strategy.oracle, needs_verifier(strategy)) == ("search", False, False)
    labelled = build_strategy(arm_spec({"cap": 32}), "budget-forcing:cap32")
    assert labelled.name == "budget-forcing:cap32" and labelled.cap == 32
    assert labelled.budgets([4, 1, 16]) == [1] and strategy.budgets([1, 4, 16]) == [1, 4, 16]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cap": 32, "floor": 40}, "floor must be from 0 to the cap"),
        ({"cap": -1}, "cap must be 0 or more"),
        ({"tags": "<think>"}, "tags must be a list of two strings"),
        ({"tags": ["<t>", "<t>"]}, "two different non-empty strings"),
        ({"answer_tokens": 0}, "answer_tokens must be 1 or more"),
        ({"wait": ""}, "wait must be non-empty"),
        ({"wait": "</think> Wait"}, "must not contain the thinking tags"),
        ({"answer_prefix": "<think>"}, "must not contain the thinking tags"),
        ({"cap": "lots"}, "is not int"),
    ],
)
def test_bad_options_are_one_line_user_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message) as error:
        build_strategy(arm_spec(options), "budget-forcing:cap32")
    assert "strategy_options.budget-forcing:cap32" in str(error.value) and "\n" not in str(error.value)


# -- real runners: the embedded SmolLM2-135M on llama.cpp and on transformers -----------------------


@pytest.fixture(scope="module", params=["llamacpp", "hf"])
def real_runner(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "llamacpp":
        yield request.getfixturevalue("llamacpp_runner")
        return
    for module in ("torch", "transformers", "gguf"):  # as tests/test_runner_hf.py
        pytest.importorskip(
            module, reason=f"the hf runner needs {module}: pip install torch transformers gguf"
        )
    from tsbench.runners.hf import HFRunner

    built = HFRunner(device="cpu", threads=1, batch_size=16)
    yield built
    built.close()


def arith_problem(index: int) -> Problem:
    return TASK.load(index + 1, 0, None)[index]


def test_real_runner_cap_holds_to_the_token(real_runner: Any) -> None:
    attempt = solve(BudgetForcing(cap=8), real_runner, SearchBudget(1), arith_problem(0).public())
    rounds = phases(attempt, "think")
    # Counted by the runner's own completions: the model would write more, the cap cuts it at 8.
    assert [(p["tokens"], p["stop_reason"]) for p in rounds] == [(8, "length")]
    assert attempt.spend.thinking_tokens == attempt.trace["thinking_tokens"] == 8
    assert attempt.trace["cut"] == "cap"
    thought = split_thinking(attempt.text)
    assert thought.state == "closed" and thought.answer.startswith(PREFIX)
    opened = GenerationRequest(
        tuple((m["role"], m["content"]) for m in TASK.messages(arith_problem(0))), continuation="<think>"
    )
    assert rounds[0]["prompt_tokens"] == real_runner.count_prompt_tokens(opened)


def test_real_runner_floor_forces_wait(real_runner: Any) -> None:
    # SmolLM2 ends its thinking (EOS) after 16-30 tokens on these problems: a floor of 40 forces it on.
    attempt = solve(BudgetForcing(cap=60, floor=40), real_runner, SearchBudget(1), arith_problem(1).public())
    rounds = phases(attempt, "think")
    assert rounds[0]["stop_reason"] != "length" and rounds[0]["tokens"] < 40
    assert attempt.trace["waits"] >= 1 and "Wait" in split_thinking(attempt.text).thinking
    assert 40 <= attempt.spend.thinking_tokens <= 60
    assert attempt.spend.thinking_tokens == sum(p["tokens"] for p in rounds)
    assert all(p["min_tokens"] == WAIT_MIN_TOKENS for p in rounds[1:])


def test_real_runner_min_tokens_keeps_a_wait_round_from_ending_at_once(
    real_runner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After "Wait." SmolLM2 draws EOS at once: without min_tokens each round buys one token of
    # thinking for a whole prompt; with it, every round after a Wait thinks for a few tokens.
    problem = arith_problem(1).public()
    strategy = BudgetForcing(cap=30, floor=20, wait="Wait.")
    monkeypatch.setattr("tsbench.strategies.budget_forcing.WAIT_MIN_TOKENS", 0)
    unforced = phases(solve(strategy, real_runner, SearchBudget(1), problem), "think")
    assert [(p["tokens"], p["stop_reason"]) for p in unforced[1:3]] == [(1, "eos"), (1, "eos")]
    monkeypatch.undo()
    forced = phases(solve(strategy, real_runner, SearchBudget(1), problem), "think")
    assert len(forced) < len(unforced)
    assert all(p["min_tokens"] == WAIT_MIN_TOKENS <= p["tokens"] for p in forced[1:])


def test_real_runner_answer_is_graded_from_the_answer_part(real_runner: Any) -> None:
    # The wait text plants a wrong \boxed answer in the thinking: arith's extractor prefers \boxed
    # to any 'Answer:' line, so graded whole, the text answers 1000 whatever the model answered.
    # SmolLM2 copies the planted number into its answer on most problems (the answer part then says
    # 1000 too, and nothing would tell the two readings apart); on 12 * 11, with this prefix, it
    # answers 132 on both runners (greedy, so every time).
    problem = arith_problem(2)
    prefix = "\nThe correct final answer:"
    wait = "So the answer is \\boxed{1000}? Wait"
    strategy = BudgetForcing(cap=60, floor=40, wait=wait, answer_prefix=prefix, answer_tokens=8)
    attempt = solve(strategy, real_runner, SearchBudget(1), problem.public())
    assert problem.question == "What is 12 * 11?" and attempt.trace["waits"] >= 1
    whole, part = TASK.extract(attempt.text), answer_part(attempt.text)
    assert whole == "1000" and not TASK.grade(whole, problem)
    assert part.startswith(prefix) and "1000" not in part
    assert attempt.answer == TASK.extract(part) == "132" and TASK.grade(attempt.answer, problem)


# -- a whole run ----------------------------------------------------------------------------------


def test_tsbench_run_with_a_capped_arm_stays_within_its_budget(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    options = "strategy_options:\n  budget-forcing:cap32: {cap: 32, answer_tokens: 16}\n"
    spec.write_text(
        "task: arith\ntask_options: {levels: '1'}\nbudget_unit: tokens\nbudgets: [400]\n" + options
    )
    output = tmp_path / "run"
    command = [sys.executable, "-m", "tsbench.cli", "run", "-c", str(spec), "--limit", "2"]
    command += ["--strategy", "budget-forcing:cap32", "--output", str(output), "--no-progress"]
    done = subprocess.run(
        command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr

    def records(name: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (output / name).read_text().splitlines()]

    [row] = json.loads((output / "metrics.json").read_text())["rows"]
    assert (row["strategy"], row["k"], row["problems"]) == ("budget-forcing:cap32", 400, 2)
    assert 0 < row["tokens_per_problem"] <= 400 and row["within_budget"]
    assert 0 < row["thinking_tokens_per_problem"] <= 32
    traces = records("traces.jsonl")
    assert len(traces) == 2
    for record in traces:
        assert record["trace"]["thinking_tokens"] <= 32 and record["trace"]["phases"][-1]["phase"] == "answer"
    # Each problem's answer is what its text says after the thinking.
    scored = {record["problem_id"]: record for record in records("scores.jsonl")}
    for problem in records("problems.jsonl"):
        attempt = problem["searches"]["budget-forcing:cap32"]["400"]
        assert split_thinking(attempt["text"]).state == "closed"
        assert scored[problem["problem_id"]]["answer"] == TASK.extract(answer_part(attempt["text"]))
