"""Canonical forms: answers equal in meaning share one (so votes count them together), unequal
answers keep distinct ones, and the form is the same bytes in every process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tsbench.tasks.answers import canonical_math_many, canonical_number, grade_math_equivalent

from tsbench import plugins
from tsbench.contracts import PublicTask, canonical_answer

FIXTURES = Path(__file__).parent.parent / "tasks" / "fixtures"

# Each MATH-500 fixture reference, with other ways a model writes the same answer.
REWRITES = {
    "\\left( 3, \\frac{\\pi}{2} \\right)": ["(3, \\dfrac{\\pi}{2})", "\\left(3,\\frac12\\pi\\right)"],
    "\\frac{14}{3}": ["\\dfrac{14}{3}", "14/3", "\\frac{28}{6}", "4\\frac{2}{3}"],
    "9": ["9.0", " 9 ", "9.00"],
    "42": ["42.", "\\$42", "42\\text{ cm}"],
    "27": ["27.0", "3^3"],
    "90^\\circ": ["90", "90^{\\circ}", "90.0"],
    "3\\sqrt{13}": ["\\sqrt{117}", "3 \\sqrt{13}", "\\sqrt{13}\\cdot 3"],
    "2220": ["2,220", "2{,}220", "2220.0"],
}

EQUAL_GROUPS = [
    ["\\frac12", "\\dfrac{1}{2}", "\\tfrac12", "0.5", "1/2", "\\frac{2}{4}", ".5"],
    ["\\frac13", "0.333333", "1/3"],
    ["3", "3.0", "\\boxed{3}", "x = 3"],
    ["0", "-0", "0.0"],
    ["\\frac{\\sqrt2}{2}", "\\frac{1}{\\sqrt{2}}", "\\sqrt{\\frac12}"],
    ["\\{1, 2\\}", "\\{2,1\\}", "1, 2"],
    ["x + 1", "1 + x"],
    ["(x+1)^2", "x^2 + 2x + 1"],
    ["(1+\\sqrt2)^2", "3 + 2\\sqrt{2}"],
    ["\\text{(C)}", "C", "(C)", "\\textbf{(C)}"],
    ["50\\%", "50"],
    ["\\pi", "\\pi "],
]

UNEQUAL = [
    ("1/2", "1/3"),
    ("2", "-2"),
    ("x+1", "x-1"),
    ("0.333", "\\frac13"),
    ("(1, 2)", "(2, 1)"),
    ("\\pi", "3.14159"),
    ("\\text{(B)}", "\\text{(C)}"),
    ("\\sqrt{2}", "2"),
    ("[0, 1)", "(0, 1]"),
    ("10^{100}", "10^{100} + 1"),
]


def test_each_math500_reference_shares_its_form_with_rewrites_of_it() -> None:
    task = plugins.tasks.get("math500")()
    references = [p.reference for p in task.load(None, 0, str(FIXTURES))]
    assert set(references) == set(REWRITES)
    for reference in references:
        forms = task.canonical_many([reference, *REWRITES[reference]])
        assert len(set(forms)) == 1, (reference, forms)
        # Votes may hand the group's answers to the grader in any order: each one grades right.
        assert all(grade_math_equivalent(r, reference) for r in REWRITES[reference])


def test_equal_answers_share_a_form_and_unequal_ones_do_not() -> None:
    flat = [a for group in EQUAL_GROUPS for a in group] + [a for pair in UNEQUAL for a in pair]
    forms = dict(zip(flat, canonical_math_many(flat), strict=True))
    for group in EQUAL_GROUPS:
        assert len({forms[a] for a in group}) == 1, {a: forms[a] for a in group}
    distinct_groups = [forms[group[0]] for group in EQUAL_GROUPS]
    assert len(set(distinct_groups)) == len(EQUAL_GROUPS)
    for a, b in UNEQUAL:
        assert forms[a] != forms[b], (a, b, forms[a])


def test_the_form_is_readable_sympy() -> None:
    assert canonical_math_many(["\\dfrac{1}{2}", "\\{2,1\\}", "(0,1]", "\\sqrt{117}"]) == [
        "1/2",
        "{1, 2}",
        "Interval.Lopen(0, 1)",
        "3*sqrt(13)",
    ]


def test_text_math_verify_cannot_read_falls_back_to_the_answer_without_whitespace() -> None:
    assert canonical_math_many(["", "  ", "\\frac{1}{", "} {"]) == ["", "", "\\frac{1}{", "}{"]


def test_huge_numbers_keep_their_unevaluated_form_instead_of_being_computed() -> None:
    # Computing these runs for hours; a bound checked before the work keeps the form the same on
    # every machine, where a time limit would not.
    forms = canonical_math_many(["9^{9^{9^{9}}}", "(10^{10})!", "(1+\\sqrt{2})^{100000}", "2^{10}"], 30.0)
    assert forms == ["9**(9**(9**9))", "factorial(10**10)", "(1 + sqrt(2))**100000", "1024"]


def test_math_form_is_the_same_in_every_process() -> None:
    answers = [a for group in EQUAL_GROUPS for a in group] + ["\\{3, x, \\pi\\}", "y^2 + x^2 + xy"]
    script = (
        "import json, sys\n"
        "from tsbench.tasks.answers import canonical_math_many\n"
        "print(json.dumps(canonical_math_many(json.loads(sys.argv[1]))))\n"
    )
    seen = set()
    for hash_seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", script, json.dumps(answers)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        seen.add(out.stdout.strip().splitlines()[-1])
    assert len(seen) == 1
    assert json.loads(seen.pop()) == canonical_math_many(answers)


@pytest.mark.parametrize(
    "answer,form",
    [
        ("1,234.50", "1234.5"),
        ("$7", "7"),
        ("-0", "0"),
        ("3.0", "3"),
        ("007", "7"),
        ("100", "100"),
        ("12345678901234567891", "12345678901234567891"),
        (" 18 ", "18"),
        ("eighteen ", "eighteen"),
        ("nan", "nan"),
        ("1e3", "1e3"),
    ],
)
def test_numeric_form(answer: str, form: str) -> None:
    assert canonical_number(answer) == form


def test_gsm8k_and_arith_group_numbers_by_value() -> None:
    for task in (plugins.tasks.get("gsm8k")(), plugins.tasks.get("arith")()):
        forms = task.canonical_many(["18", "18.0", "$18", "18.00", " 18"])
        assert forms == ["18"] * 5
        assert task.canonical("17") != task.canonical("18") != task.canonical("-18")
        assert PublicTask(task).canonical("18.50") == canonical_answer(task, "18.5") == "18.5"
