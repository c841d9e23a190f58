"""A task's stop strings (`generation.stop` in YAML) reach every request of its samples, pools and
searches alike; a search step ended by one completes its path; they are part of the run identity.

RecordingRunner is a TEST DOUBLE (no model): the real model's stopping is covered by the runner
conformance suite; what is checked here is that the harness asks for it, on every request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tsbench.tasks.declared import load_task_file

from tsbench.contracts import (
    Completion,
    GenerationRequest,
    GenerationResult,
    PublicTask,
    RunnerInfo,
    task_stop,
)
from tsbench.errors import UserError
from tsbench.generation import generate_all
from tsbench.identity import sample_identity
from tsbench.records import RunFolder
from tsbench.run import build_verifiers, prepare
from tsbench.spec import build_spec
from tsbench.strategies.base import SearchBudget
from tsbench.strategies.stepping import Path as StepPath
from tsbench.strategies.stepping import StepOptions, Stepper

FIXTURES = Path(__file__).parent.parent / "tasks" / "fixtures"
STOP = "Question:"
TASK_YAML = """\
name: stop-demo
description: gsm8k fixture with a stop string
data: {local: gsm8k/test.jsonl}
fields: {question: question, reference: answer}
reference: after_hashes
prompt: {user: "Question: {question}\\nAnswer:"}
extract: number
grade: numeric
generation: {max_tokens: 40, stop: ["Question:", "</s>"]}
"""


class RecordingRunner:
    """TEST DOUBLE for Runner: records every request. A request that stops at the step delimiter
    gets one step ("Let me think.") ended there; any other gets "Answer: 4" ended at the task's
    stop string, as an engine would end a few-shot sample that runs on into a new question."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def info(self) -> RunnerInfo:
        return RunnerInfo("recording", 1000, "recording", "0", "none")

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return 10 + len(request.continuation)

    def _one(self, request: GenerationRequest, index: int) -> Completion:
        seed = request.seed_for(index)
        if "\n\n" in request.stop and not request.continuation:
            return Completion("Let me think.", 4, "stop", seed, [-0.5] * 3, stop_string="\n\n")
        stop = next((s for s in request.stop if s != "\n\n"), None)
        reason = "stop" if stop else "eos"
        return Completion("Answer: 4", 4, reason, seed, [-0.1] * 3, stop_string=stop)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.requests += requests
        return [GenerationResult([self._one(r, i) for i in range(r.n)], 10, 10, 0.0) for r in requests]

    def close(self) -> None:
        pass


def test_yaml_stop_strings_reach_every_pool_and_search_request(tmp_path: Path) -> None:
    (tmp_path / "stop.yaml").write_text(TASK_YAML)
    spec = build_spec(
        {
            "task": str(tmp_path / "stop.yaml"),
            "data_dir": str(FIXTURES),
            "limit": 2,
            "budgets": "4",
            "strategies": "greedy,majority,best-of-n,beam-search,dvts,mcts,particle-filtering",
            "verifiers": "oracle,self-certainty",
            "strategy_options": {"beam-search": {"beam_width": 2}, "dvts": {"beam_width": 2}},
        },
        "test",
    )
    prepared = prepare(spec)
    runner = RecordingRunner()
    verifiers = build_verifiers(prepared, runner)
    folder = RunFolder.open(tmp_path / "run", prepared.spec.to_yaml(), {"test": 1})
    assert generate_all(prepared, runner, 1000, verifiers, folder) == 2

    pools = [r for r in runner.requests if not r.continuation and "\n\n" not in r.stop]
    steps = [r for r in runner.requests if "\n\n" in r.stop]
    assert len(pools) >= 4 and len(steps) >= 4  # greedy + sampled pools of 2 problems; search steps
    # Every other request (pools; rollouts and greedy finishes where a search makes them) carries
    # the task's strings alone.
    assert all(r.stop == ("Question:", "</s>") for r in runner.requests if r not in steps)
    # Step requests merge the delimiter with the task's strings, they do not replace them.
    assert all(r.stop == ("\n\n", "Question:", "</s>") for r in steps)
    # A step ended at the task's stop string completes its path: nothing continues past it.
    assert not any("Answer: 4" in r.continuation for r in runner.requests)
    lines = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
    assert lines and all('"stop_string": "Question:"' in line for line in lines)


def test_a_step_ended_by_a_task_stop_string_completes_its_path(tmp_path: Path) -> None:
    (tmp_path / "stop.yaml").write_text(TASK_YAML)
    task = load_task_file(tmp_path / "stop.yaml")
    problem = task.load(1, 0, str(FIXTURES))[0].public()
    estimates = SimpleNamespace(parameters=1000)  # child() and request() consult nothing else
    budget = SearchBudget(samples=4)
    stepper = Stepper(problem, PublicTask(task), estimates, budget, np.random.default_rng(0), StepOptions())  # type: ignore[arg-type]
    at_delimiter = stepper.child(StepPath(), Completion("a", 1, "stop", 0, stop_string="\n\n"))
    at_task_stop = stepper.child(StepPath(), Completion("a", 1, "stop", 0, stop_string=STOP))
    unknown = stepper.child(StepPath(), Completion("a", 1, "stop", 0, stop_string=None))
    assert not at_delimiter.done and at_task_stop.done and not unknown.done
    assert stepper.request(StepPath(), 2).stop == ("\n\n", "Question:", "</s>")
    assert stepper.request(StepPath(), 1, greedy=True, stop=False).stop == ("Question:", "</s>")


def test_stop_strings_are_part_of_the_sample_identity(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(TASK_YAML)
    (tmp_path / "b.yaml").write_text(TASK_YAML.replace('stop: ["Question:", "</s>"]', 'stop: ["Q:"]'))
    info = RunnerInfo("m", 1, "e", "0", "cpu")
    ids = []
    for name in ("a.yaml", "b.yaml"):
        task = load_task_file(tmp_path / name)
        problems = task.load(2, 0, str(FIXTURES))
        ids.append(sample_identity({"spec": 1}, task, problems, info, object(), []))
    assert ids[0]["prompts_sha256"] == ids[1]["prompts_sha256"]
    assert ids[0]["task_stop"] == ["Question:", "</s>"] and ids[1]["task_stop"] == ["Q:"]
    assert ids[0] != ids[1]


def test_a_task_without_stop_strings_asks_for_none() -> None:
    class Bare:
        name = "bare"

    assert task_stop(Bare()) == ()
    assert load_task_file(Path(__file__).parent.parent / "tasks" / "gsm8k.yaml").stop == ()


@pytest.mark.parametrize(
    "stop,message",
    [
        ("[1, 2]", "generation.stop is [1, 2]"),
        ('[""]', "generation.stop is ['']"),
        ("{a: 1}", "generation.stop"),
    ],
)
def test_a_bad_stop_declaration_is_one_clear_line(tmp_path: Path, stop: str, message: str) -> None:
    bad = TASK_YAML.replace('stop: ["Question:", "</s>"]', f"stop: {stop}")
    (tmp_path / "bad.yaml").write_text(bad)
    with pytest.raises(UserError, match=re.escape(f"bad.yaml: {message}")):
        load_task_file(tmp_path / "bad.yaml")


def test_a_single_string_stop_is_a_list_of_one(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(TASK_YAML.replace('["Question:", "</s>"]', '"Q:"'))
    assert load_task_file(tmp_path / "one.yaml").stop == ("Q:",)
