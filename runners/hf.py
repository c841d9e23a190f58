"""HuggingFace transformers runner: all samples of a batch decoded together, on the CPU or CUDA.

transformers' `generate()` samples with torch's generator, which cannot give each sample its own
seed inside a batch. Here a hand-written decode loop runs the model step by step over a KV cache:
each distinct prompt of a wave is evaluated once (left-padded with its peers), its cache rows are
copied to the samples drawn from it, and each sample draws its tokens with its own numpy generator,
under the same rule as every other engine (runners/sampling.py).
"""

from __future__ import annotations

import gc
import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tsbench.contracts import Completion, GenerationRequest, GenerationResult, Message, RunnerInfo
from tsbench.errors import UserError

from .chat import prompt_text, render
from .cpu_load import default_threads
from .hf_loading import (
    SAMPLERS,
    Loaded,
    adds_bos,
    attention_backends,
    check_vocab,
    eos_ids,
    load_model,
    load_tokenizer,
    pad_id,
    pick_device,
    pick_dtype,
    random_model,
)
from .sampling import (
    Draw,
    check_min_tokens,
    completion_of,
    device_draws,
    draw,
    eos_allowed,
    find_stop,
    stops_checked,
)
from .token_counting import tokenizer_count


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

    code_modules = ("tsbench.runners.hf_loading",)  # EOS, padding and BOS ids (tsbench.identity)

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
        self.device = pick_device(torch, device)
        self.dtype = pick_dtype(torch, self.device, dtype)
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
        if dummy_weights:
            built, self.model_id = random_model(torch, model, self.device, self.dtype)
            loaded = Loaded(built, None, self.model_id, None)
        else:
            loaded = load_model(torch, model, self.device, self.dtype)
        self.model, self._sha256, self.model_id, self.path = loaded
        self.tokenizer = load_tokenizer(tokenizer, model, self.path, dummy_weights)
        self.template = chat_template
        check_vocab(self.model, self.tokenizer)
        self.model.eval()
        self._keep_arg = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.n_ctx = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 20)
        self.eos = eos_ids(self.model, self.tokenizer)
        self._eos_ids = sorted(self.eos)  # banned below min_tokens
        self.pad_id = pad_id(self.tokenizer, self.eos)
        self._add_bos = adds_bos(self.tokenizer)
        self._piece_cache: dict[int, str] = {}
        self.last_stats: dict[str, float] = {}

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

    def _chat(self, messages: list[Message], options: dict[str, Any]) -> str:
        template = self.template or self.tokenizer.chat_template
        if not template:  # a tokenizer with no template of its own gets ChatML, as llama.cpp's does
            return render(None, messages, options=options)
        return str(
            self.tokenizer.apply_chat_template(
                messages, chat_template=template, add_generation_prompt=True, tokenize=False, **options
            )
        )

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        text = prompt_text(request, self._chat)
        ids = list(self.tokenizer(text, add_special_tokens=False).input_ids)
        bos_text = self.tokenizer.bos_token or ""
        if self._add_bos and not (bos_text and text.startswith(bos_text)):
            ids.insert(0, int(self.tokenizer.bos_token_id))
        return ids

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self.prompt_tokens(request))

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone (runners/token_counting.py)."""
        return tokenizer_count(self.tokenizer, text)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        for request in requests:
            check_min_tokens(request)
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
        with self._torch.inference_mode(), attention_backends(self.device, self.cudnn_attention):
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
                None if seq.finish is not None else self._draw(host[r], seq, requests[seq.request])
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
        banned = [() if seq.finish is not None else self._banned(seq, requests[seq.request]) for seq in rows]
        draws = device_draws(logits, temperatures, top_ps, uniforms, k, banned)
        wants = [requests[seq.request].logprobs or 0 for seq in rows]
        return [
            None if seq.finish is not None else Draw(c.token, c.logprob, dict(list(c.top.items())[:want]))
            for seq, c, want in zip(rows, draws, wants, strict=True)
        ]

    def _banned(self, seq: _Sequence, request: GenerationRequest) -> Sequence[int]:
        """The ids `seq` may not draw next: every EOS id while it is below min_tokens."""
        return () if eos_allowed(request, len(seq.tokens)) else self._eos_ids

    def _draw(self, logits: np.ndarray, seq: _Sequence, req: GenerationRequest) -> Draw:
        return draw(logits, req.temperature, req.top_p, seq.rng, req.logprobs or 0, self._banned(seq, req))

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
        checked = added and stops_checked(request, len(seq.tokens))
        stop = find_stop(seq.text, request.stop, len(seq.text) - len(added)) if checked else None
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
