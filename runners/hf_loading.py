"""Loading a transformers model and tokenizer for the hf runner: model folders, GGUF files
(dequantized once, cached as safetensors), random weights in public shapes, and the token ids the
decode loop needs (EOS, padding, BOS)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, NamedTuple

from tsbench.errors import UserError
from tsbench.provenance import file_sha256

from .embedded import EMBEDDED_ID, embedded_gguf

# Shapes of public Llama 3 checkpoints, for throughput checks with random weights (nothing is
# downloaded). RoPE scaling is left out: it changes no kernel shape and so no timing.
_LLAMA3: dict[str, Any] = {
    "vocab_size": 128256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "max_position_embeddings": 131072,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "hidden_act": "silu",
}
DUMMY_CONFIGS: dict[str, dict[str, Any]] = {
    # meta-llama/Llama-3.2-1B-Instruct
    "llama-1b": {
        **_LLAMA3,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "tie_word_embeddings": True,
    },
    # meta-llama/Llama-3.1-8B-Instruct
    "llama-8b": {
        **_LLAMA3,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "tie_word_embeddings": False,
    },
}

# End-of-turn tokens of common chat formats. A model's generation config often names only one of
# them, yet a chat model ends its turn with another; llama.cpp stops on all of them likewise.
END_MARKERS = (
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|eom_id|>",
    "<end_of_turn>",
    "<|end|>",
)

DTYPES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "fp32": "float32",
    "float32": "float32",
}

SAMPLERS = ("numpy", "device")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def cache_root() -> Path:
    """tsbench's cache folder (TSBENCH_CACHE, else ~/.cache/tsbench), shared with the hash cache."""
    return Path(os.environ.get("TSBENCH_CACHE", Path.home() / ".cache" / "tsbench"))


def gguf_cache_folder(sha256: str) -> Path:
    return cache_root() / "hf-gguf" / sha256[:24]


def cached_gguf(sha256: str) -> Path | None:
    """The folder holding a GGUF's dequantized copy and tokenizer, if it was written completely."""
    folder = gguf_cache_folder(sha256)
    done = (folder / "model.safetensors").is_file() and (folder / "tokenizer_config.json").is_file()
    return folder if done else None


def save_gguf_cache(path: Path, sha256: str, loaded: Any) -> None:
    """Write a dequantized GGUF model and its tokenizer as a plain model folder, atomically."""
    import json
    import shutil
    import tempfile

    from safetensors.torch import save_model
    from transformers import AutoTokenizer

    folder = gguf_cache_folder(sha256)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".staging-"))
    except OSError:
        return  # a read-only cache only costs the slow load next time
    try:
        config = loaded.config.to_dict()
        config.pop("quantization_config", None)  # plain fp32 now, not a GGUF to dequantize again
        (staging / "config.json").write_text(json.dumps(config, indent=1))
        loaded.generation_config.save_pretrained(staging)
        save_model(loaded, str(staging / "model.safetensors"))
        AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(staging)
        os.replace(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


def tokenizer_from(path: Path) -> Any:
    """A tokenizer from a folder or a GGUF (its cached conversion when there is one)."""
    from transformers import AutoTokenizer

    if path.is_dir():
        return AutoTokenizer.from_pretrained(path)
    if path.suffix != ".gguf":
        raise UserError(f"tokenizer {path} is neither a folder nor a .gguf file; pass one of those")
    cached = cached_gguf(file_sha256(str(path)))
    if cached is not None:
        return AutoTokenizer.from_pretrained(cached)
    try:
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"tokenizer of {path} could not be read ({exc}); pass a valid GGUF or tokenizer folder"
        ) from None


class Loaded(NamedTuple):
    """A loaded model, the sha256 of its GGUF (None for a folder), its id, and the GGUF's path."""

    model: Any
    sha256: str | None
    model_id: str
    path: Path | None


def pick_device(torch: Any, device: str | None) -> Any:
    """The torch device asked for; default CUDA when available."""
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"device '{name}' asked for but torch {torch.__version__} sees no CUDA device; pass device='cpu'"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"device '{name}' is not a torch device; pass 'cpu', 'cuda' or 'cuda:N'") from None


def pick_dtype(torch: Any, device: Any, dtype: str | None) -> Any:
    """The torch dtype asked for; default bf16 on CUDA, fp32 on the CPU."""
    name = dtype or ("bf16" if device.type == "cuda" else "fp32")
    if name not in DTYPES:
        raise UserError(f"dtype '{name}' is unknown; pass one of {', '.join(sorted(DTYPES))}")
    return getattr(torch, DTYPES[name])


def load_model(torch: Any, model: str | None, device: Any, dtype: Any) -> Loaded:
    """A model folder, a .gguf (dequantized, cached) or, for None, the embedded GGUF."""
    from transformers import AutoModelForCausalLM

    if model is None:
        embedded = embedded_gguf()
        return Loaded(*load_gguf(torch, embedded, device, dtype), EMBEDDED_ID, embedded)
    path = Path(model).expanduser()
    if not path.exists():
        raise UserError(
            f"model {model} does not exist; pass a local model folder or .gguf file (nothing is downloaded)"
        )
    if path.is_file() and path.suffix == ".gguf":
        return Loaded(*load_gguf(torch, path, device, dtype), path.name, path)
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise UserError(
            f"model {model} is neither a .gguf file nor a folder with config.json; pass one of those"
        )
    try:
        loaded = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"model folder {path} could not be loaded by transformers ({exc}); pass a valid folder"
        ) from None
    return Loaded(loaded.to(device), None, path.name, None)


def load_gguf(torch: Any, path: Path, device: Any, dtype: Any) -> tuple[Any, str]:
    """A GGUF, dequantized by transformers; the result is cached as safetensors.

    Dequantizing the 135M embedded model takes about 15 s on two cores and reloading the cached
    copy well under 1 s, so the fp32 copy (4 bytes a parameter) is kept under cache_root(),
    keyed by the file's sha256.
    """
    from transformers import AutoModelForCausalLM

    sha256 = file_sha256(str(path))
    cached = cached_gguf(sha256)
    if cached is not None:
        loaded: Any = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
        return loaded.to(device), sha256
    loaded = read_gguf(torch, path)
    save_gguf_cache(path, sha256, loaded)
    return loaded.to(device=device, dtype=dtype), sha256


def read_gguf(torch: Any, path: Path) -> Any:
    """A GGUF dequantized to fp32 by transformers' reader; one clear line when it cannot be read."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UserError(
            f"model file {path} could not be loaded by transformers' GGUF reader ({exc}); pass a valid GGUF"
        ) from None


def random_model(torch: Any, model: str | None, device: Any, dtype: Any) -> tuple[Any, str]:
    """An architecture (a DUMMY_CONFIGS name or a folder with config.json) with random weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if model in DUMMY_CONFIGS:
        config = AutoConfig.for_model("llama", **DUMMY_CONFIGS[model])
        name = model
    else:
        folder = Path(model or "").expanduser()
        if not (model and (folder / "config.json").is_file()):
            raise UserError(
                f"dummy_weights needs a folder with config.json or one of "
                f"{', '.join(DUMMY_CONFIGS)}; got {model!r}"
            )
        config = AutoConfig.from_pretrained(folder)
        name = folder.name
    # Built in place on the target device: an 8B model initialised on the CPU in fp32 would take
    # 32 GB and minutes.
    with torch.device(device):
        built = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return built, f"{name} (random weights)"


def load_tokenizer(tokenizer: str | None, model: str | None, path: Path | None, dummy_weights: bool) -> Any:
    """The tokenizer asked for, else the GGUF's (path), else the model folder's."""
    from transformers import AutoTokenizer

    if tokenizer is not None:
        path = Path(tokenizer).expanduser()
        if not path.exists():
            raise UserError(f"tokenizer {tokenizer} does not exist; pass a tokenizer folder or a .gguf file")
        return tokenizer_from(path)
    if path is not None:
        return tokenizer_from(path)
    folder = Path(model).expanduser() if model is not None else None
    if folder is not None and any((folder / f).is_file() for f in TOKENIZER_FILES):
        try:
            return AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(
                f"tokenizer in {folder} could not be loaded ({exc}); pass tokenizer=PATH"
            ) from None
    if not dummy_weights:
        raise UserError(f"model folder {folder} holds no tokenizer; pass tokenizer=PATH")
    # Random weights with no tokenizer of their own borrow the embedded model's.
    return tokenizer_from(embedded_gguf())


def check_vocab(model: Any, tokenizer: Any) -> None:
    vocab = int(model.config.vocab_size)
    if vocab > len(tokenizer):
        raise UserError(
            f"the model has {vocab} token ids but its tokenizer only {len(tokenizer)}; "
            "pass tokenizer=PATH with a tokenizer that covers the model's vocabulary"
        )


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends a turn: the configs' EOS ids and the chat formats' end markers."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        ids.update([value] if isinstance(value, int) else list(value or []))
    vocab = tokenizer.get_vocab()
    specials = set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())
    ids.update(vocab[m] for m in END_MARKERS if m in vocab and m in specials)
    return {i for i in ids if 0 <= i < int(model.config.vocab_size)}


def pad_id(tokenizer: Any, eos: set[int]) -> int:
    for candidate in (
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        min(eos, default=None),
    ):
        if isinstance(candidate, int):
            return candidate
    return 0


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer's plain encoding starts with a BOS that rendered text lacks."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    plain = tokenizer("a", add_special_tokens=True).input_ids
    return bool(plain) and plain[0] == bos


def attention_backends(device: Any, cudnn_attention: bool) -> contextlib.AbstractContextManager[Any]:
    """SDPA backends for generation on `device`: all but cuDNN's on CUDA, unless cudnn_attention.

    cuDNN's attention builds an execution plan for each new shape; decoding meets a new KV
    length at every step, and the first batch of 8x16 samples x 256 tokens ran 3x slower than
    the same batch repeated (H100, torch 2.11). The memory-efficient kernel needs no plan.
    """
    if device.type != "cuda" or cudnn_attention:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(backends)
