"""Reasoning tasks: arc-challenge (multiple choice, letter extraction) and countdown (Game of 24 family,
generated, checked by exact evaluation of the model's expression, which is hostile input)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from tsbench.tasks.countdown import LEVELS, canonical_expression, check, extract_expression, parse, solve
from tsbench.tasks.multiple_choice import extract_letter

from tsbench import cli, plugins
from tsbench.contracts import Problem
from tsbench.errors import UserError

FIXTURES = Path(__file__).parent.parent / "tasks" / "fixtures"
SHARED = Path(os.environ.get("TSBENCH_DATA_DIR", Path(__file__).parent.parent.parent / "shared" / "data"))


# -- arc-challenge ----------------------------------------------------------------------------------


def arc() -> object:
    return plugins.tasks.get("arc-challenge")()


def test_arc_loads_every_choice_layout_and_letters_the_choices() -> None:
    task = arc()
    problems = task.load(None, 0, str(FIXTURES))  # type: ignore[attr-defined]
    assert len(problems) == 14 and problems[0].id == "Mercury_7175875" and problems[0].reference == "C"
    by_keys = {tuple(p.metadata["keys"]): p for p in problems}
    assert set(by_keys) == {("A", "B", "C", "D"), ("1", "2", "3", "4"), ("A", "B", "C"), ("1", "2", "3"),
                            ("A", "B", "C", "D", "E")}  # fmt: skip
    numeric = by_keys[("1", "2", "3", "4")]
    raw = {
        r["id"]: r for r in json.loads((FIXTURES / "arc_challenge" / "arc_challenge_test.json").read_text())
    }
    assert numeric.reference == "ABCD"[["1", "2", "3", "4"].index(raw[numeric.id]["answer"])]
    prompt = task.messages(by_keys[("A", "B", "C", "D", "E")].public())[-1]["content"]  # type: ignore[attr-defined]
    assert "\nE. " in prompt and "\nF. " not in prompt
    assert task.messages(by_keys[("1", "2", "3")].public())[-1]["content"].endswith(  # type: ignore[attr-defined]
        "C. " + raw[by_keys[("1", "2", "3")].id]["3"]
    )


@pytest.mark.parametrize(
    "text,letter",
    [
        ("Step 1... so the answer is B.\nAnswer: C", "C"),
        ("The answer is (D).", "D"),
        ("**Answer:** A", "A"),
        ("Final answer: \\boxed{B}", "B"),
        ("Answer: Because the sun is hot, B", None),  # "Because" is not the letter B
        ("Answer: I think so", None),
        ("I am not sure.", None),
        ("Reasoning here.\n(B)", "B"),
        ("Reasoning here.\nC.", "C"),
        ("answer: b", None),  # a lower-case letter may be the article "a": no guessing
        ("", None),
    ],
)
def test_arc_letter_extraction(text: str, letter: str | None) -> None:
    assert extract_letter(text) == letter


def test_arc_grades_the_letter_and_only_a_choice_that_exists() -> None:
    task = arc()
    problem = task.load(1, 0, str(FIXTURES))[0]  # type: ignore[attr-defined]
    assert task.grade("C", problem) and task.grade(" c ", problem)  # type: ignore[attr-defined]
    assert not task.grade("B", problem) and not task.grade("G", problem)  # type: ignore[attr-defined]
    assert task.verdict(None, problem).status == "no_answer"  # type: ignore[attr-defined]


def test_arc_reads_the_hub_layout_and_names_a_bad_row(tmp_path: Path) -> None:
    folder = tmp_path / "arc_challenge"
    folder.mkdir()
    hub_row = {"id": "x1", "question": "Q?", "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]},
               "answerKey": "2"}  # fmt: skip
    (folder / "arc_challenge_test.json").write_text(json.dumps([hub_row]))
    [problem] = arc().load(None, 0, str(tmp_path))  # type: ignore[attr-defined]
    assert problem.reference == "B" and problem.metadata["choices"] == ["a", "b", "c"]
    (folder / "arc_challenge_test.json").write_text(json.dumps([{**hub_row, "answerKey": "7"}]))
    with pytest.raises(UserError, match=r"row 0 of .*arc_challenge_test.json: answer '7' is not one of"):
        arc().load(None, 0, str(tmp_path))  # type: ignore[attr-defined]


@pytest.mark.skipif(not (SHARED / "arc_challenge").is_dir(), reason="full ARC data not here (../shared/data)")
def test_arc_full_test_set_loads_with_every_answer_among_its_choices() -> None:
    problems = arc().load(None, 0, str(SHARED))  # type: ignore[attr-defined]
    assert len(problems) == 1172 and len({p.id for p in problems}) == 1172
    assert all("ABCDE"[: len(p.metadata["choices"])].find(p.reference) >= 0 for p in problems)


# -- countdown ---------------------------------------------------------------------------------------


def countdown(levels: str = "1,2,3,4,5") -> object:
    return plugins.tasks.get("countdown")(levels=levels)


def test_every_generated_puzzle_is_solvable_and_keeps_its_level() -> None:
    task = countdown()
    problems: list[Problem] = task.load(500, 7, None)  # type: ignore[attr-defined]
    for problem in problems:
        m, level = problem.metadata, LEVELS[problem.metadata["level"]]
        assert task.grade(problem.reference, problem), problem  # type: ignore[attr-defined]
        assert len(m["numbers"]) == level.count and m["exact"] == level.exact
        assert level.targets[0] <= m["target"] <= level.targets[1]
        assert sum(n in (25, 50, 75, 100) for n in m["numbers"]) >= level.large
    assert all(p.metadata["target"] == 24 for p in problems if p.metadata["level"] == 2)
    # Seeded: the same seed gives the same puzzles, another seed others.
    assert [p.question for p in task.load(20, 7, None)] == [p.question for p in problems[:20]]  # type: ignore[attr-defined]
    assert [p.question for p in task.load(20, 8, None)] != [p.question for p in problems[:20]]  # type: ignore[attr-defined]


def test_any_correct_expression_counts_and_the_rules_hold() -> None:
    assert check("8/(3-8/3)", [3, 3, 8, 8], 24, exact=True)  # needs fractions on the way
    assert check("(8 - 4) * 6", [4, 6, 8], 24, exact=True) and check("6*(8-4)", [4, 6, 8], 24, exact=True)
    assert not check("6*4", [4, 6, 8], 24, exact=True)  # 8 unused, but this puzzle says every number
    assert check("6*4", [4, 6, 8], 24, exact=False)  # Countdown: at most once
    assert not check("6*4*1", [4, 6, 8], 24, exact=False)  # 1 is not given
    assert not check("6*6-8-4", [4, 6, 8], 24, exact=False)  # 6 used twice
    assert not check("(8-4)*6", [4, 6, 8], 25, exact=True)
    assert solve([3, 3, 8, 8], 24) is not None and solve([1, 1, 1, 1], 24) is None


@pytest.mark.parametrize(
    "hostile",
    [
        "__import__('os').system('touch /tmp/pwned')",
        "(lambda: 24)()",
        "open('/etc/passwd').read()",
        "9**9**9**9",  # would take forever as Python
        "24 if True else 0",
        "-(-24)",  # no unary minus: it would make numbers
        "2.4*10",
        "[24][0]",
        "f'{24}'",
        "1" * 500,
        "(" * 5000 + "24" + ")" * 5000,
        "+".join(["1"] * 200),
        "24\x00",
    ],
)
def test_hostile_answers_are_wrong_quickly_and_run_nothing(hostile: str) -> None:
    started = time.perf_counter()
    assert not check(hostile, [24, 1, 1, 1], 24, exact=False)
    assert canonical_expression(hostile) == hostile.strip()
    assert time.perf_counter() - started < 0.5
    assert not Path("/tmp/pwned").exists()


def test_division_by_zero_is_a_wrong_answer_not_a_crash() -> None:
    assert parse("6/(4-4)") is not None
    assert not check("6/(4-4)+24", [4, 4, 6, 24], 30, exact=False)
    task, problem = countdown("2"), countdown("2").load(1, 0, None)[0]  # type: ignore[attr-defined]
    assert task.verdict("1/0", problem).correct is False  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "text,expression",
    [
        ("First 8-4=4, then 4*6=24.\nAnswer: (8-4)*6", "(8-4)*6"),
        ("Answer: $(8-4) \\times 6 = 24$", "(8-4) * 6"),
        ("**Answer:** (8 − 4) × 6", "(8 - 4) * 6"),
        ("Answer: 24 = 6 ÷ (1 - 3/4)", "6 / (1 - 3/4)"),
        ("We get\n(8-4)*6\nwhich is 24", "(8-4)*6"),
        ("I could not find one.", None),
    ],
)
def test_expression_extraction(text: str, expression: str | None) -> None:
    assert extract_expression(text) == expression


def test_answers_graded_alike_share_a_canonical_form() -> None:
    same = {canonical_expression(e) for e in ("(8-4)*6", "6*(8-4)", "6 * (8 - 4)")}
    assert same == {"4,6,8=24"}
    assert canonical_expression("8*4-6") != canonical_expression("(8-4)*6")
    with pytest.raises(UserError, match="levels='9' is not valid"):
        countdown("9")


# -- the real model end to end -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("task,extra", [("arc-challenge", ["--data-dir", str(FIXTURES)]), ("countdown", [])])
def test_a_real_run_of_each_reasoning_task(
    task: str, extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "--task", task, "--limit", "2", "--strategy", "greedy,majority,pass@k", "--budget", "1,2",
            "--max-tokens", "24", "--threads", "1", "--output", str(tmp_path / "run"), "--no-progress", *extra]  # fmt: skip
    assert cli.main(args) == 0
    table = capsys.readouterr().out
    assert "greedy" in table and "pass@k (oracle)" in table
    grades = [json.loads(line) for line in (tmp_path / "run" / "grades.jsonl").read_text().splitlines()]
    assert len(grades) == 2 * 3  # 2 problems x (1 greedy + 2 sampled)
