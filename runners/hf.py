"""HuggingFace transformers runner: all samples of a batch decoded together, on the CPU or CUDA.

transformers' `generate()` samples with torch's generator, which cannot give each sample its own
seed inside a batch. Here a hand-written decode loop runs the model step by step over a KV cache:
each distinct prompt of a wave is evaluated once (left-padded with its peers), its cache rows are
copied to the samples drawn from it, and each sample draws its tokens with its own numpy generator,
under the same rule as every other engine (runners/sampling.py).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tsbench.contracts import Completion, GenerationRequest, GenerationResult, RunnerInfo
from tsbench.errors import UserError
from tsbench.provenance import file_sha256

from .chat import render
from .cpu_load import default_threads
from .embedded import EMBEDDED_ID, embedded_gguf
from .sampling import Draw, completion_of, draw, find_stop

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


@dataclass
class _Sequence:
    """One sample being decoded."""

    request: int
    sample: int
    rng: np.random.Generator
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[dict[str, float]] = field(default_factory=list)
    text: str = ""
    prefix: int = 0  # incremental detokenization window: tokens[prefix:read] are already in `text`
    read: int = 0
    finish: str | None = None
    stop_string: str | None = None
    finished_at: float = 0.0


class HFRunner:
    """Generates with a transformers causal LM on the CPU or one CUDA device."""

    def __init__(
        self,
        model: str | None = None,
        threads: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        dummy_weights: bool = False,
        batch_size: int = 32,
        tokenizer: str | None = None,
        chat_template: str | None = None,
        sampler: str | None = None,
        cudnn_attention: bool = False,
    ) -> None:
        """Load a model.

        Args:
            model: None for the embedded GGUF; a .gguf file (dequantized); a local model folder; with
                dummy_weights, a folder holding config.json or a name in DUMMY_CONFIGS.
            threads: CPU threads for torch (default: the CPUs this process may use).
            device: "cuda", "cuda:N" or "cpu"; default CUDA when available.
            dtype: bf16, fp16 or fp32; default bf16 on CUDA, fp32 on the CPU.
            dummy_weights: build the architecture with random weights (throughput checks only).
            batch_size: most sequences decoded at once; more samples run in further waves.
            tokenizer: a tokenizer folder or .gguf to use instead of the model's own.
            chat_template: a Jinja chat template to use instead of the tokenizer's.
            sampler: "numpy" draws with runners.sampling.draw on host logits (the reference);
                "device" applies the same rule in torch on the model's device, with the uniforms
                taken from the same per-sample numpy generators. Default: numpy on the CPU,
                device on CUDA, where copying logits out and sorting them in numpy would cost more
                than the model's step.
            cudnn_attention: let torch pick cuDNN's attention kernel on CUDA (off by default: see
                _attention_backends).
        """
        import torch
        import transformers

        self._torch = torch
        self.engine_version = f"transformers {transformers.__version__}, torch {torch.__version__}"
        self.device = self._pick_device(device)
        self.dtype = self._pick_dtype(dtype)
        self.threads = threads or default_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size}; pass a positive number of sequences")
        self.batch_size = batch_size
        self.cudnn_attention = cudnn_attention
        self.sampler = sampler or ("device" if self.device.type == "cuda" else "numpy")
        if self.sampler not in SAMPLERS:
            raise UserError(f"sampler '{sampler}' is unknown; pass one of {', '.join(SAMPLERS)}")
        self.path: Path | None = None
        self._sha256: str | None = None
        if dummy_weights:
            self.model, self.model_id = self._random_model(model)
        else:
            self.model, self.model_id = self._load_model(model)
        self.tokenizer = self._load_tokenizer(tokenizer, model, dummy_weights)
        self.template = chat_template
        self._check_vocab()
        self.model.eval()
        self._keep_arg = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.n_ctx = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 20)
        self.eos = self._eos_ids()
        self.pad_id = self._pad_id()
        self._add_bos = self._adds_bos()
        self._piece_cache: dict[int, str] = {}
        self.last_stats: dict[str, float] = {}

    # -- loading -------------------------------------------------------------------------------

    def _pick_device(self, device: str | None) -> Any:
        torch = self._torch
        name = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(
                f"device '{name}' asked for but torch {torch.__version__} sees no CUDA device; "
                "pass device='cpu'"
            )
        try:
            return torch.device(name)
        except RuntimeError:
            raise UserError(
                f"device '{name}' is not a torch device; pass 'cpu', 'cuda' or 'cuda:N'"
            ) from None

    def _pick_dtype(self, dtype: str | None) -> Any:
        name = dtype or ("bf16" if self.device.type == "cuda" else "fp32")
        if name not in DTYPES:
            raise UserError(f"dtype '{name}' is unknown; pass one of {', '.join(sorted(DTYPES))}")
        return getattr(self._torch, DTYPES[name])

    def _load_model(self, model: str | None) -> tuple[Any, str]:
        from transformers import AutoModelForCausalLM

        if model is None:
            self.path = embedded_gguf()
            return self._load_gguf(self.path), EMBEDDED_ID
        path = Path(model).expanduser()
        if not path.exists():
            raise UserError(
                f"model {model} does not exist; pass a local model folder or .gguf file "
                "(nothing is downloaded)"
            )
        if path.is_file() and path.suffix == ".gguf":
            self.path = path
            return self._load_gguf(path), path.name
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise UserError(
                f"model {model} is neither a .gguf file nor a folder with config.json; pass one of those"
            )
        try:
            loaded = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(
                f"model folder {path} could not be loaded by transformers ({exc}); pass a valid folder"
            ) from None
        return loaded.to(self.device), path.name

    def _load_gguf(self, path: Path) -> Any:
        """A GGUF, dequantized by transformers; the result is cached as safetensors.

        Dequantizing the 135M embedded model takes about 15 s on two cores and reloading the cached
        copy well under 1 s, so the fp32 copy (4 bytes a parameter) is kept under cache_root(),
        keyed by the file's sha256.
        """
        from transformers import AutoModelForCausalLM

        self._sha256 = file_sha256(str(path))
        cached = cached_gguf(self._sha256)
        if cached is not None:
            loaded: Any = AutoModelForCausalLM.from_pretrained(cached, dtype=self.dtype)
            return loaded.to(self.device)
        try:
            loaded = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, dtype=self._torch.float32
            )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise UserError(
                f"model file {path} could not be loaded by transformers' GGUF reader ({exc}); "
                "pass a valid GGUF"
            ) from None
        save_gguf_cache(path, self._sha256, loaded)
        return loaded.to(device=self.device, dtype=self.dtype)

    def _random_model(self, model: str | None) -> tuple[Any, str]:
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
        with self._torch.device(self.device):
            built = AutoModelForCausalLM.from_config(config, dtype=self.dtype)
        return built, f"{name} (random weights)"

    def _load_tokenizer(self, tokenizer: str | None, model: str | None, dummy_weights: bool) -> Any:
        from transformers import AutoTokenizer

        if tokenizer is not None:
            path = Path(tokenizer).expanduser()
            if not path.exists():
                raise UserError(
                    f"tokenizer {tokenizer} does not exist; pass a tokenizer folder or a .gguf file"
                )
            return tokenizer_from(path)
        if self.path is not None:
            return tokenizer_from(self.path)
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

    def _check_vocab(self) -> None:
        vocab = int(self.model.config.vocab_size)
        if vocab > len(self.tokenizer):
            raise UserError(
                f"the model has {vocab} token ids but its tokenizer only {len(self.tokenizer)}; "
                "pass tokenizer=PATH with a tokenizer that covers the model's vocabulary"
            )

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.model.config, self.tokenizer):
            value = getattr(source, "eos_token_id", None)
            ids.update([value] if isinstance(value, int) else list(value or []))
        vocab = self.tokenizer.get_vocab()
        specials = set(self.tokenizer.all_special_tokens) | set(self.tokenizer.get_added_vocab())
        ids.update(vocab[m] for m in END_MARKERS if m in vocab and m in specials)
        return {i for i in ids if 0 <= i < int(self.model.config.vocab_size)}

    def _pad_id(self) -> int:
        for candidate in (
            self.tokenizer.pad_token_id,
            self.tokenizer.eos_token_id,
            min(self.eos, default=None),
        ):
            if isinstance(candidate, int):
                return candidate
        return 0

    def _adds_bos(self) -> bool:
        """Whether the tokenizer's plain encoding starts with a BOS that rendered text lacks."""
        bos = self.tokenizer.bos_token_id
        if bos is None:
            return False
        plain = self.tokenizer("a", add_special_tokens=True).input_ids
        return bool(plain) and plain[0] == bos

    # -- the Runner protocol ---------------------------------------------------------------------

    def info(self) -> RunnerInfo:
        if self.device.type == "cuda":
            device = f"cuda {self._torch.cuda.get_device_name(self.device)}"
        else:
            device = f"cpu x{self.threads} threads"
        return RunnerInfo(
            model_id=self.model_id,
            parameters=int(sum(p.numel() for p in self.model.parameters())),
            engine="transformers",
            engine_version=self.engine_version,
            device=device,
            model_sha256=self._sha256 if self.path is not None else None,
            dtype=str(self.dtype).removeprefix("torch."),
            prefix_sharing=True,
        )

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
        gc.collect()
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        messages = request.message_dicts()
        template = self.template or self.tokenizer.chat_template
        if template:
            text = str(
                self.tokenizer.apply_chat_template(
                    messages, chat_template=template, add_generation_prompt=True, tokenize=False
                )
            )
        else:  # a tokenizer with no template of its own gets ChatML, as the llama.cpp runner does
            text = render(None, messages)
        text += request.continuation
        ids = list(self.tokenizer(text, add_special_tokens=False).input_ids)
        bos_text = self.tokenizer.bos_token or ""
        if self._add_bos and not (bos_text and text.startswith(bos_text)):
            ids.insert(0, int(self.tokenizer.bos_token_id))
        return ids

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self.prompt_tokens(request))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        prompts = [self.prompt_tokens(r) for r in requests]
        for i, (request, prompt) in enumerate(zip(requests, prompts, strict=True)):
            if len(prompt) + request.max_tokens > self.n_ctx:
                raise UserError(
                    f"request {i}: prompt ({len(prompt)} tokens) + max_tokens ({request.max_tokens}) exceed "
                    f"the model's context of {self.n_ctx}; lower --max-tokens"
                )
        completions: list[list[Completion | None]] = [[None] * r.n for r in requests]
        computed = [0] * len(requests)
        ttft: list[float | None] = [None] * len(requests)
        self.last_stats = dict.fromkeys(("prefill_s", "forward_s", "sample_s", "steps", "waves"), 0.0)
        items = [(i, s) for i, r in enumerate(requests) for s in range(r.n)]
        started = time.perf_counter()
        with self._torch.inference_mode(), self._attention_backends():
            for at in range(0, len(items), self.batch_size):
                wave = items[at : at + self.batch_size]
                self._run_wave(wave, requests, prompts, completions, computed, ttft, started)
        total = time.perf_counter() - started
        return [
            GenerationResult(
                completions=[c for c in done if c is not None],
                prompt_tokens=len(prompts[i]),
                prompt_tokens_computed=computed[i],
                total_s=total,
                ttft_s=ttft[i],
            )
            for i, done in enumerate(completions)
        ]

    # -- decoding --------------------------------------------------------------------------------

    def _attention_backends(self) -> contextlib.AbstractContextManager[Any]:
        """SDPA backends for generation: all but cuDNN's on CUDA, unless cudnn_attention.

        cuDNN's attention builds an execution plan for each new shape; decoding meets a new KV
        length at every step, and the first batch of 8x16 samples x 256 tokens ran 3x slower than
        the same batch repeated (H100, torch 2.11). The memory-efficient kernel needs no plan.
        """
        if self.device.type != "cuda" or self.cudnn_attention:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        return sdpa_kernel(backends)

    def _sync(self) -> None:
        # Only to charge GPU time to the step that spent it in last_stats; the next step's token
        # copy would wait for it anyway.
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)

    def _prefill(self, prompts: list[list[int]]) -> tuple[Any, Any, Any]:
        """Evaluate left-padded prompts; returns (last-position logits, KV cache, attention mask)."""
        torch = self._torch
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": 1} if self._keep_arg else {}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
        return out.logits[:, -1, :], out.past_key_values, mask

    def _run_wave(
        self,
        wave: list[tuple[int, int]],
        requests: Sequence[GenerationRequest],
        prompts: list[list[int]],
        completions: list[list[Completion | None]],
        computed: list[int],
        ttft: list[float | None],
        started: float,
    ) -> None:
        torch = self._torch
        stats = self.last_stats
        distinct = list(dict.fromkeys(i for i, _ in wave))
        clock = time.perf_counter()
        logits, cache, mask = self._prefill([prompts[i] for i in distinct])
        self._sync()
        stats["prefill_s"] += time.perf_counter() - clock
        stats["waves"] += 1
        for i in distinct:
            computed[i] += len(prompts[i])
        # Each sample's row starts as a copy of its prompt's row.
        slot = {i: k for k, i in enumerate(distinct)}
        rows_of = torch.tensor([slot[i] for i, _ in wave], device=self.device)
        if len(wave) != len(distinct):
            cache.reorder_cache(rows_of)
            logits, mask = logits[rows_of], mask[rows_of]
        positions = torch.tensor([len(prompts[i]) for i, _ in wave], device=self.device)
        rows = [_Sequence(i, s, np.random.default_rng(requests[i].seed_for(s))) for i, s in wave]
        live = list(rows)
        first = True
        while True:
            clock = time.perf_counter()
            draws = self._sample(logits, rows, requests)
            for seq, choice in zip(rows, draws, strict=True):
                if seq.finish is None and choice is not None:
                    request = requests[seq.request]
                    self._advance(seq, choice, request, len(prompts[seq.request]))
            stats["sample_s"] += time.perf_counter() - clock
            if first:
                for i in distinct:
                    if ttft[i] is None:
                        ttft[i] = time.perf_counter() - started
                first = False
            alive = [r for r, seq in enumerate(rows) if seq.finish is None]
            if not alive:
                break
            # Finished rows idle in the batch until a quarter of it has finished, then the cache is
            # compacted: copying it on every finish would cost more than the idle rows do.
            if 4 * (len(rows) - len(alive)) >= len(rows):
                keep = torch.tensor(alive, device=self.device)
                cache.reorder_cache(keep)
                mask, positions = mask[keep], positions[keep]
                rows = [rows[r] for r in alive]
                alive = list(range(len(rows)))
            step = torch.tensor(
                [[seq.tokens[-1] if seq.finish is None else self.pad_id] for seq in rows], device=self.device
            )
            running = torch.tensor([[int(seq.finish is None)] for seq in rows], device=self.device)
            mask = torch.cat([mask, running], dim=1)
            clock = time.perf_counter()
            out = self.model(
                input_ids=step,
                attention_mask=mask,
                position_ids=positions[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            self._sync()
            stats["forward_s"] += time.perf_counter() - clock
            stats["steps"] += 1
            cache, logits = out.past_key_values, out.logits[:, -1, :]
            positions = positions + 1
        for seq in live:
            completions[seq.request][seq.sample] = completion_of(seq, requests[seq.request], started)

    def _sample(
        self, logits: Any, rows: list[_Sequence], requests: Sequence[GenerationRequest]
    ) -> list[Draw | None]:
        """One draw per unfinished row (None for finished ones), each from its own generator."""
        if self.sampler == "numpy":
            host = logits.float().cpu().numpy()
            return [
                None
                if seq.finish is not None
                else draw(
                    host[r],
                    requests[seq.request].temperature,
                    requests[seq.request].top_p,
                    seq.rng,
                    requests[seq.request].logprobs or 0,
                )
                for r, seq in enumerate(rows)
            ]
        temperatures = [requests[seq.request].temperature for seq in rows]
        top_ps = [requests[seq.request].top_p for seq in rows]
        # Generator.choice(p=...) spends exactly one rng.random() per draw and greedy spends none,
        # so taking the uniform here keeps every seed's stream where runners.sampling.draw leaves it.
        uniforms = [
            seq.rng.random() if seq.finish is None and t > 0 else 0.5
            for seq, t in zip(rows, temperatures, strict=True)
        ]
        k = max((requests[seq.request].logprobs or 0) for seq in rows)
        draws = device_draws(logits, temperatures, top_ps, uniforms, k)
        out: list[Draw | None] = []
        for seq, choice in zip(rows, draws, strict=True):
            if seq.finish is not None:
                out.append(None)
                continue
            want = requests[seq.request].logprobs or 0
            out.append(Draw(choice.token, choice.logprob, dict(list(choice.top.items())[:want])))
        return out

    def _piece(self, token: int) -> str:
        if token not in self._piece_cache:
            self._piece_cache[token] = self.tokenizer.decode([token], skip_special_tokens=False)
        return self._piece_cache[token]

    def _decode(self, tokens: list[int]) -> str:
        return str(
            self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        )

    def _advance(self, seq: _Sequence, choice: Draw, request: GenerationRequest, prompt_len: int) -> None:
        """Take the drawn token into `seq` and decide whether it has finished."""
        if choice.token in self.eos:
            self._finish(seq, "eos")
            return
        seq.tokens.append(choice.token)
        seq.logprobs.append(choice.logprob)
        if request.logprobs:
            seq.top.append({self._piece(t): lp for t, lp in choice.top.items()})
        # Decoding a short window from a token already shown keeps word-initial spaces right and
        # holds back text while a multi-byte character is still incomplete.
        shown = self._decode(seq.tokens[seq.prefix : seq.read])
        window = self._decode(seq.tokens[seq.prefix :])
        added = ""
        if len(window) > len(shown) and not window.endswith("\ufffd"):
            added = window[len(shown) :]
            seq.text += added
            seq.prefix, seq.read = seq.read, len(seq.tokens)
        stop = find_stop(seq.text, request.stop, len(seq.text) - len(added)) if added else None
        if stop is not None:
            seq.text = seq.text[: stop[0]]
            self._finish(seq, "stop", stop[1])
            return
        if len(seq.tokens) >= request.max_tokens or prompt_len + len(seq.tokens) >= self.n_ctx:
            self._finish(seq, "length")

    @staticmethod
    def _finish(seq: _Sequence, reason: str, stop: str | None = None) -> None:
        seq.finish, seq.stop_string = reason, stop
        seq.finished_at = time.perf_counter()


def device_draws(
    logits: Any, temperatures: list[float], top_ps: list[float], uniforms: list[float], k: int
) -> list[Draw]:
    """runners.sampling.draw's rule for a batch of rows, computed in torch where the logits are.

    Greedy rows take the first argmax. Other rows invert the CDF of their tempered distribution at
    their uniform, as numpy's Generator.choice does: over the whole vocabulary in token order when
    top_p >= 1, else over the smallest prefix of the tokens sorted by probability whose mass reaches
    top_p. Logprobs are under the untempered distribution. Results match draw()'s up to float
    rounding, which moves a token only when a uniform falls within ~1e-12 of a CDF step, and up to
    the order of exactly tied probabilities.

    Args:
        logits: (rows, vocab) tensor on any device.
        temperatures: per row; 0 means greedy.
        top_ps: per row.
        uniforms: per row, in [0, 1); ignored for greedy rows.
        k: top alternatives to report per row.

    Returns:
        One Draw per row, its `top` holding k alternatives, best first.
    """
    import torch

    x = logits.double()
    vocab = x.shape[-1]
    logp = torch.log_softmax(x, dim=-1)
    tokens = torch.argmax(x, dim=-1)
    temp = torch.tensor(temperatures, dtype=torch.float64, device=x.device)
    nucleus = torch.tensor(top_ps, dtype=torch.float64, device=x.device)
    u = torch.tensor(uniforms, dtype=torch.float64, device=x.device)
    whole = [r for r, t in enumerate(temperatures) if t > 0 and top_ps[r] >= 1.0]
    if whole:
        idx = torch.tensor(whole, device=x.device)
        cdf = torch.softmax(x[idx] / temp[idx, None], dim=-1).cumsum(dim=-1)
        cdf = cdf / cdf[:, -1:]
        tokens[idx] = (cdf <= u[idx, None]).sum(dim=-1).clamp(max=vocab - 1)
    part = [r for r, t in enumerate(temperatures) if t > 0 and top_ps[r] < 1.0]
    if part:
        idx = torch.tensor(part, device=x.device)
        probs, order = torch.softmax(x[idx] / temp[idx, None], dim=-1).sort(
            dim=-1, descending=True, stable=True
        )
        keep = ((probs.cumsum(dim=-1) < nucleus[idx, None]).sum(dim=-1, keepdim=True) + 1).clamp(max=vocab)
        inside = torch.arange(vocab, device=x.device)[None, :] < keep
        kept = torch.where(inside, probs, torch.zeros_like(probs))
        cdf = (kept / kept.sum(dim=-1, keepdim=True)).cumsum(dim=-1)
        cdf = cdf / cdf[:, -1:]
        pick = ((cdf <= u[idx, None]) & inside).sum(dim=-1, keepdim=True)
        pick = torch.minimum(pick, keep - 1)
        tokens[idx] = order.gather(-1, pick).squeeze(-1)
    chosen = logp.gather(-1, tokens[:, None]).squeeze(-1)
    token_list, chosen_list = tokens.tolist(), chosen.tolist()
    if k:
        top_values, top_ids = logp.topk(min(k, vocab), dim=-1)
        alternatives = [
            dict(zip(i, v, strict=True)) for i, v in zip(top_ids.tolist(), top_values.tolist(), strict=True)
        ]
    else:
        alternatives = [{} for _ in token_list]
    return [Draw(int(t), float(c), a) for t, c, a in zip(token_list, chosen_list, alternatives, strict=True)]
