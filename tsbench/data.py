"""Loads a task's rows from a local data folder or, when online, from the HuggingFace hub."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsbench.errors import UserError

DATA_DIR_ENV = "TSBENCH_DATA_DIR"


@dataclass(frozen=True)
class DataSource:
    """Where a task's rows live.

    Args:
        local: path of the file inside a data folder, e.g. 'gsm8k/test.jsonl'.
        hub_path: dataset id on the HuggingFace hub, e.g. 'openai/gsm8k'.
        hub_name: dataset config name, if any.
        hub_split: split to read.
    """

    local: str
    hub_path: str | None = None
    hub_name: str | None = None
    hub_split: str = "test"


@dataclass(frozen=True)
class LoadedRows:
    rows: list[dict[str, Any]]
    sha256: str
    origin: str


def resolve_data_dir(option: str | None) -> str | None:
    return option or os.environ.get(DATA_DIR_ENV) or None


def load_rows(task: str, source: DataSource, data_dir: str | None) -> LoadedRows:
    """Rows from `data_dir/source.local` if a data folder is set, else from the hub."""
    folder = resolve_data_dir(data_dir)
    if folder is not None:
        return _load_local(task, source, Path(folder))
    return _load_hub(task, source)


def _load_local(task: str, source: DataSource, folder: Path) -> LoadedRows:
    path = folder / source.local
    if not folder.is_dir():
        raise UserError(
            f"task {task}: data folder {folder} does not exist; pass --data-dir (or set {DATA_DIR_ENV}) "
            f"to a folder holding {source.local}"
        )
    if not path.is_file():
        raise UserError(
            f"task {task}: data folder {folder} has no {source.local}; put the file there "
            f"(layout: <data-dir>/{source.local}) or point --data-dir/{DATA_DIR_ENV} elsewhere"
        )
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if path.suffix == ".gz" else raw.decode()
    try:
        if path.name.endswith((".jsonl", ".jsonl.gz")):
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            loaded = json.loads(text)
            rows = loaded if isinstance(loaded, list) else list(loaded.values())
    except json.JSONDecodeError as exc:
        raise UserError(
            f"task {task}: {path} is not valid JSON ({exc}); replace it with the original file"
        ) from None
    return LoadedRows(rows, hashlib.sha256(raw).hexdigest(), str(path))


def _load_hub(task: str, source: DataSource) -> LoadedRows:
    fix = (
        f"pass --data-dir DIR (or set {DATA_DIR_ENV}=DIR) with {source.local} inside, "
        f"or install tsbench[hub] and go online to load {source.hub_path} from the HuggingFace hub"
    )
    if source.hub_path is None:
        raise UserError(f"task {task}: no data folder given and the task has no hub dataset; {fix}")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"task {task}: no data folder given and HF_HUB_OFFLINE=1; {fix}")
    try:
        import datasets
    except ImportError:
        raise UserError(f"task {task}: no data folder given and `datasets` is not installed; {fix}") from None
    try:
        dataset = datasets.load_dataset(source.hub_path, source.hub_name, split=source.hub_split)
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"task {task}: could not load {source.hub_path} from the hub ({first_line}); {fix}"
        ) from None
    rows = [dict(row) for row in dataset]
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    return LoadedRows(rows, digest, f"hub:{source.hub_path}/{source.hub_split}")
