"""`tsbench star` (STaR): the rationale filter, rationalisation, the train/test split, bad input,
and one real round on the embedded model through the hf runner."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tsbench.contracts import (
    Completion,
    GenerationRequest,
    GenerationResult,
    Problem,
    RunnerInfo,
)
from tsbench.errors import UserError
from tsbench.star.rationales import (
    SamplingSettings,
    sample_rationales,
    train_split,
    with_hint,
)

TASK = "star-test-arith"


@dataclass
class StarTestTask:
    """arith level 1 with a train split: examples(k, seed) are arith questions drawn under another
    seed, each with a worked solution, and with `overlap` of the run's own test questions mixed in
    first, so that the test/train split can be checked."""

    overlap: int = 0
    train: bool = True
    name: str = TASK
    description: str = "arith level 1 with a train split (tests only)"
    generation: dict[str, Any] = field(default_factory=lambda: {"max_tokens": 48})

    def __post_init__(self) -> None:
        from tsbench.tasks.arith import ArithTask

        self.arith = ArithTask([1])
        if not self.train:
            self.examples = None  # type: ignore[assignment]

    def load(self, limit: int | None, seed: int, data_dir: str | None) -> list[Problem]:
        return self.arith.load(limit, seed, data_dir)

    def messages(self, problem: Any) -> list[dict[str, str]]:
        return self.arith.messages(problem)

    def extract(self, text: str) -> str | None:
        return self.arith.extract(text)

    def canonical(self, answer: str) -> str:
        return self.arith.canonical(answer)

    def verdict(self, answer: str | None, problem: Problem) -> Any:
        return self.arith.verdict(answer, problem)

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return self.arith.grade(answer, problem)

    def examples(self, k: int, seed: int) -> list[Problem]:
        from tsbench.tasks.arith import generate

        drawn = [generate(1, seed, i) for i in range(self.overlap)]
        drawn += [generate(1, seed + 7919, i) for i in range(k - self.overlap)]
        return [
            Problem(f"train-{i}", q, f"{q[8:-1]} = {a}.\nAnswer: {a}", {"answer": str(a), "level": 1})
            for i, (q, a) in enumerate(drawn)
        ]


@pytest.fixture
def star_task() -> Iterator[str]:
    """The test task, registered for build_spec and `tsbench star --task`, removed afterwards."""
    from tsbench.plugins import tasks

    tasks.names()  # the built-ins first, so they do not load over it later
    tasks.register(TASK, "arith level 1 with a train split (tests only)")(
        lambda overlap=0, train=True: StarTestTask(int(overlap), str(train).lower() != "false")
    )
    yield TASK
    tasks._entries.pop(TASK, None)


class ChosenTextsRunner:
    """A FAKE runner, for the filter's logic only: it returns texts chosen per question (a hinted
    prompt, one whose user turn holds "The answer is", gets the `hinted` texts) and records the
    requests it was sent. The real model is exercised by test_one_real_round below."""

    def __init__(self, plain: dict[str, list[tuple[str, str]]], hinted: dict[str, list[str]]) -> None:
        self.plain, self.hinted = plain, hinted
        self.requests: list[GenerationRequest] = []

    def info(self) -> RunnerInfo:
        return RunnerInfo("fake", 1000, "fake", "0", "cpu")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.requests += requests
        results = []
        for request in requests:
            user = request.messages[-1][1]
            if "The answer is" in user:
                question = user.split(" The answer is")[0]
                chosen = [(t, "eos") for t in self.hinted.get(question, [])]
            else:
                chosen = self.plain.get(user, [])
            chosen = (chosen * request.n)[: request.n] or [("", "eos")] * request.n
            completions = [
                Completion(text, len(text.split()) + 1, reason, request.seed_for(i))
                for i, (text, reason) in enumerate(chosen)
            ]
            results.append(GenerationResult(completions, 10, 10, 0.0))
        return results

    def close(self) -> None:
        pass


def _problem(pid: str, question: str, answer: int) -> Problem:
    return Problem(pid, question, f"worked.\nAnswer: {answer}", {"answer": str(answer)})


def test_filter_keeps_only_rationales_whose_answer_grades_correct() -> None:
    task = StarTestTask()
    problem = _problem("p", "What is 7 * 9?", 63)
    texts = [
        ("7 * 9 = 63.\nAnswer: 63", "eos"),  # correct: kept
        ("7 * 9 = 64.\nAnswer: 64", "eos"),  # wrong answer
        ("I cannot say.", "eos"),  # no answer at all
        ("7 * 9 = 63.\nAnswer: 63 and so on and on", "length"),  # cut by the token cap
        ("7 * 9 = 63.\nAnswer: 63", "eos"),  # a repeat of the first: kept once
        ("Seven nines make 63.", "stop"),  # correct, read as the last number
    ]
    runner = ChosenTextsRunner({problem.question: texts}, {})
    found = sample_rationales(runner, task, [problem], SamplingSettings(6, 48, 0), 1, show_progress=False)
    assert [r.text for r in found.kept] == ["7 * 9 = 63.\nAnswer: 63", "Seven nines make 63."]
    assert found.correct_samples == 3 and found.solved == 1 and found.rationalised == 0
    assert not any(r.rationalised for r in found.kept)
    assert len(runner.requests) == 1  # solved: no rationalisation
    # every sample's seed is fixed by the run seed, the round and the problem
    again = ChosenTextsRunner({problem.question: texts}, {})
    sample_rationales(again, task, [problem], SamplingSettings(6, 48, 0), 1, show_progress=False)
    assert again.requests[0].seeds == runner.requests[0].seeds
    other = ChosenTextsRunner({problem.question: texts}, {})
    sample_rationales(other, task, [problem], SamplingSettings(6, 48, 0), 2, show_progress=False)
    assert other.requests[0].seeds != runner.requests[0].seeds


def test_rationalisation_samples_with_the_hint_and_trains_without_it() -> None:
    task = StarTestTask()
    solved = _problem("a", "What is 2 + 3?", 5)
    stuck = _problem("b", "What is 8 * 7?", 56)
    runner = ChosenTextsRunner(
        {solved.question: [("2 + 3 = 5.\nAnswer: 5", "eos")], stuck.question: [("Answer: 54", "eos")]},
        {stuck.question: ["8 * 7 = 56.\nAnswer: 56", "It is 57.\nAnswer: 57"]},
    )
    found = sample_rationales(
        runner, task, [solved, stuck], SamplingSettings(2, 48, 0), 1, show_progress=False
    )
    hinted = [r for r in runner.requests if "The answer is" in r.messages[-1][1]]
    assert [r.messages[-1][1] for r in hinted] == ["What is 8 * 7? The answer is 56."]
    assert found.rationalised == 1 and found.hinted_correct_samples == 1
    kept = {r.problem_id: r for r in found.kept}
    assert kept["b"].text == "8 * 7 = 56.\nAnswer: 56" and kept["b"].rationalised
    # what training sees is the task's own prompt, never the hint
    assert [list(m) for m in kept["b"].messages] == [
        [m["role"], m["content"]] for m in task.messages(stuck.public())
    ]
    assert all("The answer is" not in content for _, content in kept["b"].messages)
    assert with_hint(task.messages(stuck.public()), "56")[-1]["content"].endswith("The answer is 56.")
    # the sampling ledger charges each request's prompt once and every generated token
    assert found.spend.requests == 3 and found.spend.prompt_tokens == 30
    assert found.spend.flops(1000) == 2 * 1000 * (30 + found.spend.generated_tokens)


def test_a_train_question_equal_to_a_test_question_is_never_trained_on() -> None:
    task = StarTestTask(overlap=2)
    test = task.load(5, 0, None)
    train, dropped = train_split(task, 6, 0, test)
    assert dropped == 2 and len(train) == 4
    assert not {p.question for p in train} & {p.question for p in test}
    with pytest.raises(UserError, match="all 2 train problems drawn are test questions"):
        train_split(task, 2, 0, test)
    with pytest.raises(UserError, match="no train split"):
        train_split(StarTestTask(train=False), 4, 0, test)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "no-such-task"], "unknown task 'no-such-task'"),
        (["--task", TASK, "--task-arg", "train=false"], "has no train split"),
        (["--task", TASK, "--rounds", "0"], "--rounds: '0' is not a positive whole number"),
        (["--task", TASK, "--samples", "x"], "--samples: 'x' is not a positive whole number"),
        (["--task", TASK, "--lr", "-1"], "--lr: '-1' is not a number"),
        (["--task", TASK, "--strategy", "no-such"], "unknown strategy 'no-such'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    star_task: str, argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tsbench.cli import main

    assert main(["star", *argv, "-o", str(tmp_path / "star"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "star").exists()


def test_one_real_round(star_task: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One real round on the embedded SmolLM2-135M through the hf runner: 8 train problems (one of
    them a test question, dropped), 2 samples each, 1 epoch; greedy on 4 test problems."""
    from tsbench.cli import main
    from tsbench.provenance import file_sha256
    from tsbench.tables import report_table

    out = tmp_path / "star"
    argv = ["star", "--task", TASK, "--task-arg", "overlap=1", "--rounds", "1", "--train-problems", "9"]
    argv += ["--samples", "2", "--train-max-tokens", "48", "--max-tokens", "48", "--limit", "4"]
    argv += ["--strategy", "greedy", "--budget", "1", "--epochs", "1", "--threads", "1"]
    assert main([*argv, "-o", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    star = json.loads((out / "star.json").read_text())
    assert star["dropped_test_questions"] == 1 and star["train_problems"] == 8
    round1 = star["rounds"][1]["record"]
    adapter = out / "round-1" / "adapter" / "adapter_model.safetensors"
    assert adapter.is_file() and (out / "round-1" / "adapter" / "adapter_config.json").is_file()
    sha = file_sha256(str(adapter))
    eval_provenance = json.loads((out / "round-1" / "eval" / "provenance.json").read_text())
    compute = eval_provenance["train_compute"]
    assert compute["adapter_sha256"] == sha == round1["adapter_sha256"]
    assert json.loads((out / "round-1" / "provenance.json").read_text())["record"]["adapter_sha256"] == sha
    assert set(compute["per_round"][0]["seconds"]) == {"sampling", "training", "merging", "evaluation"}
    # train FLOPs = 6 x parameters x tokens trained + the FLOPs of sampling the rationales
    params = eval_provenance["model_parameters"]
    assert params == round1["parameters"] > 1e8
    assert round1["tokens_trained"] > 0 and round1["sampling_tokens"] > 0
    expected = 6 * params * round1["tokens_trained"] + 2 * params * round1["sampling_tokens"]
    assert compute["train_flops"] == pytest.approx(expected) == round1["train_flops"]
    assert round1["sampling_tokens"] == round1["sampling_prompt_tokens"] + round1["sampling_generated_tokens"]
    assert (
        json.loads((out / "round-0" / "eval" / "provenance.json").read_text())["train_compute"]["train_flops"]
        == 0
    )
    # never trained on a test question, never on a hint
    tests = {p.question for p in StarTestTask().load(4, 0, None)}
    trained = [json.loads(line) for line in (out / "round-1" / "rationales.jsonl").read_text().splitlines()]
    assert len(trained) == round1["examples_kept"] > 0
    assert not any(m[1] in tests for t in trained for m in t["messages"])
    assert not any("The answer is" in m[1] for t in trained for m in t["messages"])
    # training prompts are the token ids the hf runner feeds the model at inference (its own
    # prompt_tokens, on the base and on the merged model's tokenizer); the target ends the turn
    _same_tokens_as_inference(out / "round-1" / "star-r1", trained)
    # both eval folders are normal run folders: one report, rows told apart by model id
    frame = report_table([out / "round-0" / "eval", out / "round-1" / "eval"])
    assert sorted(frame["model"]) == ["SmolLM2-135M-Instruct-Q4_1", "star-r1"]
    assert list(frame.sort_values("model")["train_flops"]) == [0.0, pytest.approx(expected)]
    assert "star-r1" in printed and "train FLOPs" in printed


def _same_tokens_as_inference(merged: Path, trained: list[dict[str, Any]]) -> None:
    from tsbench.runners.embedded import embedded_gguf
    from tsbench.runners.hf import HFRunner

    from tsbench.star.lora import encode

    # The merged model on the hf runner, with its own tokenizer and with the base GGUF's.
    for tokenizer in (None, str(embedded_gguf())):
        runner = HFRunner(model=str(merged), threads=1, tokenizer=tokenizer)
        try:
            for pair in trained:
                messages = [{"role": role, "content": content} for role, content in pair["messages"]]
                request = GenerationRequest(tuple((m["role"], m["content"]) for m in messages))
                encoded = encode(runner.tokenizer, messages, pair["text"])
                assert list(encoded.prompt) == runner.prompt_tokens(request)
                target = runner.tokenizer.decode(list(encoded.target), skip_special_tokens=False)
                assert target == pair["text"] + "<|im_end|>"
        finally:
            runner.close()
