"""A run's folder: append-only JSONL records that survive a crash, and final files written last.

Layout of results/<run-id>/:
  spec.yaml          the resolved spec (its hash is the run id)
  samples.jsonl      one line per sample: prompt, text, answer, grade, tokens, seed, finish reason
  problems.jsonl     one line per problem: score and spend per strategy x budget
  timings.jsonl      wall-clock per sample and per problem (kept apart: timings never repeat exactly)
  traces.jsonl       search strategies' trees, one line per problem x strategy x budget
  metrics.json       accuracy with 95% CI and compute per strategy x budget (written at the end)
  performance.json   tokens/s and latency percentiles (written at the end)
  provenance.json    versions, hashes, hardware

A problem counts as done once its problems.jsonl line is on disk; samples and timings are written
before it, so after a crash the lines of unfinished problems are dropped and generated again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tsbench.errors import UserError

SAMPLES, PROBLEMS, TIMINGS, TRACES = "samples.jsonl", "problems.jsonl", "timings.jsonl", "traces.jsonl"
METRICS, PERFORMANCE, PROVENANCE, SPEC = "metrics.json", "performance.json", "provenance.json", "spec.yaml"


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
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class RunFolder:
    """Records of one run, resumable after an interruption."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, path: Path, spec_yaml: str) -> RunFolder:
        """Create the folder, or reopen it for the same spec and drop unfinished problems' lines."""
        folder = cls(path)
        spec_file = path / SPEC
        if spec_file.exists():
            if spec_file.read_text(encoding="utf-8") != spec_yaml:
                raise UserError(
                    f"output folder {path} holds a run of a different spec ({spec_file}); "
                    f"pass another --output or delete that folder"
                )
        elif path.exists() and any(path.iterdir()):
            raise UserError(f"output folder {path} exists and is not a tsbench run; pass another --output")
        path.mkdir(parents=True, exist_ok=True)
        if not spec_file.exists():
            write_atomic(spec_file, spec_yaml)
        folder._drop_unfinished()
        return folder

    @property
    def complete(self) -> bool:
        return (self.path / METRICS).exists()

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
        with (self.path / name).open("a", encoding="utf-8") as handle:
            handle.write("".join(dumps(r) + "\n" for r in records))
            handle.flush()
            os.fsync(handle.fileno())

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

    def problems(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / PROBLEMS))

    def samples(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / SAMPLES))

    def timings(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / TIMINGS))

    def write_json(self, name: str, data: Any) -> None:
        write_atomic(self.path / name, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text(encoding="utf-8"))

    def remove_if_empty(self) -> None:
        """Leave nothing behind when a run fails before finishing a single problem."""
        if not self.done_ids():
            shutil.rmtree(self.path, ignore_errors=True)
