"""Where a run's numbers came from: versions, file hashes, hardware."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from tsbench import __version__
from tsbench.contracts import RunnerInfo

_HASH_CACHE = Path(os.environ.get("TSBENCH_CACHE", Path.home() / ".cache" / "tsbench")) / "sha256.json"


def file_sha256(path: str) -> str:
    """sha256 of a file, cached by (path, size, mtime) since model files run to gigabytes."""
    stat = os.stat(path)
    key = f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"
    try:
        cache = json.loads(_HASH_CACHE.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        cache[key] = digest.hexdigest()
        try:
            _HASH_CACHE.parent.mkdir(parents=True, exist_ok=True)
            _HASH_CACHE.write_text(json.dumps(cache))
        except OSError:
            pass  # a read-only home only costs a re-hash next time
    return str(cache[key])


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def collect(runner: RunnerInfo, data_sha256: str | None, data_origin: str) -> dict[str, Any]:
    """Where and with what a run's samples were first generated; written once, when its folder is
    created (a resumed run adds a line to sessions.jsonl instead)."""
    return {
        "tsbench": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus(),
        "engine": runner.engine,
        "engine_version": runner.engine_version,
        "device": runner.device,
        "model": runner.model_id,
        "model_parameters": runner.parameters,
        "model_sha256": runner.model_sha256,
        "data_sha256": data_sha256,
        "data_origin": data_origin,
        "dtype": runner.dtype,
        "packages": {
            p: package_version(p) for p in ("numpy", "llama-cpp-python", "transformers", "torch", "vllm")
        },
    }


def session(runner: RunnerInfo, spec: Any, done: int) -> dict[str, Any]:
    """One session that generates into a run folder: the machine, tsbench and the settings that
    change how fast it goes, never what it produces (a resumed run may run elsewhere)."""
    from datetime import datetime, timezone

    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tsbench": __version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "gpus": gpus(),
        "device": runner.device,
        "problems_already_done": done,
        "settings": {name: getattr(spec, name) for name in ("output", "data_dir", "threads")},
    }
