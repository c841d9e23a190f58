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
IDENTITY, SESSIONS, GRADES, SCORES = "identity.json", "sessions.jsonl", "grades.jsonl", "scores.jsonl"
ARMS = "arms.json"


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
    def open(cls, path: Path, spec_yaml: str, identity: dict[str, Any]) -> RunFolder:
        """Create the folder, or reopen it for the same sample identity and drop unfinished problems'
        lines. A folder whose samples came from anything else is refused, naming what changed."""
        from tsbench.identity import changes

        folder = cls(path)
        identity_file = path / IDENTITY
        if identity_file.exists():
            held = json.loads(identity_file.read_text(encoding="utf-8"))
            if held != identity:
                changed = changes(held, identity)
                raise UserError(
                    f"output folder {path} holds samples generated under another identity "
                    f"({'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}); "
                    "pass another --output or delete that folder"
                )
        elif path.exists() and any(path.iterdir()):
            raise UserError(f"output folder {path} exists and is not a tsbench run; pass another --output")
        path.mkdir(parents=True, exist_ok=True)
        if not identity_file.exists():
            write_atomic(path / SPEC, spec_yaml)
            folder.write_json(IDENTITY, identity)
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
            shutil.rmtree(self.path, ignore_errors=True)
