"""Tasks: procedural arith, the YAML-declared gsm8k and math500 on shipped fixtures, answer handling."""

import threading
from pathlib import Path

import pytest
from tsbench.tasks.answers import extract_boxed, extract_number, grade_math_equivalent, grade_numeric
from tsbench.tasks.arith import LEVELS, generate

from tsbench import plugins
from tsbench.errors import UserError

FIXTURES = Path(__file__).parent.parent / "tasks" / "fixtures"


def test_arith_is_fixed_by_seed_and_differs_across_seeds() -> None:
    task = plugins.tasks.get("arith")(levels="1,2,3,4,5")
    a, b, c = task.load(20, 0, None), task.load(20, 0, None), task.load(20, 1, None)
    assert a == b
    assert [p.question for p in a] != [p.question for p in c]
    assert {p.metadata["level"] for p in a} == {1, 2, 3, 4, 5}


def test_arith_level_one_is_a_single_operation_with_the_right_answer() -> None:
    for index in range(50):
        question, answer = generate(1, 0, index)
        expression = question.removeprefix("What is ").removesuffix("?")
        assert eval(expression) == answer  # the question is the expression itself
        assert all(int(n) <= LEVELS[1][1] for n in expression.split() if n.isdigit())


def test_arith_answers_are_non_negative_integers_at_every_level() -> None:
    for level in LEVELS:
        for index in range(100):
            question, answer = generate(level, 7, index)
            assert isinstance(answer, int) and answer >= 0, question
            assert question.count("Then") == (0 if level == 1 else LEVELS[level][0])


def test_arith_rejects_unknown_levels_and_options() -> None:
    with pytest.raises(UserError, match="levels from 1 to 5"):
        plugins.tasks.get("arith")(levels="0,9")
    with pytest.raises(UserError, match="unknown option"):
        plugins.tasks.get("arith")(depth=3)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("7 * 9 = 63.\nAnswer: 63", "63"),
        ("so the total is 1,234 dollars", "1234"),
        ("#### 18", "18"),
        ("The answer is $\\boxed{42}$.", "42"),
        ("Answer: 2.50", "2.5"),
        ("First 3, then 4, so 12", "12"),
        ("no digits here", None),
    ],
)
def test_extract_number(text: str, expected: str | None) -> None:
    assert extract_number(text) == expected


def test_extract_boxed_handles_nested_braces() -> None:
    assert extract_boxed("so \\boxed{\\frac{14}{3}} done") == "\\frac{14}{3}"
    assert extract_boxed("none") is None


def test_numeric_grade() -> None:
    assert grade_numeric("18", "18") and grade_numeric("18.0", "18") and not grade_numeric("17", "18")
    assert not grade_numeric(None, "18")


def test_math_verify_equivalence_works_off_the_main_thread() -> None:
    results: dict[str, bool] = {}

    def check() -> None:
        results["half"] = grade_math_equivalent("0.5", "\\frac{1}{2}")
        results["wrong"] = grade_math_equivalent("\\frac{1}{3}", "\\frac{1}{2}")
        results["tuple"] = grade_math_equivalent(
            "\\left(3, \\frac{\\pi}{2}\\right)", "\\left( 3, \\frac{\\pi}{2} \\right)"
        )

    thread = threading.Thread(target=check)
    thread.start()
    thread.join(60)
    assert results == {"half": True, "wrong": False, "tuple": True}


def test_gsm8k_loads_from_a_data_folder() -> None:
    task = plugins.tasks.get("gsm8k")()
    problems = task.load(3, 0, str(FIXTURES))
    assert len(problems) == 3 and problems[0].reference == "18"
    assert "Janet" in task.messages(problems[0])[-1]["content"]
    assert task.grade(task.extract("She makes 9 * 2 = 18.\nAnswer: 18"), problems[0])


def test_math500_loads_and_grades_with_math_verify() -> None:
    task = plugins.tasks.get("math500")()
    problems = task.load(None, 0, str(FIXTURES))
    assert len(problems) == 8 and problems[0].id.startswith("test/")
    assert task.grade(task.extract("so \\boxed{\\frac{14}{3}}"), problems[1])


def test_missing_data_names_both_fixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TSBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="--data-dir.*HuggingFace hub"):
        plugins.tasks.get("gsm8k")().load(3, 0, None)
    with pytest.raises(UserError, match="has no gsm8k/test.jsonl"):
        plugins.tasks.get("gsm8k")().load(3, 0, str(tmp_path))
