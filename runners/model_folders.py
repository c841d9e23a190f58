"""Model folders for the vLLM and SGLang runners: neither reads a GGUF on the CPU, so a GGUF (the
embedded default included) runs from the plain model folder the hf runner writes once under the
cache (runners/hf_loading.py), beside a small folder of links whose config names the
architecture, which those engines need and a GGUF-derived config lacks.
"""

from __future__ import annotations

import json
import os
import struct
from math import prod
from pathlib import Path
from typing import Any

from tsbench.contracts import GenerationRequest, Message
from tsbench.errors import UserError
from tsbench.provenance import file_sha256

from .chat import prompt_text, render
from .embedded import EMBEDDED_ID, embedded_gguf
from .hf_loading import cache_root, cached_gguf, read_gguf, save_gguf_cache

TIED_FILE = "tied-aliases.safetensors"


def _folder_from_gguf(path: Path, sha256: str) -> Path:
    """The dequantized copy of a GGUF as a plain model folder, written once (see runners/hf.py)."""
    cached = cached_gguf(sha256)
    if cached is not None:
        return cached
    import torch

    save_gguf_cache(path, sha256, read_gguf(torch, path))
    cached = cached_gguf(sha256)
    if cached is None:
        raise UserError(
            f"the converted copy of {path} could not be written under {cache_root()}; "
            "set TSBENCH_CACHE to a writable folder"
        )
    return cached


def _engine_folder(folder: Path, sha256: str) -> Path:
    """Links to a converted GGUF's files, plus what vLLM needs that the conversion lacks.

    transformers leaves `architectures` empty on a GGUF-loaded config, and vLLM picks its model
    class from it; older transformers (as vLLM may pin) read `rope_theta`, not `rope_parameters`.
    safetensors stores a tied tensor once, under one name (SmolLM2: `lm_head.weight`, with
    `model.embed_tokens.weight` only an alias in the header's metadata); vLLM loads by name and
    would leave the embedding unloaded, so the aliases get a small file of their own.
    """
    config = json.loads((folder / "config.json").read_text())
    if config.get("architectures"):
        return folder
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architecture = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.get("model_type", ""))
    if architecture is None:
        raise UserError(f"model type {config.get('model_type')!r} of {folder} is not a causal LM")
    config["architectures"] = [architecture]
    rope = config.get("rope_parameters") or {}
    if "rope_theta" not in config and "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    target = cache_root() / "engine-gguf" / sha256[:24]
    target.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        link = target / item.name
        if item.name != "config.json" and not link.exists():
            link.symlink_to(item)
    _write_aliases(folder, target / TIED_FILE)
    staging = target / ".config.json.tmp"
    staging.write_text(json.dumps(config, indent=1))
    os.replace(staging, target / "config.json")  # written last: its presence marks the folder done
    return target


def _safetensors_header(file: Path) -> dict[str, Any]:
    with file.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header: dict[str, Any] = json.loads(handle.read(length))
    return header


def _write_aliases(folder: Path, target: Path) -> None:
    """Write the tensors that a folder's safetensors files hold only as aliases, under their names."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    stored: dict[str, Path] = {}
    aliases: dict[str, str] = {}
    for file in sorted(folder.glob("*.safetensors")):
        header = _safetensors_header(file)
        stored.update({name: file for name in header if name != "__metadata__"})
        aliases.update((header.get("__metadata__") or {}).items())
    missing = {alias: name for alias, name in aliases.items() if alias not in stored and name in stored}
    if not missing or target.exists():
        return
    tensors = {}
    for alias, name in missing.items():
        with safe_open(str(stored[name]), framework="numpy") as handle:
            tensors[alias] = handle.get_tensor(name)
    staging = target.with_name(".staging-" + target.name)
    save_file(tensors, str(staging), metadata={"tsbench": "aliases of tied tensors, see runners/vllm.py"})
    os.replace(staging, target)


def model_folder(model: str | None) -> tuple[Path, str, str | None]:
    """(model folder an engine can load, model id, sha256 of the GGUF it came from or None).

    Args:
        model: None for the embedded GGUF; a .gguf file (converted once); a local model folder.
    """
    if model is None:
        path, model_id = embedded_gguf(), EMBEDDED_ID
    else:
        path = Path(model).expanduser()
        model_id = path.name
        if not path.exists():
            raise UserError(
                f"model {model} does not exist; pass a local model folder or .gguf file (nothing is downloaded)"
            )
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise UserError(f"model folder {path} holds no config.json; pass a model folder")
            return path, model_id, None
        if path.suffix != ".gguf":
            raise UserError(f"model {model} is neither a .gguf file nor a model folder; pass one of those")
    sha256 = file_sha256(str(path))
    return _engine_folder(_folder_from_gguf(path, sha256), sha256), model_id, sha256


def folder_parameters(folder: Path) -> int:
    """Parameters stored in a folder's safetensors files, read from their headers alone.

    A tied tensor counts once: names that any file's metadata declares aliases are skipped.
    """
    headers = [_safetensors_header(file) for file in sorted(folder.glob("*.safetensors"))]
    aliases = {alias for header in headers for alias in (header.get("__metadata__") or {})}
    return sum(
        prod(entry["shape"])
        for header in headers
        for name, entry in header.items()
        if name != "__metadata__" and name not in aliases
    )


def _chat(tokenizer: Any, messages: list[Message], options: dict[str, Any]) -> str:
    """The tokenizer's chat template (ChatML where it has none) with the template options."""
    if not getattr(tokenizer, "chat_template", None):
        return render(None, messages, options=options)
    return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **options))


def chat_prompt_ids(tokenizer: Any, request: GenerationRequest) -> list[int]:
    """A request's prompt as token ids: the chat template's assistant opening plus the continuation
    (or the plain prompt, for template=False).

    Rendering to text and appending the continuation there (rather than sending an assistant
    message) keeps the partial answer open, exactly as the llama.cpp and hf runners do.
    """
    text = prompt_text(request, lambda messages, options: _chat(tokenizer, messages, options))
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    bos_id, bos_text = tokenizer.bos_token_id, tokenizer.bos_token or ""
    if bos_id is not None and not (bos_text and text.startswith(bos_text)):
        plain = tokenizer("a", add_special_tokens=True).input_ids
        if plain and plain[0] == bos_id:  # the tokenizer adds a BOS that the rendered text lacks
            ids.insert(0, int(bos_id))
    return ids
