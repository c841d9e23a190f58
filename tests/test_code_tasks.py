"""HumanEval and MBPP: extraction, loading, grading by hidden tests in the sandbox, `tsbench exec`,
the public-tests verifier, and the grader checked on every problem of both full sets."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import pytest
from tsbench.tasks.code import canonical_code, doc_examples, extract_code

from tsbench import plugins
from tsbench.cli import main
from tsbench.contracts import PublicTask, Verdict
from tsbench.sandbox import execute_many
from tsbench.verifiers.base import BoundVerifier

FIXTURES = str(Path(__file__).parent.parent / "tasks" / "fixtures")
SHARED = Path(os.environ.get("TSBENCH_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
HE0 = "def has_close_elements(numbers, threshold):\n    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"


def test_extraction_takes_the_fenced_program_or_the_raw_text() -> None:
    answer = "Here:\n```python\nimport math\n\ndef f(x):\n    return x\n```\nDone.\n```\nf(1)\n```"
    assert extract_code(answer) == "import math\n\ndef f(x):\n    return x"
    assert extract_code("def f(x):\n    return x\n") == "def f(x):\n    return x"
    assert extract_code("```python\ndef f(x):\n    return x") == "def f(x):\n    return x"  # cut off
    assert extract_code("```python\n\n```") is None
    assert extract_code("   ") is None
    assert canonical_code("def f(x):  # hi\n    return (x)\n") == canonical_code("def f(x):\n  return x")


def test_tasks_load_from_fixtures_with_public_and_hidden_parts_apart() -> None:
    humaneval = plugins.tasks.get("humaneval")().load(None, 0, FIXTURES)
    mbpp = plugins.tasks.get("mbpp")().load(None, 0, FIXTURES)
    assert [p.id for p in humaneval][:2] == ["HumanEval/0", "HumanEval/2"] and len(humaneval) == 6
    assert [p.id for p in mbpp] == ["11", "12", "14", "82", "85", "88"]
    first = humaneval[0]
    assert first.metadata["entry_point"] == "has_close_elements"
    assert first.metadata["public_tests"] == [
        "assert has_close_elements([1.0, 2.0, 3.0], 0.5) == False",
        "assert has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3) == True",
    ]
    assert "def check" in json.loads(first.reference)["tests"]
    assert "check" not in json.dumps(first.metadata) and "check" not in first.question
    assert mbpp[0].metadata["public_tests"] == [mbpp[0].question.splitlines()[-1]]
    messages = plugins.tasks.get("humaneval")().messages(first.public())
    assert "def has_close_elements" in messages[1]["content"]


def test_hidden_tests_grade_in_the_sandbox() -> None:
    task = plugins.tasks.get("humaneval")()
    problem = task.load(None, 0, FIXTURES)[0]
    assert task.verdict(HE0, problem) == Verdict(True, "graded")
    assert task.verdict(
        "def has_close_elements(numbers, threshold):\n    return False\n", problem
    ) == Verdict(False, "graded")
    assert task.verdict("def has_close_elements(:\n", problem) == Verdict(False, "error")
    assert task.verdict(None, problem) == Verdict(False, "no_answer")
    body_only = "    return any(abs(a - b) < threshold for a in numbers for b in numbers if a is not b)\n"
    assert task.verdict_many([HE0, None, body_only], problem) == [
        Verdict(True, "graded"),
        Verdict(False, "no_answer"),
        Verdict(True, "graded"),
    ]


def test_doc_examples_read_doctests_and_arrow_examples() -> None:
    prompt = 'def f(a, b):\n    """Add.\n    >>> f(1, 2)\n    3\n    """\n'
    assert doc_examples(prompt, "f") == ["assert f(1, 2) == 3"]
    arrows = 'def g(s):\n    """\n    g("ab") ➞ "ba"\n    g("x") == "x"\n    """\n'
    assert doc_examples(arrows, "g") == ['assert g("ab") == "ba"', 'assert g("x") == "x"']


def test_exec_command_prints_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text(f"Sure:\n```python\n{HE0}```\n")
    bad.write_text("import os\nos._exit(0)\n")
    common = ["exec", "--task", "humaneval", "--problem", "HumanEval/0", "--data-dir", FIXTURES]
    assert main([*common, "--candidate", str(good)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("humaneval HumanEval/0: PASSED") and "containment:" in text
    assert main([*common, "--candidate", str(bad), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["passed"] is False and found["status"] == "error"
    assert main([*common, "--candidate", str(tmp_path / "missing.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert (
        main(
            [
                "exec",
                "--task",
                "humaneval",
                "--problem",
                "X",
                "--candidate",
                str(good),
                "--data-dir",
                FIXTURES,
            ]
        )
        == 2
    )


def test_public_tests_verifier_sees_only_the_public_view() -> None:
    task = plugins.tasks.get("humaneval")()
    problem = task.load(None, 0, FIXTURES)[0]
    verifier = plugins.verifiers.get("public-tests")()
    assert verifier.oracle is False
    bound = BoundVerifier(verifier, problem, task)
    assert not hasattr(bound._problem, "reference") and isinstance(bound._task, PublicTask)
    # Passes the two docstring examples but not the hidden tests: the verifier cannot tell.
    only_examples = "def has_close_elements(numbers, threshold):\n    return threshold < 0.4\n"
    texts = [f"```python\n{HE0}```", f"```python\n{only_examples}```", "no code at all"[:0], "def x(:"]
    assert bound.score(texts).scores == [1.0, 1.0, 0.0, 0.0]
    assert task.verdict(only_examples, problem).correct is False


def _full_sets() -> list[tuple[object, str, str]]:
    """(problem, canonical solution, task) of every HumanEval and MBPP-sanitized problem."""
    humaneval, mbpp = plugins.tasks.get("humaneval")(), plugins.tasks.get("mbpp")()
    mbpp.split = None  # the whole sanitized set, not only its test split
    with gzip.open(SHARED / "humaneval" / "HumanEval.jsonl.gz") as lines:
        rows = [json.loads(line) for line in lines]
    solutions = {r["task_id"]: r["canonical_solution"] for r in rows}
    found = [(p, solutions[p.id], humaneval) for p in humaneval.load(None, 0, str(SHARED))]
    code = {
        str(r["task_id"]): r["code"]
        for r in json.loads((SHARED / "mbpp" / "sanitized-mbpp.json").read_text())
    }
    return found + [(p, code[p.id], mbpp) for p in mbpp.load(None, 0, str(SHARED))]


@pytest.mark.skipif(
    not (SHARED / "humaneval" / "HumanEval.jsonl.gz").is_file() or not (SHARED / "mbpp").is_dir(),
    reason=f"full HumanEval/MBPP data not found under {SHARED} (set TSBENCH_DATA_DIR)",
)
def test_every_canonical_solution_passes_and_a_wrong_one_fails_on_both_full_sets() -> None:
    cases = _full_sets()
    assert len(cases) == 164 + 427
    started = time.monotonic()
    jobs = [task.job(solution, problem) for problem, solution, task in cases]  # type: ignore[attr-defined]
    wrong = [
        task.job(f"def {problem.metadata['entry_point']}(*args, **kwargs):\n    return None\n", problem)  # type: ignore[attr-defined]
        for problem, _, task in cases
    ]
    results = execute_many(jobs + wrong, parallel=os.cpu_count())
    took = time.monotonic() - started
    print(f"\n{len(jobs) + len(wrong)} executions in {took:.1f} s on {os.cpu_count()} cores")
    failing = [
        (c[0].id, r.status, r.detail)
        for c, r in zip(cases, results[: len(jobs)], strict=True)
        if not r.passed
    ]  # type: ignore[attr-defined]
    assert failing == []
    passing_wrong = [c[0].id for c, r in zip(cases, results[len(jobs) :], strict=True) if r.passed]  # type: ignore[attr-defined]
    assert passing_wrong == []
    # The time (the bar: 2 minutes on 2 cores) is a figure to report, printed above, not
    # asserted: a timed assertion flakes on a shared machine.
