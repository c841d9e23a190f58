"""Runs grade what a reasoning model answers after its thinking (spec.think_tags), everywhere."""

from __future__ import annotations

import pytest

from tsbench.contracts import Problem, PublicTask
from tsbench.errors import UserError
from tsbench.identity import scoring_identity
from tsbench.run import prepare, resolve_task
from tsbench.scoring import Grader
from tsbench.spec import RunSpec, build_spec

THOUGHT = "<think>7 * 9 is 64? Answer: 64</think>\nAnswer: 63"


def test_grader_and_public_view_read_the_answer_after_the_thinking() -> None:
    task = resolve_task(RunSpec())
    problem = Problem("p", "What is 7 * 9?", "63")
    [graded] = Grader(task).grade_all([THOUGHT], problem)
    assert graded["answer"] == "63" and graded["correct"]
    assert PublicTask(task).extract(THOUGHT) == "63"
    # Cut inside its thinking, a sample has no answer, whatever numbers the thinking holds.
    assert task.extract("<think>so the answer is 64. Answer: 64") is None


def test_no_tags_grade_the_whole_text() -> None:
    task = resolve_task(build_spec({"think_tags": []}, "test"))
    assert task.extract("<think>Answer: 64</think>") == "64"
    assert resolve_task(RunSpec()).extract("<think>Answer: 64</think>") is None


def test_custom_tags_and_their_identity() -> None:
    spec = build_spec({"think_tags": ["<reasoning>", "</reasoning>"]}, "test")
    task = resolve_task(spec)
    assert task.extract("<reasoning>Answer: 1</reasoning>Answer: 2") == "2"
    assert "think_tags" in spec.identity() and "think_tags" not in RunSpec().identity()
    assert (
        scoring_identity(task, [])["task_code_sha256"]
        == scoring_identity(resolve_task(RunSpec()), [])["task_code_sha256"]
    )


@pytest.mark.parametrize("value", [["<t>"], ["<t>", "<t>"], "<t>", ["", "</t>"], [1, 2]])
def test_bad_think_tags_are_one_line(value: object) -> None:
    with pytest.raises(UserError, match="think_tags"):
        build_spec({"think_tags": value}, "spec.yaml")


def test_budget_forcing_tags_must_match_the_runs() -> None:
    spec = build_spec(
        {
            "task_options": {"levels": "1"},
            "limit": 1,
            "strategies": ["budget-forcing"],
            "strategy_options": {"budget-forcing": {"tags": ["<r>", "</r>"]}},
        },
        "spec.yaml",
    )
    with pytest.raises(UserError, match="think_tags"):
        prepare(spec)
