"""ProcessBench metrics on the shipped 6-item fixture, with a scripted verifier whose scores we set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from tsbench.contracts import Problem
from tsbench.errors import UserError
from tsbench.processbench import (
    FIXTURE_DIR,
    ProcessBenchItem,
    ProcessBenchTask,
    evaluate_process_verifier,
    load_processbench,
    predicted_first_error,
)
from tsbench.verifiers.base import Scored, VerifierSpend
from tsbench.verifiers.oracle import Oracle

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "processbench"

# Fixture labels: gsm8k-2 -> 1, gsm8k-18 -> 3, gsm8k-26 -> 0, the other three -> -1 (all correct).
SCORES = {
    "gsm8k-2": [0.9, 0.3, 0.2, 0.8],  # first below 0.5 at 1: right
    "gsm8k-18": [0.9, 0.4, 0.9, 0.1],  # at 1, label 3: wrong
    "gsm8k-26": [0.2, 0.9, 0.9, 0.9],  # at 0: right
    "gsm8k-202": [0.9, 0.6],  # none: right
    "gsm8k-205": [0.9, 0.5, 0.7, 0.8],  # 0.5 is not below 0.5: none, right
    "gsm8k-206": [0.9, 0.9, 0.45, 0.9],  # at 2, but all correct: wrong
    "math-a": [0.1],
    "math-b": [0.9, 0.9],
}


class ScriptedVerifier:
    """TEST DOUBLE for a process verifier: the scores of each item come from SCORES; 2 tokens a step."""

    name = "scripted"
    oracle = False

    def score_steps(self, problem: Problem, task: object, steps: Sequence[Sequence[str]]) -> list[Scored]:
        return [
            Scored(SCORES[problem.id][: len(path)], VerifierSpend(2 * len(path), 4 * len(path)))
            for path in steps
        ]


def test_the_fixture_loads_in_processbench_format() -> None:
    items = load_processbench(FIXTURE_DIR, subsets=["gsm8k"])
    assert [(i.id, i.label, len(i.steps)) for i in items] == [
        ("gsm8k-2", 1, 4),
        ("gsm8k-18", 3, 4),
        ("gsm8k-26", 0, 4),
        ("gsm8k-202", -1, 2),
        ("gsm8k-205", -1, 4),
        ("gsm8k-206", -1, 4),
    ]
    assert items[0].subset == "gsm8k" and items[0].problem.startswith("A company sold 4000 gallons")
    # The files list erroneous solutions first: a limit spreads its picks over the whole file.
    picked = load_processbench(FIXTURE_DIR, subsets=["gsm8k"], limit=2)
    assert [(i.id, i.label) for i in picked] == [("gsm8k-2", 1), ("gsm8k-202", -1)]


def test_predicted_first_error() -> None:
    assert predicted_first_error([0.9, 0.2, 0.1]) == 1
    assert predicted_first_error([0.9, 0.5]) == -1
    assert predicted_first_error([0.9, 0.5], threshold=0.6) == 1
    assert predicted_first_error([]) == -1


def test_metrics_per_subset_and_their_average() -> None:
    items = load_processbench(FIXTURE_DIR, subsets=["gsm8k"]) + [
        ProcessBenchItem("math-a", "math", "p", ("wrong",), 0),
        ProcessBenchItem("math-b", "math", "p", ("ok", "ok"), -1),
    ]
    report = evaluate_process_verifier(ScriptedVerifier(), None, items)
    gsm8k, math_ = report["subsets"]["gsm8k"], report["subsets"]["math"]
    assert (gsm8k["erroneous"], gsm8k["correct"]) == (3, 3)
    assert gsm8k["error_accuracy"] == pytest.approx(2 / 3)  # gsm8k-2 and gsm8k-26
    assert gsm8k["correct_accuracy"] == pytest.approx(2 / 3)  # gsm8k-202 and gsm8k-205
    assert gsm8k["f1"] == pytest.approx(2 / 3)
    assert (math_["error_accuracy"], math_["correct_accuracy"], math_["f1"]) == (1.0, 1.0, 1.0)
    assert report["average_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert [p["predicted"] for p in report["predictions"]] == [1, 1, 0, -1, -1, 2, 0, -1]
    steps = sum(len(i.steps) for i in items)
    assert (report["verifier_tokens"], report["verifier_flops"]) == (2 * steps, 4 * steps)


def test_threshold_moves_the_prediction() -> None:
    items = load_processbench(FIXTURE_DIR, subsets=["gsm8k"])
    report = evaluate_process_verifier(ScriptedVerifier(), ProcessBenchTask(), items, threshold=0.55)
    gsm8k = report["subsets"]["gsm8k"]
    # Now gsm8k-205's 0.5 counts as an error: errors 2/3 right, correct 1/3 right.
    assert (gsm8k["error_accuracy"], gsm8k["correct_accuracy"]) == (
        pytest.approx(2 / 3),
        pytest.approx(1 / 3),
    )
    assert gsm8k["f1"] == pytest.approx(2 * (2 / 3) * (1 / 3) / (2 / 3 + 1 / 3))


def test_a_subset_without_correct_solutions_has_no_f1() -> None:
    items = [ProcessBenchItem("math-a", "math", "p", ("wrong",), 0)]
    report = evaluate_process_verifier(ScriptedVerifier(), None, items)
    assert report["subsets"]["math"]["correct_accuracy"] is None and report["subsets"]["math"]["f1"] is None
    assert report["average_f1"] is None


def test_a_shipped_verifier_runs_on_the_fixture() -> None:
    # ProcessBench has no reference answers: the oracle marks every step wrong.
    report = evaluate_process_verifier(Oracle(), None, load_processbench(FIXTURE_DIR, subsets=["gsm8k"]))
    assert report["subsets"]["gsm8k"]["error_accuracy"] == pytest.approx(1 / 3)  # gsm8k-26's label is 0
    assert report["subsets"]["gsm8k"]["f1"] == 0.0


def test_missing_subset_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="olympiadbench.json"):
        load_processbench(tmp_path, subsets=["olympiadbench"])


@pytest.mark.skipif(not SHARED.is_dir(), reason="the full ProcessBench copy is not in ../shared/data here")
def test_the_full_data_loads() -> None:
    items = load_processbench(SHARED)
    counts = {s: sum(i.subset == s for i in items) for s in ("gsm8k", "math", "olympiadbench", "omnimath")}
    assert counts == {"gsm8k": 400, "math": 1000, "olympiadbench": 1000, "omnimath": 1000}
    assert all(-1 <= i.label < len(i.steps) for i in items)
