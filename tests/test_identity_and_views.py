"""A run's identity (new data or model: a new run; new scoring code: a re-score, nothing generated),
the public view that non-oracle strategies and verifiers get, and budgets that bound the total."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tsbench import cli, identity, plugins
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
from tsbench.generation import _verifier_scores, search_jobs, search_record
from tsbench.ledger import Spend
from tsbench.provenance import file_sha256
from tsbench.records import RunFolder
from tsbench.run import (
    Prepared,
    WithParameterCount,
    check_budgets,
    prepare,
)
from tsbench.scheduler import Scheduler
from tsbench.scoring import Arm, expected_accuracy, score_run
from tsbench.spec import build_spec
from tsbench.strategies.base import Attempt, Candidate, Sample, ScoreSteps, Search
from tsbench.verifiers.base import BoundVerifier, Scored, VerifierSpend

TASK_YAML = """
name: tiny
description: two sums
data: {{local: tiny/test.jsonl}}
fields: {{question: question, reference: answer}}
prompt: {{system: "Answer with a number.", user: "{{question}}"}}
extract: number
grade: {grade}
"""


def write_task(root: Path, answers: Sequence[str], grade: str = "numeric") -> Path:
    (root / "data" / "tiny").mkdir(parents=True, exist_ok=True)
    rows = [{"question": f"What is {i} + {i}?", "answer": a} for i, a in enumerate(answers, start=1)]
    (root / "data" / "tiny" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "tiny.yaml").write_text(TASK_YAML.format(grade=grade))
    return root / "tiny.yaml"


def run(root: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    args = ["run", "--task", str(root / "tiny.yaml"), "--data-dir", str(root / "data"), "--limit", "2"]
    args += ["--strategy", "greedy,majority", "--budget", "1,2", "--max-tokens", "12", "--no-progress"]
    args += ["--threads", "1", *extra]
    assert cli.main(args) == 0, capsys.readouterr().err
    return capsys.readouterr().out


@pytest.mark.slow
def test_new_data_is_a_new_run_and_new_scoring_code_re_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_task(tmp_path, ["2", "4"])
    first = run(tmp_path, capsys)
    folder = Path(first.split("results: ")[1].strip())
    samples = (folder / "samples.jsonl").read_bytes()
    again = run(tmp_path, capsys)
    assert "resumed: 2 of 2" in again and "re-scored" not in again

    # The same command after the references changed: a new run, never the old numbers.
    write_task(tmp_path, ["2", "5"])
    changed = run(tmp_path, capsys)
    assert "resumed" not in changed
    assert Path(changed.split("results: ")[1].strip()) != folder
    # ... and an explicit --output holding the old samples is refused, naming what changed.
    assert cli.main(["run", "--task", str(tmp_path / "tiny.yaml"), "--output", str(folder), "--limit", "2",
                     "--data-dir", str(tmp_path / "data"), "--strategy", "greedy,majority", "--budget", "1,2",
                     "--max-tokens", "12", "--no-progress"]) == 2  # fmt: skip
    assert "data_sha256" in capsys.readouterr().err

    # Back to the first data, with another grader: the stored samples are re-scored, not regenerated.
    write_task(tmp_path, ["2", "4"], grade="math_equivalent")
    rescored = run(tmp_path, capsys)
    assert "re-scored: the scoring code changed" in rescored and "resumed: 2 of 2" in rescored
    assert (folder / "samples.jsonl").read_bytes() == samples
    assert json.loads((folder / "metrics.json").read_text())["scored_with"]["grade"] == "math_equivalent"
    assert len((folder / "sessions.jsonl").read_text().splitlines()) == 1

    # A new tsbench version re-scores too; provenance still describes the session that generated.
    provenance = (folder / "provenance.json").read_bytes()
    monkeypatch.setattr(identity, "__version__", "9.9.9")
    assert "re-scored" in run(tmp_path, capsys, "--output", str(folder))
    assert (folder / "provenance.json").read_bytes() == provenance


def test_a_new_model_file_at_the_same_path_is_a_new_sample_identity(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"weights one")
    first = file_sha256(str(model))
    time.sleep(0.01)
    model.write_bytes(b"weights two")
    os.utime(model, ns=(time.time_ns(), time.time_ns()))
    second = file_sha256(str(model))
    assert first != second
    spec = build_spec({"task": "arith", "limit": 2}, "t")
    prepared = prepare(spec)

    def ident(sha: str) -> dict[str, Any]:
        info = RunnerInfo("m", 100, "llama.cpp", "1", "cpu", sha, dtype="q4_1")
        return identity.sample_identity(spec.identity(), prepared.task, prepared.problems, info, object(), [])

    assert identity.run_id(ident(first)) != identity.run_id(ident(second))
    RunFolder.open(tmp_path / "run", "spec\n", ident(first))
    with pytest.raises(UserError, match="model_sha256"):
        RunFolder.open(tmp_path / "run", "spec\n", ident(second))


# -- the public view ------------------------------------------------------------------------------


class Spy:
    """Records what a plugin was handed."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.scored: list[Any] = []
        self.step = ""


def test_a_non_oracle_plugin_gets_a_view_without_the_reference() -> None:
    problem = Problem("p1", "What is 2 + 2?", "4", {"level": 1})
    task = plugins.tasks.get("arith")()
    public = problem.public()
    assert isinstance(public, PublicProblem) and not hasattr(public, "reference")
    view = PublicTask(task)
    assert not hasattr(view, "grade") and not hasattr(view, "load")
    assert view.messages(public) == task.messages(problem)

    spy = Spy()

    class PeekingVerifier:
        name, oracle = "peek", False

        def score(self, problem: Any, task: Any, solutions: Sequence[str]) -> Scored:
            spy.seen.append((problem, task))
            return Scored([0.5] * len(solutions), VerifierSpend())

    class OracleVerifier(PeekingVerifier):
        name, oracle = "truth", True

    BoundVerifier(PeekingVerifier(), problem, task).score(["4"])
    BoundVerifier(OracleVerifier(), problem, task).score(["4"])
    (seen_problem, seen_task), (oracle_problem, _) = spy.seen
    assert not hasattr(seen_problem, "reference") and not hasattr(seen_task, "grade")
    assert oracle_problem.reference == "4"

    class PeekingPick:
        name, pool, oracle = "peek", "sampled", False

        def pick(self, candidates: Sequence[Candidate]) -> dict[int, float]:
            spy.seen.append(list(candidates))
            return {candidates[0].index: 1.0}

    samples = [Sample(0, "4", True, 5), Sample(1, "5", False, 5)]
    assert expected_accuracy(PeekingPick(), samples, 1, np.random.default_rng(0)) == 0.5
    assert all(isinstance(c, Candidate) and not hasattr(c, "correct") for c in spy.seen[-1])


class CountingRunner:
    """TEST DOUBLE for Runner (no model): one-token answers '4', prompts of 10 tokens."""

    def info(self) -> RunnerInfo:
        return RunnerInfo("fake", 1000, "fake", "0", "none")

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return 10

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [
            GenerationResult(
                [Completion("4", 1, "eos", request.seed_for(i)) for i in range(request.n)], 10, 10, 0.0
            )
            for request in requests
        ]

    def close(self) -> None:
        pass


def test_a_search_gets_the_public_problem_and_a_bound_verifier() -> None:
    spy = Spy()

    class PeekingSearch:
        name, pool, oracle = "peek-search", "search", False

        def budgets(self, requested: Sequence[int]) -> list[int]:
            return list(requested)

        def search(self, problem: Any, task: Any, estimates: Any, budget: Any, rng: Any) -> Search:
            spy.seen.append((problem, task, estimates))
            scored = yield ScoreSteps(((spy.step,),))
            spy.scored.append(scored)
            return Attempt("Answer: 4", "4", Spend(samples=1, prompt_tokens=10, generated_tokens=3))

    spec = build_spec({"task": "arith", "limit": 1, "budgets": "2", "max_tokens": 20}, "t")
    prepared = prepare(spec)
    arm = Arm(PeekingSearch(), "oracle")
    prepared = Prepared(prepared.spec, prepared.task, prepared.problems, [arm])
    verifiers = {"oracle": plugins.verifiers.get("oracle")(None)}
    [run] = search_jobs(prepared, CountingRunner(), 1000, verifiers, prepared.problems[0], arm)
    spy.step = f"Answer: {prepared.problems[0].reference}"
    Scheduler(CountingRunner(), 8).run([run.job])
    problem, task, estimates = spy.seen[0]
    assert not hasattr(problem, "reference") and not hasattr(task, "grade")
    assert not hasattr(estimates, "score_steps") and estimates.parameters == 1000
    # The oracle arm's verifier sees the whole problem: a step stating the reference scores 1.
    assert isinstance(run.job.verifier, BoundVerifier) and run.job.verifier.oracle
    assert [s.scores for s in spy.scored[0]] == [[1.0]]
    record = search_record(run)
    assert record["text"] == "Answer: 4" and record["k"] == 2


def test_flop_budgets_without_a_parameter_count_are_refused() -> None:
    spec = build_spec({"task": "arith", "limit": 1, "budget_unit": "flops", "budgets": "1e12"}, "t")
    prepared = prepare(spec)
    with pytest.raises(UserError, match="pass --param-count N"):
        check_budgets(prepared, CountingRunner(), 0, {})
    check_budgets(prepared, CountingRunner(), 135_000_000, {})


# -- pool rows at matched compute -------------------------------------------------------------------


@pytest.mark.parametrize("unit,levels", [("tokens", "40,150,600"), ("flops", "5e4,3e5,1.2e6")])
def test_every_pool_row_covers_every_problem_and_stays_within_its_level(unit: str, levels: str) -> None:
    spec = build_spec(
        {"task": "arith", "limit": 6, "budget_unit": unit, "budgets": levels, "pool_size": 8,
         "strategies": "greedy,majority,best-of-n", "verifiers": "judge"},
        "t",
    )  # fmt: skip
    problems, samples = [], []
    rng = np.random.default_rng(0)
    for p in range(6):
        problems.append(
            {"problem_id": f"p{p}", "question": "q", "reference": "4", "metadata": {}, "searches": {}}
        )
        for pool, n in (("greedy", 1), ("sampled", 8)):
            for i in range(n):
                samples.append(
                    {"problem_id": f"p{p}", "pool": pool, "index": i, "text": f"Answer: {rng.integers(3, 6)}",
                     "prompt_tokens": 12, "generated_tokens": int(rng.integers(5, 30)), "mean_logprob": -0.5,
                     "scores": {"judge": float(rng.random())}, "verifier_spend": {"judge": [20.0, 4e4]}}
                )  # fmt: skip
    task = plugins.tasks.get("arith")()
    arms = [
        Arm(plugins.strategies.get(s)(), v)
        for s, v in (("greedy", None), ("majority", None), ("best-of-n", "judge"))
    ]
    _, scores = score_run(spec, task, arms, 1000, problems, samples)
    from tsbench.report import metrics

    rows = metrics(scores, [a.key for a in arms], set(), unit)["rows"]
    assert {r["problems"] for r in rows} == {6}
    for row in rows:
        if row["fallbacks"] == 0:
            assert row["within_budget"], row
    # the smallest level fits no scored sample: best-of-n falls back on every problem and says so
    smallest = [r for r in rows if r["strategy"] == "best-of-n/judge"][0]
    assert smallest["fallbacks"] == 6 and smallest["verifier_tokens_per_problem"] == 0


def test_pool_verifier_scores_see_the_public_view() -> None:
    spy = Spy()

    class Peek:
        name, oracle = "peek", False

        def score(self, problem: Any, task: Any, solutions: Sequence[str]) -> Scored:
            spy.seen.append(problem)
            return Scored([1.0] * len(solutions), VerifierSpend(4.0 * len(solutions), 8.0 * len(solutions)))

    prepared = prepare(build_spec({"task": "arith", "limit": 1}, "t"))
    result = GenerationResult([Completion("4", 1, "eos", 0), Completion("5", 1, "eos", 1)], 10, 10, 0.0)
    scores, spend, _ = _verifier_scores(prepared, prepared.problems[0], result, {"peek": Peek()})
    assert scores == {"peek": [1.0, 1.0]} and spend == {"peek": [4.0, 8.0]}
    assert not hasattr(spy.seen[0], "reference")


def test_a_run_whose_samples_make_the_checker_hang_is_scored_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hostile answers twice in one run's samples: each graded false as a timeout, the rest scored."""
    from tsbench.tasks import math_equivalence as answers

    monkeypatch.setattr(answers, "MATH_VERIFY_TIMEOUT_S", 1.5)
    monkeypatch.setattr(answers, "CANONICAL_TIMEOUT_S", 1.5)
    spec = build_spec({"task": "math500", "strategies": "majority", "budgets": "1,3", "pool_size": 3}, "t")
    task = plugins.tasks.get("math500")()
    problems = [
        {"problem_id": p, "question": "q", "reference": "\\frac{1}{2}", "metadata": {}, "searches": {}}
        for p in ("a", "b")
    ]
    texts = {
        "a": ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{0.5}", "\\boxed{\\dfrac12}"],
        "b": ["\\boxed{(10^{10})!}"] * 3,
    }
    samples = [
        {"problem_id": p, "pool": "sampled", "index": i, "text": t, "prompt_tokens": 5, "generated_tokens": 9}
        for p, ts in texts.items()
        for i, t in enumerate(ts)
    ]
    grades, scores = score_run(
        spec, task, [Arm(plugins.strategies.get("majority")(), None)], 1000, problems, samples
    )
    status = [(g["problem_id"], g["status"], g["correct"]) for g in grades]
    assert status[:3] == [("a", "timeout", False), ("a", "graded", True), ("a", "graded", True)]
    assert all(s == "timeout" and not c for _, s, c in status[3:])
    # 0.5 and \dfrac12 vote together: majority of 3 is right on problem a, wrong on b.
    at3 = {s["problem_id"]: s["accuracy"] for s in scores if s["level"] == 3}
    assert at3 == {"a": 1.0, "b": 0.0}


def test_a_given_parameter_count_reaches_every_flop_a_search_spends() -> None:
    """--param-count wraps the runner, so searches and verifiers on it count FLOPs with it too."""

    class NoCount(CountingRunner):
        def info(self) -> RunnerInfo:
            return RunnerInfo("served", 0, "openai-compatible", "http", "http://127.0.0.1")

    runner = WithParameterCount(NoCount(), 1_000_000)
    assert runner.info().parameters == 1_000_000 and runner.count_prompt_tokens(GenerationRequest(())) == 10
    spec = build_spec({"task": "arith", "limit": 1, "budget_unit": "flops", "budgets": "1e9",
                       "strategies": "beam-search", "verifiers": "oracle", "max_tokens": 20}, "t")  # fmt: skip
    prepared = prepare(spec)
    check_budgets(
        prepared, runner, runner.info().parameters, {"oracle": plugins.verifiers.get("oracle")(None)}
    )
    arm = prepared.arms[0]
    [run] = search_jobs(
        prepared,
        runner,
        1_000_000,
        {"oracle": plugins.verifiers.get("oracle")(None)},
        prepared.problems[0],
        arm,
    )
    Scheduler(runner, 8).run([run.job])
    spend = search_record(run)["spend"]
    assert spend["flops"] == 2 * 1_000_000 * (spend["prompt_tokens"] + spend["generated_tokens"]) > 0
