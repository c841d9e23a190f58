"""Finding finished run folders under results/ and reading what the site shows of them.

The site reads a run's stored records as they are (metrics.json says which scoring code made
them); it never generates, and never rewrites anything in results/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tsbench.errors import UserError
from tsbench.records import (
    ARMS,
    GRADES,
    IDENTITY,
    METRICS,
    PERFORMANCE,
    PROBLEMS,
    PROVENANCE,
    SAMPLES,
    SCORES,
    SPEC,
    TRACES,
    read_jsonl,
)


@dataclass
class Run:
    """One finished run folder, as the site shows it.

    Attributes:
        path: the run folder.
        name: its name under results/ (relative path, '/'-separated).
        slug: the file-safe name of its pages.
        task: the task's name; the index groups runs by it.
        spec: spec.yaml's fields; spec_text: the file as written.
        identity, provenance, metrics, performance, arms: the folder's JSON files ({} when absent).
    """

    path: Path
    name: str
    slug: str
    task: str
    spec: dict[str, Any]
    spec_text: str
    identity: dict[str, Any]
    provenance: dict[str, Any]
    metrics: dict[str, Any]
    performance: dict[str, Any]
    arms: list[dict[str, Any]] = field(default_factory=list)

    @property
    def model(self) -> str:
        return str(self.identity.get("model_id") or self.provenance.get("model") or self.spec.get("model"))

    @property
    def engine(self) -> str:
        runner = self.spec.get("runner") or "?"
        engine = self.identity.get("engine_version") or self.identity.get("engine") or ""
        return f"{runner} ({engine})" if engine else str(runner)

    @property
    def task_label(self) -> str:
        options = self.spec.get("task_options") or {}
        shown = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
        return f"{self.task} [{shown}]" if shown else self.task

    def per_problem(self) -> dict[tuple[str, int], dict[str, float]]:
        """(arm key, level) -> problem id -> accuracy, from scores.jsonl (for paired tests)."""
        out: dict[tuple[str, int], dict[str, float]] = {}
        for record in read_jsonl(self.path / SCORES):
            key = (str(record["arm"]), int(record["level"]))
            out.setdefault(key, {})[str(record["problem_id"])] = float(record["accuracy"])
        return out

    def problems(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / PROBLEMS))

    def samples(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / SAMPLES))

    def grades(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / GRADES))

    def scores(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / SCORES))

    def traces(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / TRACES))


def _json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path}: not valid JSON ({exc}); restore it or run `tsbench report {path.parent}` to rewrite it"
        ) from exc


def load_run(path: Path, name: str, slug: str) -> Run:
    """Read one finished run folder (one with metrics.json)."""
    spec_path = path / SPEC
    spec_text = spec_path.read_text(encoding="utf-8") if spec_path.exists() else ""
    try:
        spec = yaml.safe_load(spec_text) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{spec_path}: not valid YAML ({exc}); restore the run's spec.yaml") from exc
    if not isinstance(spec, dict):
        raise UserError(f"{spec_path}: expected a mapping of spec fields, got {type(spec).__name__}")
    metrics = _json(path / METRICS, {})
    if not isinstance(metrics, dict) or not isinstance(metrics.get("rows"), list):
        raise UserError(f"{path / METRICS}: no 'rows' list; run `tsbench report {path}` to rewrite it")
    return Run(
        path=path,
        name=name,
        slug=slug,
        task=str(spec.get("task") or "unknown"),
        spec=spec,
        spec_text=spec_text,
        identity=_json(path / IDENTITY, {}),
        provenance=_json(path / PROVENANCE, {}),
        metrics=metrics,
        performance=_json(path / PERFORMANCE, {}),
        arms=_json(path / ARMS, []),
    )


def find_runs(results: Path) -> tuple[list[Path], list[Path]]:
    """Finished and unfinished run folders under results/ (any depth), sorted by path.

    A run folder holds arms.json; it is finished once metrics.json is written.

    Raises:
        UserError: when results/ is not a folder.
    """
    if not results.is_dir():
        raise UserError(f"{results}: no such folder; give the folder that holds run folders (e.g. results/)")
    folders = sorted(p.parent for p in results.rglob(ARMS))
    finished = [p for p in folders if (p / METRICS).exists()]
    return finished, [p for p in folders if not (p / METRICS).exists()]
