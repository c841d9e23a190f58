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
    lines: tuple[int, ...] = ()  # each row's line in a JSONL file (1-based), for error messages

    def where(self, index: int) -> str:
        """'line N of FILE' (JSONL) or 'row N of FILE', for a message about row `index`."""
        if index < len(self.lines):
            return f"line {self.lines[index]} of {self.origin}"
        return f"row {index} of {self.origin}"


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
    try:
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError) as exc:
        raise UserError(
            f"task {task}: {path} is not a readable gzip file ({exc}); replace it with the original"
        ) from None
    text = _text(task, path, data)
    lines: list[int] = []
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):  # CRLF and a trailing blank line are fine
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"task {task}: line {number} of {path} is not JSON ({exc.msg} at column {exc.colno}: "
                    f"{line.strip()[:40]!r}); fix or delete that line"
                ) from None
            lines.append(number)
    else:
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"task {task}: {path} is not valid JSON ({exc}); replace it with the original file"
            ) from None
        rows = (
            loaded
            if isinstance(loaded, list)
            else list(loaded.values())
            if isinstance(loaded, dict)
            else [loaded]
        )
    found = LoadedRows(rows, hashlib.sha256(raw).hexdigest(), str(path), tuple(lines))
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UserError(
                f"task {task}: {found.where(index)} is {type(row).__name__} {json.dumps(row)[:40]}, not an "
                'object with named fields; make each row a JSON object like {"question": ..., "answer": ...}'
            )
    return found


def _text(task: str, path: Path, data: bytes) -> str:
    """A data file's text: UTF-8, with or without a byte-order mark; anything else is refused
    with the line it fails on and how to convert the file."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError(
            f"task {task}: {path} is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8, "
            f"e.g. iconv -f UTF-16 -t UTF-8 {path.name} > utf8-{path.name}"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(
            f"task {task}: line {line} of {path} is not UTF-8 (byte 0x{data[exc.start]:02x}); save the file "
            f"as UTF-8, e.g. iconv -f latin1 -t UTF-8 {path.name} > utf8-{path.name} if it is Latin-1"
        ) from None


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
