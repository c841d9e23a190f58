"""`tsbench merge DIR... -o OUT`: results folders from several machines, joined into one.

A run folder found in one input is copied whole. One run found in several (the same folder name)
must have the same identity, and its copies must agree on every problem they both hold: then the
copy holding the most problems is taken (a cell that ran twice, or a cut run beside its finished
twin; of equal copies, the first input's, OUT counting first). Anything else stops the merge with one line, and OUT is left as it was: the merge is built
in a folder beside OUT and renamed over it at the end.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsbench import records
from tsbench.errors import UserError
from tsbench.identity import changes, run_id
from tsbench.records import IDENTITY, LOCK, PROBLEMS, SAMPLES, TRACES, read_jsonl

COMPARED = (PROBLEMS, SAMPLES, TRACES)  # timings never repeat exactly; derived files are re-derived


@dataclass(frozen=True)
class Copy:
    """One input's copy of a run: its folder, identity and done problems' records."""

    path: Path
    identity: dict[str, Any]
    records: dict[str, dict[str, list[str]]]  # file -> problem id -> its lines, as written

    @property
    def done(self) -> set[str]:
        return set(self.records[PROBLEMS])


def _read_identity(folder: Path) -> dict[str, Any]:
    try:
        identity = json.loads((folder / IDENTITY).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{folder / IDENTITY} cannot be read ({exc}); remove the folder or restore the file"
        ) from None
    if not isinstance(identity, dict):
        raise UserError(f"{folder / IDENTITY} is not a JSON object; remove the folder or restore the file")
    return identity


def _held_by_another(folder: Path) -> bool:
    """Whether a running tsbench process holds the folder's lock (it is being written)."""
    lock = folder / LOCK
    if not lock.exists() or str(folder.resolve()) in records.HELD_BY_THIS_PROCESS:
        return False
    with lock.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _records(folder: Path) -> dict[str, dict[str, list[str]]]:
    """Lines of done problems, by file and problem id (lines of problems a crash cut are left out)."""
    done = {row["problem_id"] for row in read_jsonl(folder / PROBLEMS)}
    found: dict[str, dict[str, list[str]]] = {}
    for name in COMPARED:
        by_problem: dict[str, list[str]] = {}
        for row in read_jsonl(folder / name):
            if row.get("problem_id") in done:
                by_problem.setdefault(row["problem_id"], []).append(json.dumps(row, sort_keys=True))
        found[name] = by_problem
    return found


def run_folders(root: Path) -> list[Path]:
    """The run folders of a results folder (or the folder itself, if it is one run)."""
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; give results folders (folders of run folders)")
    if (root / IDENTITY).exists():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / IDENTITY).exists())


def read_copy(folder: Path) -> Copy:
    identity = _read_identity(folder)
    if _held_by_another(folder):
        raise UserError(f"run folder {folder} is being written by a running tsbench; wait for it to finish")
    return Copy(folder, identity, _records(folder))


def choose(name: str, copies: list[Copy]) -> Copy:
    """The copy of run `name` to keep: the one holding the most problems, once all agree.

    Raises:
        UserError: identities differ, copies disagree on a problem, or neither holds the other's.
    """
    true = [c for c in copies if run_id(c.identity) == name]
    for copy in copies:
        if run_id(copy.identity) == name:
            continue
        if true:
            differ = changes(true[0].identity, copy.identity)
            raise UserError(
                f"run {name} conflicts: {true[0].path} and {copy.path} have different identities "
                f"({differ[0] if differ else 'identity'}); the second was edited or is another run renamed, "
                "so leave it out"
            )
        raise UserError(
            f"run folder {copy.path} is named {name} but its identity hashes to {run_id(copy.identity)}: it was "
            f"renamed or its identity.json edited; rename it to {run_id(copy.identity)} or leave it out"
        )
    fullest = max(copies, key=lambda c: len(c.done))
    for other in copies:
        if not other.done <= fullest.done:
            raise UserError(
                f"run {name}: {fullest.path} and {other.path} each hold problems the other lacks; resume "
                f"one with `tsbench run -c {fullest.path / 'spec.yaml'} --output {fullest.path}` and merge again"
            )
        for file in COMPARED:
            for problem in sorted(other.done):
                if other.records[file].get(problem, []) != fullest.records[file].get(problem, []):
                    raise UserError(
                        f"run {name} conflicts: {fullest.path} and {other.path} hold different {file} lines "
                        f"for problem {problem} (the engine was not deterministic, or a file was edited); "
                        "keep one of them"
                    )
    return fullest


def _copy_run(source: Path, target: Path) -> None:
    def skipped(_: str, names: list[str]) -> list[str]:
        return [n for n in names if n == LOCK or (n.startswith(".") and n.endswith(".tmp"))]

    shutil.copytree(source, target, ignore=skipped)


def merge(inputs: list[Path], output: Path) -> dict[str, int]:
    """Join the inputs' run folders (and OUT's own, if it exists) into OUT.

    Returns:
        counts: folders read, runs written, runs found in one place, runs found in several.
    """
    if not inputs:
        raise UserError("tsbench merge needs at least one results folder to read")
    sources = [*([output] if output.exists() else []), *inputs]
    found: dict[str, list[Copy]] = {}
    for root in sources:
        folders = run_folders(root)
        if not folders and root != output:
            raise UserError(f"{root} holds no run folder (no */identity.json); give a results folder")
        for folder in folders:
            found.setdefault(folder.name, []).append(read_copy(folder))
    chosen = {name: choose(name, copies) for name, copies in sorted(found.items())}
    staging = output.with_name(f".{output.name}.merging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        if output.is_dir() and not (output / IDENTITY).exists():
            for extra in output.iterdir():  # OUT's own files and other folders stay (README.md, ...)
                if extra.name.startswith(".") or extra.name in chosen:
                    continue
                if extra.is_dir():
                    shutil.copytree(extra, staging / extra.name, symlinks=True)
                else:
                    shutil.copy2(extra, staging / extra.name)
        for name, copy in chosen.items():
            _copy_run(copy.path, staging / name)
        previous = output.with_name(f".{output.name}.before-merge-{os.getpid()}")
        if output.exists():
            os.replace(output, previous)
        os.replace(staging, output)
        shutil.rmtree(previous, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"cannot write {output} ({exc.strerror}); pass a writable -o") from None
    several = sum(1 for copies in found.values() if len(copies) > 1)
    return {"folders": len(sources), "runs": len(chosen), "once": len(chosen) - several, "several": several}


def cmd_merge(args: argparse.Namespace) -> int:
    output = Path(args.output)
    inputs = [Path(p) for p in args.folders]
    if any(p.resolve() == output.resolve() for p in inputs):
        raise UserError(f"{output} is both an input and -o; OUT's own runs are always kept, so drop it")
    counts = merge(inputs, output)
    print(
        f"merged {counts['folders']} folders: {counts['runs']} runs ({counts['once']} from one place, "
        f"{counts['several']} found in several and taken once), into {output}"
    )
    return 0


def add_merge_parser(sub: Any) -> None:
    merger = sub.add_parser(
        "merge", help="join results folders from several machines into one, refusing conflicting runs"
    )
    merger.add_argument("folders", nargs="+", help="results folders (folders of run folders), or run folders")
    merger.add_argument("-o", "--output", required=True, help="the joined results folder (kept runs stay)")
    merger.set_defaults(func=cmd_merge)
