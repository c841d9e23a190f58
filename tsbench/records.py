"""A run's folder: append-only JSONL records that survive a crash, and final files written last.

Layout of results/<run-id>/ (the run id is a hash of identity.json):
  identity.json      everything that determines the samples (tsbench.identity); written once
  spec.yaml          the resolved spec
  arms.json          the strategy x verifier arms and which of them are oracles; written once
  provenance.json    versions, hashes and hardware of the session that created the run; written once
  sessions.jsonl     one line per session that generated into the folder (machine, version, threads)
  samples.jsonl      as generated, one line per sample: prompt, text, tokens, seed, stop reason,
                     verifier scores and spend
  problems.jsonl     as generated, one line per problem: reference, prompt, search attempts
  timings.jsonl      wall-clock per sample and per problem (kept apart: timings never repeat exactly)
  traces.jsonl       search strategies' trees, one line per problem x strategy x budget
Derived from those by the scoring code, rewritten whenever it re-scores:
  grades.jsonl       per sample: extracted answer, canonical form, grade and how it was reached
  scores.jsonl       per problem x strategy x budget: accuracy, samples, spend, fallback
  metrics.json       accuracy with 95% CI and compute per strategy x budget, and the scoring
                     identity it was computed with; its presence marks the run complete
  performance.json   tokens/s and latency percentiles
Kept by the folder itself:
  status.json        whether every problem of the run is done (complete), and how many are
  .lock              held (fcntl.flock) by the one process writing the folder; holds its pid

A problem counts as done once its problems.jsonl line is on disk; samples and timings are written
before it, so after a crash the lines of unfinished problems are dropped and generated again.
Whole files are written to a temporary file, fsynced and renamed over the old one; JSONL files are
appended and fsynced, and a last line cut off by a crash is ignored and dropped on reopening.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tsbench.errors import UserError

SAMPLES, PROBLEMS, TIMINGS, TRACES = "samples.jsonl", "problems.jsonl", "timings.jsonl", "traces.jsonl"
METRICS, PERFORMANCE, PROVENANCE, SPEC = "metrics.json", "performance.json", "provenance.json", "spec.yaml"
IDENTITY, SESSIONS, GRADES, SCORES = "identity.json", "sessions.jsonl", "grades.jsonl", "scores.jsonl"
ARMS, STATUS, LOCK = "arms.json", "status.json", ".lock"
FULL = (errno.ENOSPC, errno.EDQUOT)
# Folder -> descriptor of its lock file, for the process's lifetime: the lock keeps other
# processes out, while this one may reopen a folder it holds (tests, re-scoring after a run).
_HELD: dict[str, int] = {}
HELD_BY_THIS_PROCESS = _HELD


def dumps(record: Any) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Complete lines only: a trailing line cut off by a crash is skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                return
            yield json.loads(line)


def write_atomic(path: Path, text: str) -> None:
    """Write, fsync, rename: a crash leaves the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, exc) from None
    _sync_folder(path.parent)


def _sync_folder(path: Path) -> None:
    """fsync a folder, so that a rename in it survives a power cut."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_error(path: Path, exc: OSError) -> Exception:
    """A full disk or a folder that refuses writes is the user's to fix: one line; others stay."""
    if exc.errno in FULL:
        return UserError(
            f"disk full writing {path}; free space on that disk (or pass another --output) and run the "
            "same command again to resume"
        )
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return UserError(f"cannot write {path} ({exc.strerror}); pass a writable --output")
    return exc


def _folder_error(path: Path, exc: OSError) -> UserError:
    if isinstance(exc, (NotADirectoryError, FileExistsError)):
        return UserError(f"output folder {path}: a file is in the way ({exc}); pass another --output")
    found = _write_error(path, exc)
    return (
        found
        if isinstance(found, UserError)
        else UserError(f"output folder {path}: {exc}; pass another --output")
    )


class RunFolder:
    """Records of one run, resumable after an interruption."""

    def __init__(self, path: Path, total: int | None = None) -> None:
        self.path = path
        self.total = total

    @classmethod
    def open(
        cls, path: Path, spec_yaml: str, identity: dict[str, Any], total: int | None = None
    ) -> RunFolder:
        """Create the folder, or reopen it for the same sample identity and drop unfinished problems'
        lines. A folder whose samples came from anything else is refused, naming what changed, and
        so is one another process is writing (its lock is held until that process ends).

        Args:
            total: the run's number of problems; status.json says complete once all are done.
        """
        folder = cls(path, total)
        if path.exists() and not path.is_dir():
            raise UserError(f"output folder {path} is a file; pass another --output")
        folder._check_identity(identity)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _folder_error(path, exc) from None
        folder.lock()
        folder._check_identity(identity)  # again, now that no other process can be writing it
        if not (path / IDENTITY).exists():
            write_atomic(path / SPEC, spec_yaml)
            folder.write_json(IDENTITY, identity)
        folder._drop_unfinished()
        folder._write_status()
        return folder

    def _check_identity(self, identity: dict[str, Any]) -> None:
        from tsbench.identity import changes

        identity_file = self.path / IDENTITY
        if identity_file.exists():
            try:
                held = json.loads(identity_file.read_text(encoding="utf-8"))
            except ValueError:
                raise UserError(
                    f"output folder {self.path}: {IDENTITY} is not valid JSON; delete that folder or pass another --output"
                ) from None
            if held != identity:
                changed = changes(held, identity)
                raise UserError(
                    f"output folder {self.path} holds samples generated under another identity "
                    f"({'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}); "
                    "pass another --output or delete that folder"
                )
        elif self.path.is_dir() and any(p.name != LOCK for p in self.path.iterdir()):
            raise UserError(
                f"output folder {self.path} exists and is not a tsbench run; pass another --output"
            )

    def lock(self) -> None:
        """Hold the folder's lock for as long as this process lives; refuse if another holds it."""
        if str(self.path.resolve()) in _HELD:
            return
        file = self.path / LOCK
        try:
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _folder_error(self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"output folder {self.path} is being written by another tsbench run (pid {holder}); "
                "wait for it to finish, or pass another --output"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[str(self.path.resolve())] = fd

    def unlock(self) -> None:
        fd = _HELD.pop(str(self.path.resolve()), None)
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    @property
    def complete(self) -> bool:
        """Every problem is done: status.json says so (folders from before it: metrics.json exists)."""
        status = self.path / STATUS
        if status.exists():
            try:
                return bool(json.loads(status.read_text(encoding="utf-8")).get("complete"))
            except ValueError:
                return False
        return (self.path / METRICS).exists()

    def _write_status(self) -> None:
        if self.total is None:
            return
        done = len(self.done_ids())
        self.write_json(
            STATUS, {"complete": done >= self.total, "problems_done": done, "problems_total": self.total}
        )

    def done_ids(self) -> set[str]:
        return {r["problem_id"] for r in read_jsonl(self.path / PROBLEMS)}

    def _drop_unfinished(self) -> None:
        done = self.done_ids()
        for name in (PROBLEMS, SAMPLES, TIMINGS, TRACES):
            file = self.path / name
            if not file.exists():
                continue
            kept = [dumps(r) + "\n" for r in read_jsonl(file) if r["problem_id"] in done]
            if "".join(kept) != file.read_text(encoding="utf-8"):
                write_atomic(file, "".join(kept))

    def _append(self, name: str, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(dumps(r) + "\n" for r in records)
        if not text:
            return
        try:
            with (self.path / name).open("a", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise _write_error(self.path / name, exc) from None

    def commit(
        self,
        problems: list[dict[str, Any]],
        samples: list[dict[str, Any]],
        timings: list[dict[str, Any]],
        traces: list[dict[str, Any]] | None = None,
    ) -> None:
        """Append finished problems; their problems.jsonl lines go last, as the commit mark."""
        self._append(SAMPLES, samples)
        self._append(TIMINGS, timings)
        if traces:
            self._append(TRACES, traces)
        self._append(PROBLEMS, problems)
        self._write_status()

    def problems(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / PROBLEMS))

    def samples(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / SAMPLES))

    def timings(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / TIMINGS))

    def rewrite_jsonl(self, name: str, records: Iterable[dict[str, Any]]) -> None:
        """Replace a derived file whole (grades, scores): a crash leaves the old one or the new."""
        write_atomic(self.path / name, "".join(dumps(r) + "\n" for r in records))

    def append(self, name: str, records: Iterable[dict[str, Any]]) -> None:
        self._append(name, records)

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / name))

    def write_json(self, name: str, data: Any) -> None:
        write_atomic(self.path / name, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text(encoding="utf-8"))

    def remove_if_empty(self) -> None:
        """Leave nothing behind when a run fails before finishing a single problem."""
        if not self.done_ids() and not (self.path / METRICS).exists():
            self.unlock()
            shutil.rmtree(self.path, ignore_errors=True)
