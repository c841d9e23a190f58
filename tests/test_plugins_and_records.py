"""Third-party plugins through entry points; YAML task files; crash-safe run folders."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tsbench.tasks.declared import load_task_file

from tsbench.errors import UserError
from tsbench.records import PROBLEMS, SAMPLES, RunFolder

FIXTURES = Path(__file__).parent.parent / "tasks" / "fixtures"


def test_a_third_party_package_adds_a_task_through_an_entry_point(tmp_path: Path) -> None:
    (tmp_path / "acme_tasks.py").write_text(
        textwrap.dedent(
            """
            from tsbench.plugins import tasks
            from tsbench.tasks.arith import create_arith

            @tasks.register("acme-arith", "Acme's arithmetic, level 3 only")
            def acme(**options):
                return create_arith(levels="3")
            """
        )
    )
    info = tmp_path / "acme_tasks-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-tasks\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tsbench.tasks]\nacme = acme_tasks\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    listed = subprocess.run(
        [sys.executable, "-m", "tsbench.cli", "list", "tasks"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert re.search(r"^acme-arith +Acme's arithmetic, level 3 only$", listed.stdout, re.MULTILINE)
    assert "gsm8k" in listed.stdout


def test_a_task_yaml_file_runs_without_python(tmp_path: Path) -> None:
    spec = tmp_path / "mine.yaml"
    spec.write_text(
        textwrap.dedent(
            """
            name: mine
            data: {local: gsm8k/test.jsonl}
            fields: {question: question, reference: answer}
            reference: after_hashes
            prompt: {user: "Q: {question}"}
            extract: number
            grade: numeric
            """
        )
    )
    task = load_task_file(spec)
    problems = task.load(2, 0, str(FIXTURES))
    assert [p.reference for p in problems] == ["18", "3"]
    assert task.messages(problems[0])[-1]["content"].startswith("Q: Janet")


def test_a_task_yaml_with_an_unknown_grader_says_which_field(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: b\ndata: {local: x.jsonl}\nfields: {question: q, reference: a}\nprompt: {user: '{question}'}\nextract: number\ngrade: fuzzy\n"
    )
    with pytest.raises(
        UserError, match=r"bad.yaml: field 'grade' is 'fuzzy'; use one of: math_equivalent, numeric"
    ):
        load_task_file(spec)


def test_run_folder_drops_lines_of_unfinished_problems(tmp_path: Path) -> None:
    folder = RunFolder.open(tmp_path / "run", "spec: 1\n", {"spec": 1})
    folder.commit(
        [{"problem_id": "a", "results": {}}], [{"problem_id": "a", "index": 0}], [{"problem_id": "a"}]
    )
    # A crash after writing samples of "b" but before its problem line, and mid-line.
    with (tmp_path / "run" / SAMPLES).open("a") as handle:
        handle.write('{"problem_id": "b", "index": 0}\n{"problem_id": "b", "ind')
    with (tmp_path / "run" / PROBLEMS).open("a") as handle:
        handle.write('{"problem_id": "b", "res')
    reopened = RunFolder.open(tmp_path / "run", "spec: 1\n", {"spec": 1})
    assert reopened.done_ids() == {"a"}
    assert [s["problem_id"] for s in reopened.samples()] == ["a"]
    assert (tmp_path / "run" / SAMPLES).read_text().endswith("\n")


def test_run_folder_refuses_samples_of_another_identity_and_names_what_changed(tmp_path: Path) -> None:
    RunFolder.open(tmp_path / "run", "spec: 1\n", {"data_sha256": "aaa", "spec": {"seed": 0}})
    with pytest.raises(UserError, match=r"another identity \(data_sha256 \(\"aaa\" -> \"bbb\"\)\)"):
        RunFolder.open(tmp_path / "run", "spec: 1\n", {"data_sha256": "bbb", "spec": {"seed": 0}})
    with pytest.raises(UserError, match=r"spec.seed \(0 -> 1\)"):
        RunFolder.open(tmp_path / "run", "spec: 1\n", {"data_sha256": "aaa", "spec": {"seed": 1}})
