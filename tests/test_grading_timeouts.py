"""Grading and canonical forms survive whatever a model writes: an answer that makes sympy run for
hours is cut off at the time limit (graded false, status "timeout"), the worker is replaced, and the
next answer is handled as usual."""

import threading
import time
from pathlib import Path

import pytest
from tsbench.tasks import math_equivalence as answers

from tsbench import plugins
from tsbench.contracts import Problem, Verdict, verdict_of

FIXTURES = Path(__file__).parent.parent / "tasks" / "fixtures"
LIMIT_S = 1.5
# Each makes math-verify's check run for minutes at least: exponent towers and factorials whose
# values have billions of digits.
HOSTILE = ["9^{9^{9^{9}}}", "(10^{10})!", "99999999999!", "10^{10^{10}}"]
# math-verify's parser itself takes about 0.7 s per level of a symbolic exponent tower.
SLOW_TO_PARSE = "x^{" * 60 + "2" + "}" * 60

_real_canonical_worker = answers._canonical_worker
_real_math_verify_worker = answers._math_verify_worker


def _sleepy_canonical_worker(answer: str) -> str | None:
    if "hang" in answer:
        time.sleep(600)
    return _real_canonical_worker(answer)


def _sleepy_math_verify_worker(answer: str, reference: str) -> bool:
    if "hang" in answer:
        time.sleep(600)
    return _real_math_verify_worker(answer, reference)


def _failing_math_verify_worker(answer: str, reference: str) -> bool:
    raise ValueError("checker bug")


@pytest.fixture(autouse=True)
def short_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answers, "MATH_VERIFY_TIMEOUT_S", LIMIT_S)
    monkeypatch.setattr(answers, "CANONICAL_TIMEOUT_S", LIMIT_S)
    monkeypatch.setattr(answers, "_CANONICAL_CACHE", {})


def _math500_problem() -> Problem:
    problems = plugins.tasks.get("math500")().load(None, 0, str(FIXTURES))
    return problems[1]  # reference \frac{14}{3}


def test_hostile_answers_time_out_one_after_another_and_each_next_answer_grades_right() -> None:
    task = plugins.tasks.get("math500")()
    problem = _math500_problem()
    for hostile in HOSTILE:
        started = time.monotonic()
        assert task.verdict(hostile, problem) == Verdict(False, "timeout")
        assert time.monotonic() - started < LIMIT_S + 10  # the limit, plus starting a new worker
        assert task.verdict("\\dfrac{28}{6}", problem) == Verdict(True, "graded")
        assert task.verdict("\\frac{13}{3}", problem) == Verdict(False, "graded")
    assert task.grade("4\\frac23", problem) is True
    assert not task.grade(HOSTILE[0], problem)


def test_a_sleeping_checker_times_out_and_the_next_check_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answers, "_math_verify_worker", _sleepy_math_verify_worker)
    task = plugins.tasks.get("math500")()
    problem = _math500_problem()
    for _ in range(2):
        assert task.verdict("hang", problem) == Verdict(False, "timeout")
        assert task.verdict("14/3", problem) == Verdict(True, "graded")


def test_timeouts_work_off_the_main_thread() -> None:
    problem = _math500_problem()
    task = plugins.tasks.get("math500")()
    found: list[Verdict] = []
    thread = threading.Thread(
        target=lambda: found.extend(task.verdict(a, problem) for a in (HOSTILE[1], "14/3"))
    )
    thread.start()
    thread.join(120)
    assert found == [Verdict(False, "timeout"), Verdict(True, "graded")]


def test_a_checker_error_is_graded_false_with_status_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answers, "_math_verify_worker", _failing_math_verify_worker)
    problem = _math500_problem()
    assert plugins.tasks.get("math500")().verdict("14/3", problem) == Verdict(False, "error")


def test_no_answer_has_its_own_status() -> None:
    problem = _math500_problem()
    for task in (plugins.tasks.get("math500")(), plugins.tasks.get("gsm8k")(), plugins.tasks.get("arith")()):
        assert task.verdict(None, problem) == Verdict(False, "no_answer")
        assert verdict_of(task, None, problem) == Verdict(False, "no_answer")
        assert task.grade(None, problem) is False


def test_numeric_verdicts() -> None:
    arith = plugins.tasks.get("arith")()
    problem = Problem("p", "What is 9 + 9?", "18")
    assert arith.verdict("18.0", problem) == Verdict(True, "graded")
    assert arith.verdict("seventeen", problem) == Verdict(False, "graded")


def test_canonical_of_a_hostile_answer_falls_back_and_the_next_one_works() -> None:
    task = plugins.tasks.get("math500")()
    started = time.monotonic()
    assert task.canonical(SLOW_TO_PARSE) == SLOW_TO_PARSE  # no whitespace to remove
    assert time.monotonic() - started < LIMIT_S + 10
    assert task.canonical("\\dfrac{1}{2}") == "1/2"


def test_canonical_batches_survive_hangs_in_the_middle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answers, "_canonical_worker", _sleepy_canonical_worker)
    task = plugins.tasks.get("math500")()
    batch = ["0.5", "hang 1", "\\frac12", "hang  2 ", "\\sqrt{117}", SLOW_TO_PARSE, "3\\sqrt{13}"]
    forms = task.canonical_many(batch)
    assert forms == ["1/2", "hang1", "1/2", "hang2", "3*sqrt(13)", SLOW_TO_PARSE, "3*sqrt(13)"]
    # The fallback is remembered, so asking again neither waits nor changes the answer.
    started = time.monotonic()
    assert task.canonical("hang 1") == "hang1"
    assert time.monotonic() - started < 0.5
