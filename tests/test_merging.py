"""`tsbench merge`: results folders from several machines joined into one, on real run folders of
the embedded model (made by the local sweep executor), and every way it must refuse, leaving OUT
as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsbench.cli import main
from tsbench.sweep.cells import run_local
from tsbench.sweep.spec import expand

CELL = {
    "limit": 3,
    "max_tokens": 8,
    "task_options": {"levels": 1},
    "strategies": ["majority"],
    "budgets": [2],
}


def results(root: Path, task: str = "arith") -> Path:
    """A results folder holding one finished run of `task`; returns its run folder."""
    [result] = run_local(
        expand({**CELL, "tasks": [task], "results": str(root)}, "s.yaml"), show_progress=False
    )
    return root / result.run_id


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def keep_problems(run: Path, count: int) -> None:
    """Cut a run back to its first `count` problems, as a crash after them would leave it."""
    problems = (run / "problems.jsonl").read_text().splitlines(keepends=True)
    (run / "problems.jsonl").write_text("".join(problems[:count]))
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "complete": False, "problems_done": count}))
    (run / "metrics.json").unlink()


def merge(capsys: pytest.CaptureFixture[str], *args: Path | str) -> tuple[int, str]:
    code = main(["merge", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two machines' results: both ran the arith cell; the second also ran countdown."""
    base = tmp_path_factory.mktemp("machines")
    results(base / "a")
    arith = results(base / "b")
    results(base / "b", "countdown")
    return base / "a", base / "b", arith


def test_runs_found_once_are_copied_and_a_run_found_twice_is_taken_once(
    machines: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, arith = machines
    code, said = merge(capsys, a, b, "-o", tmp_path / "out")
    assert code == 0 and "2 runs (1 from one place, 1 found in several and taken once)" in said
    for run in b.iterdir():  # the run found twice comes from the first input that holds it
        source = a / run.name if (a / run.name).exists() else run
        kept = files(tmp_path / "out" / run.name)
        assert kept == {k: v for k, v in files(source).items() if k != ".lock"}
    for name in ("samples.jsonl", "problems.jsonl", "scores.jsonl"):  # and its copies agree
        assert (a / arith.name / name).read_bytes() == (arith / name).read_bytes()


def test_a_cut_copy_beside_its_finished_twin_gives_the_finished_one(
    machines: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, arith = machines
    import shutil

    shutil.copytree(arith, tmp_path / "cut" / arith.name)
    keep_problems(tmp_path / "cut" / arith.name, 1)
    code, _ = merge(capsys, tmp_path / "cut", arith.parent, "-o", tmp_path / "out")
    assert code == 0
    assert files(tmp_path / "out" / arith.name)["metrics.json"] == (arith / "metrics.json").read_bytes()


def test_out_keeps_its_own_runs_and_its_files(
    machines: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, _ = machines
    out = tmp_path / "out"
    assert merge(capsys, a, "-o", out)[0] == 0
    (out / "README.md").write_text("ours\n")
    (out / "star-run" / "round-1").mkdir(parents=True)  # a folder that is not a run folder
    (out / "star-run" / "round-1" / "notes.txt").write_text("kept\n")
    assert merge(capsys, b, "-o", out)[0] == 0
    assert (out / "README.md").read_text() == "ours\n" and len(list(out.glob("*/identity.json"))) == 2
    assert (out / "star-run" / "round-1" / "notes.txt").read_text() == "kept\n"


def refused(capsys: pytest.CaptureFixture[str], out: Path, *inputs: Path) -> str:
    before = files(out)
    code, said = merge(capsys, *inputs, "-o", out)
    lines = [line for line in said.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, said
    assert files(out) == before  # nothing half-written
    assert not list(out.parent.glob(".*merging*"))
    return lines[0]


@pytest.fixture
def out(machines: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert merge(capsys, machines[0], "-o", tmp_path / "out")[0] == 0
    return tmp_path / "out"


def _copy_of(arith: Path, where: Path) -> Path:
    import shutil

    shutil.copytree(arith, where / arith.name, ignore=shutil.ignore_patterns(".lock"))
    return where / arith.name


def test_copies_that_disagree_on_a_sample_are_refused(
    machines: tuple[Path, Path, Path], out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _copy_of(machines[2], tmp_path / "other")
    samples = (other / "samples.jsonl").read_text().splitlines(keepends=True)
    row = json.loads(samples[1])
    samples[1] = json.dumps({**row, "text": row["text"] + " (another engine)"}, sort_keys=True) + "\n"
    (other / "samples.jsonl").write_text("".join(samples))
    said = refused(capsys, out, tmp_path / "other")
    assert f"run {other.name} conflicts" in said and "samples.jsonl lines for problem" in said


def test_an_edited_identity_is_a_conflict_and_a_renamed_run_is_refused(
    machines: tuple[Path, Path, Path], out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _copy_of(machines[2], tmp_path / "other")
    identity = json.loads((other / "identity.json").read_text())
    (other / "identity.json").write_text(json.dumps({**identity, "seed_note": "edited"}))
    said = refused(capsys, out, tmp_path / "other")
    assert f"run {other.name} conflicts" in said and "seed_note" in said
    renamed = _copy_of(machines[2], tmp_path / "renamed")
    renamed.rename(renamed.with_name("000000000000"))
    said = refused(capsys, out, tmp_path / "renamed")
    assert "is named 000000000000 but its identity hashes to" in said


def test_two_cut_copies_holding_different_problems_are_refused(
    machines: tuple[Path, Path, Path], out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _copy_of(machines[2], tmp_path / "first")
    keep_problems(first, 1)
    second = _copy_of(machines[2], tmp_path / "second")
    lines = (second / "problems.jsonl").read_text().splitlines(keepends=True)
    (second / "problems.jsonl").write_text(lines[1])
    said = refused(capsys, tmp_path / "first", tmp_path / "second")
    assert "each hold problems the other lacks" in said and "tsbench run -c" in said


def test_bad_inputs_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, said = merge(capsys, tmp_path / "missing", "-o", tmp_path / "out")
    assert code == 2 and "is not a folder" in said and not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    code, said = merge(capsys, tmp_path / "empty", "-o", tmp_path / "out")
    assert code == 2 and "holds no run folder" in said
