"""Test doubles for the step-wise searches (imported by the other test_search_* files), and tests
that pin the doubles themselves, so that numbers computed from them by hand mean what they say.

ScriptedRunner: no model. One token is one character. A step's text comes from a script of
(the parent's last step, sample index, seed); its stop reason is the script's unless the cap cuts
it ("length"). Rollouts (requests without a stop string) and judge questions (requests asking
for logprobs) have their own scripted answers. ScriptedVerifier: a process verifier with a fixed
score per step text and a fixed cost per step.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from tsbench.contracts import (
    Completion,
    GenerationRequest,
    GenerationResult,
    Message,
    Problem,
    PublicTask,
    RunnerInfo,
)
from tsbench.ledger import forward_flops
from tsbench.scheduler import solve_alone
from tsbench.strategies.base import Attempt, SearchBudget
from tsbench.verifiers.base import BoundVerifier, Scored, VerifierSpend

PARAMETERS = 1000
DELIMITER = "\n\n"

# (last step of the continuation, sample index, seed) -> (step text, stop reason)
Script = Callable[[str, int, int], tuple[str, str]]


def named_steps(depth_done: int) -> Script:
    """Step names extend the parent's: "" -> "s0", "s1", ...; "s1" -> "s1.0", ... Steps at depth
    `depth_done` end the solution (EOS)."""

    def step(parent: str, index: int, seed: int) -> tuple[str, str]:
        name = f"{parent}.{index}" if parent else f"s{index}"
        return name, "eos" if name.count(".") + 1 >= depth_done else "stop"

    return step


def last_step(continuation: str) -> str:
    return continuation.rstrip(DELIMITER).split(DELIMITER)[-1]


def hashed(text: str) -> float:
    return zlib.crc32(text.encode()) % 1000 / 1000


def cut(text: str, reason: str, cap: int) -> Completion:
    """The completion an engine returns for a sample that wants to write `text` and end by
    `reason`: tokens count the text, the stop string's, or one for EOS; the cap cuts it."""
    needed = len(text) + (len(DELIMITER) if reason == "stop" else 1 if reason == "eos" else 0)
    if needed > cap:
        return Completion(text[:cap], cap, "length", 0, stop_string=None)
    return Completion(text, needed, reason, 0, stop_string=DELIMITER if reason == "stop" else None)


class ScriptedRunner:
    """TEST DOUBLE for Runner (see the module docstring). Every prompt costs 10 tokens plus one per
    character of its messages and continuation, counted alike by count_prompt_tokens."""

    def __init__(self, script: Script, rollout: Callable[[str, int], str] | None = None) -> None:
        self.script = script
        self.rollout = rollout or (lambda continuation, seed: f"end-of-{last_step(continuation)}")
        self.calls: list[list[GenerationRequest]] = []
        self.results: list[list[GenerationResult]] = []

    def info(self) -> RunnerInfo:
        return RunnerInfo("scripted", PARAMETERS, "script", "0", "none")

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return 10 + sum(len(content) for _, content in request.messages) + len(request.continuation)

    def reply(self, request: GenerationRequest, index: int) -> Completion:
        seed = request.seed_for(index)
        if request.logprobs:
            p = 0.05 + 0.9 * hashed(request.messages[-1][1])
            top = {"Yes": math.log(p), "No": math.log(1 - p)}
            return Completion("Yes", 1, "length", seed, [math.log(p)], [top])
        if not request.stop:
            return replace(
                cut(self.rollout(request.continuation, seed), "eos", request.max_tokens), seed=seed
            )
        text, reason = self.script(last_step(request.continuation), index, seed)
        return replace(cut(text, reason, request.max_tokens), seed=seed)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(list(requests))
        results = []
        for request in requests:
            prompt = self.count_prompt_tokens(request)
            completions = [self.reply(request, i) for i in range(request.n)]
            results.append(GenerationResult(completions, prompt, prompt // 2, 0.0))
        self.results.append(results)
        return results

    def close(self) -> None:
        pass

    def requests(self) -> list[GenerationRequest]:
        return [r for call in self.calls for r in call]


class ScriptedVerifier:
    """TEST DOUBLE for a process verifier: each step's score comes from a table (else from a hash
    of its text); scoring a path costs 3 verifier tokens per step, remembering nothing."""

    name = "scripted"
    oracle = False

    def __init__(self, table: dict[str, float] | None = None) -> None:
        self.table = table or {}
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def value(self, step: str) -> float:
        return self.table.get(step, hashed(step))

    def spend(self, path: Sequence[str]) -> VerifierSpend:
        return VerifierSpend(3 * len(path), forward_flops(7, 3 * len(path)))

    def score_steps(self, problem: object, task: object, steps: Sequence[Sequence[str]]) -> list[Scored]:
        return [Scored([self.value(s) for s in path], self.spend(path)) for path in steps]

    def cost_bound(
        self, problem: object, task: object, steps: Sequence[Sequence[str]], extra_tokens: int
    ) -> VerifierSpend:
        return sum((self.spend(path) for path in steps), VerifierSpend())


class LastStepTask:
    """TEST DOUBLE for Task: the answer is the last step (a whole line of it)."""

    name = "scripted"
    description = "scripted"

    def load(self, limit: int | None, seed: int, data_dir: str | None) -> list[Problem]:
        return [PROBLEM]

    def messages(self, problem: object) -> list[Message]:
        return [{"role": "user", "content": "question?"}]

    def extract(self, text: str) -> str | None:
        return text.split(DELIMITER)[-1].strip() or None

    def canonical(self, answer: str) -> str:
        return answer.strip()

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return answer == problem.reference


PROBLEM = Problem("p0", "question?", "s1.0")
TASK = LastStepTask()


def solve(
    strategy: object,
    runner: object,
    verifier: object,
    samples: int,
    tokens: float = math.inf,
    flops: float = math.inf,
    policy_only: bool = False,
    max_tokens: int = 64,
    seed: int = 0,
) -> Attempt:
    """A search as the harness runs it: the public views, the verifier bound to the problem, its
    needs answered by a scheduler."""
    budget = SearchBudget(samples, tokens, flops, policy_only, max_tokens)
    bound = BoundVerifier(verifier, PROBLEM, TASK)  # type: ignore[arg-type]
    attempt: Attempt = solve_alone(
        strategy,
        PROBLEM.public(),
        PublicTask(TASK),
        runner,
        bound,
        budget,
        np.random.default_rng(seed),  # type: ignore[arg-type]
    )
    return attempt


# -- the doubles themselves ----------------------------------------------------------------------


def test_a_sample_is_cut_by_its_cap_and_counts_its_stop() -> None:
    assert cut("abc", "stop", 10) == Completion("abc", 5, "stop", 0, stop_string=DELIMITER)
    assert cut("abc", "eos", 10) == Completion("abc", 4, "eos", 0)
    assert cut("abcdef", "stop", 4) == Completion("abcd", 4, "length", 0)
    runner = ScriptedRunner(named_steps(2))
    request = GenerationRequest(
        (("user", "question?"),), n=2, max_tokens=8, stop=(DELIMITER,), continuation="s1\n\n"
    )
    result = runner.generate([request])[0]
    assert [(c.text, c.stop_reason, c.tokens) for c in result.completions] == [
        ("s1.0", "eos", 5),
        ("s1.1", "eos", 5),
    ]
    assert result.prompt_tokens == runner.count_prompt_tokens(request) == 10 + 9 + 4
