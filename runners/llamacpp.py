"""llama.cpp runner: all samples of a batch decoded together over a shared, once-evaluated prompt.

llama-cpp-python's high-level API draws samples one after another at full price each. Here the
prompt of each distinct request is evaluated once into one KV sequence, copied to the other
sequences that sample from it, and every live sequence advances by one token per decode call
(llama.cpp's multi-sequence batch API, as in its `batched` and `parallel` examples).
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tsbench.contracts import Completion, GenerationRequest, GenerationResult, RunnerInfo
from tsbench.errors import UserError
from tsbench.provenance import file_sha256

from .chat import render
from .embedded import resolve_model_file
from .sampling import completion_of, draw, find_stop


def default_threads() -> int:
    """One thread per core that other processes leave idle right now (at least 1).

    llama.cpp's threads wait for each other at spinning barriers: on 2 cores with another process
    busy on one of them, two threads decoded about 10x slower than one (measured here).
    """
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        cores = max(1, os.cpu_count() or 1)
    return max(1, cores - busy_cores(cores))


def busy_cores(cores: int, window_s: float = 0.3) -> int:
    """Cores kept busy by other processes over a short window (we sleep through it), from /proc/stat."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    try:
        total_a, idle_a = sample()
        time.sleep(window_s)
        total_b, idle_b = sample()
    except (OSError, ValueError, IndexError):
        return 0
    elapsed = total_b - total_a
    if elapsed <= 0:
        return 0
    busy_share = 1 - (idle_b - idle_a) / elapsed
    return min(cores - 1, int(busy_share * cores + 0.25))


def gguf_file_type(value: str | None, lib: Any) -> str:
    """A GGUF's `general.file_type` by llama.cpp's name for it ("q4_1", "f16"), else "gguf"."""
    try:
        code = int(value or "") & ~int(getattr(lib, "LLAMA_FTYPE_GUESSED", 1024))
    except ValueError:
        return "gguf"
    for name in dir(lib):
        if name.startswith(("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_")) and getattr(lib, name) == code:
            return name.split("_", 3)[3].lower()
    return "gguf"


@dataclass
class _Sequence:
    """One sample being decoded."""

    request: int
    sample: int
    slot: int
    rng: np.random.Generator
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[dict[str, float]] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    text: str = ""
    finish: str | None = None
    stop_string: str | None = None
    finished_at: float = 0.0


class LlamaCppRunner:
    """Generates with llama.cpp on the CPU (or its GPU build) through llama-cpp-python."""

    def __init__(
        self,
        model: str | None = None,
        threads: int | None = None,
        parallel: int = 32,
        n_ctx: int = 16384,
        n_batch: int = 512,
        repack: bool = False,
    ) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaModel
        from llama_cpp._logger import set_verbose

        set_verbose(False)

        path, self.model_id = resolve_model_file(model, ".gguf")
        self.path = path
        self.threads = threads or default_threads()
        self.parallel = parallel
        self.n_batch = n_batch
        self._lib = llama_cpp
        model_params = llama_cpp.llama_model_default_params()
        # Weight repacking ("extra buffer types") crashed multi-token batches on an AMX-capable CPU
        # under a sandboxed kernel; it stays opt-in.
        model_params.use_extra_bufts = repack
        try:
            self.model = LlamaModel(path_model=str(path), params=model_params, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise UserError(
                f"model file {path} could not be loaded by llama.cpp ({exc}); pass a valid GGUF"
            ) from None
        self.max_ctx = n_ctx
        self.ctx: Any = None
        self.n_ctx = 0
        self.batch = LlamaBatch(n_tokens=max(n_batch, parallel), embd=0, n_seq_max=parallel, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model.model)
        self.n_vocab = self.model.n_vocab()
        self.eog = {t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)}
        self.pieces = [self._token_bytes(t, special=False) for t in range(self.n_vocab)]
        metadata = self.model.metadata()
        self.template = metadata.get("tokenizer.chat_template")
        self.bos_text = self._piece(self.model.token_bos()) if self.model.token_bos() >= 0 else ""
        self.dtype = gguf_file_type(metadata.get("general.file_type"), llama_cpp)
        self._sha256: str | None = None

    def info(self) -> RunnerInfo:
        if self._sha256 is None:
            self._sha256 = file_sha256(str(self.path))
        return RunnerInfo(
            model_id=self.model_id,
            parameters=int(self.model.n_params()),
            engine="llama.cpp",
            engine_version=f"llama-cpp-python {self._lib.__version__}",
            device=f"cpu x{self.threads} threads",
            model_sha256=self._sha256,
            dtype=self.dtype,
            prefix_sharing=True,
        )

    def close(self) -> None:
        self.batch.close()
        if self.ctx is not None:
            self.ctx.close()
        self.model.close()

    def _token_bytes(self, token: int, special: bool) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        length = self._lib.llama_token_to_piece(self.vocab, token, buffer, 64, 0, special)
        return buffer.raw[: max(0, length)]

    def _piece(self, token: int) -> str:
        return self._token_bytes(token, special=True).decode("utf-8", errors="replace")

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        text = render(self.template, request.message_dicts(), bos=self.bos_text) + request.continuation
        add_bos = self.model.add_bos_token() and not (self.bos_text and text.startswith(self.bos_text))
        return list(self.model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """GenerationResult.prompt_tokens of `request`, without generating."""
        return len(self.prompt_tokens(request))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        prompts = [self.prompt_tokens(r) for r in requests]
        for i, (request, prompt) in enumerate(zip(requests, prompts, strict=True)):
            if request.n > self.parallel:
                raise UserError(
                    f"request {i} asks n={request.n} samples; this llama.cpp runner decodes at most {self.parallel} at once"
                )
            if len(prompt) + request.max_tokens > self.max_ctx:
                raise UserError(
                    f"request {i}: prompt ({len(prompt)} tokens) + max_tokens ({request.max_tokens}) exceed "
                    f"the context of {self.max_ctx}; lower --max-tokens"
                )
        completions: list[list[Completion | None]] = [[None] * r.n for r in requests]
        prompt_computed = [0] * len(requests)
        ttft: list[float | None] = [None] * len(requests)
        started = time.perf_counter()
        for wave in self._waves(requests, prompts):
            self._run_wave(wave, requests, prompts, completions, prompt_computed, ttft)
        total = time.perf_counter() - started
        return [
            GenerationResult(
                completions=[c for c in done if c is not None],
                prompt_tokens=len(prompts[i]),
                prompt_tokens_computed=prompt_computed[i],
                total_s=total,
                ttft_s=ttft[i],
            )
            for i, done in enumerate(completions)
        ]

    def _ensure_context(self, cells: int) -> None:
        """(Re)create the KV context with room for `cells`: attention cost grows with its size."""
        from llama_cpp._internals import LlamaContext

        if self.ctx is not None and self.n_ctx >= cells:
            return
        if self.ctx is not None:
            self.ctx.close()
        params = self._lib.llama_context_default_params()
        params.n_ctx = min(self.max_ctx, -(-cells // 1024) * 1024)
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_seq_max, params.kv_unified = self.parallel, True
        params.n_threads = params.n_threads_batch = self.threads
        # Measured on 2 CPU cores: flash attention off decoded 16 sequences about 15% faster.
        params.flash_attn_type = self._lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = LlamaContext(model=self.model, params=params, verbose=False)
        self.n_ctx = self.ctx.n_ctx()

    def _waves(self, requests: Sequence[GenerationRequest], prompts: list[list[int]]) -> list[list[int]]:
        """Request indices grouped so each group's sequences and KV cells fit the context at once."""
        waves: list[list[int]] = [[]]
        slots = cells = 0
        for i, request in enumerate(requests):
            need = len(prompts[i]) + request.n * request.max_tokens
            if waves[-1] and (slots + request.n > self.parallel or cells + need > self.max_ctx):
                waves.append([])
                slots = cells = 0
            waves[-1].append(i)
            slots += request.n
            cells += need
        return waves

    def _decode(self) -> None:
        code = self._lib.llama_decode(self.ctx.ctx, self.batch.batch)
        if code != 0:
            raise RuntimeError(f"llama_decode failed with code {code}")

    def _logits(self, index: int) -> np.ndarray:
        pointer = self._lib.llama_get_logits_ith(self.ctx.ctx, index)
        return np.ctypeslib.as_array(
            ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)
        ).copy()

    def _eval_prompt(self, tokens: list[int], slot: int) -> np.ndarray:
        """Evaluate a prompt into one KV sequence; returns the logits after its last token."""
        batch = self.batch.batch
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            batch.n_tokens = len(chunk)
            for j, token in enumerate(chunk):
                batch.token[j], batch.pos[j], batch.n_seq_id[j] = token, start + j, 1
                batch.seq_id[j][0] = slot
                batch.logits[j] = False
            batch.logits[len(chunk) - 1] = True
            self._decode()
        return self._logits(batch.n_tokens - 1)

    def _run_wave(
        self,
        wave: list[int],
        requests: Sequence[GenerationRequest],
        prompts: list[list[int]],
        completions: list[list[Completion | None]],
        prompt_computed: list[int],
        ttft: list[float | None],
    ) -> None:
        """Decode one wave of requests together; latencies count from the wave's start."""
        started = time.perf_counter()
        self._ensure_context(sum(len(prompts[i]) + requests[i].n * requests[i].max_tokens for i in wave))
        memory = self._lib.llama_get_memory(self.ctx.ctx)
        self._lib.llama_memory_clear(memory, True)
        live: list[_Sequence] = []
        pending: list[tuple[_Sequence, np.ndarray]] = []
        slot = 0
        for i in wave:
            request = requests[i]
            first_slot = slot
            logits = self._eval_prompt(prompts[i], first_slot)
            prompt_computed[i] = len(prompts[i])
            for s in range(request.n):
                if s:
                    self._lib.llama_memory_seq_cp(memory, first_slot, slot, -1, -1)
                seq = _Sequence(i, s, slot, np.random.default_rng(request.seed_for(s)))
                live.append(seq)
                pending.append((seq, logits))
                slot += 1
            ttft[i] = time.perf_counter() - started
        while pending:
            stepped: list[_Sequence] = []
            for seq, logits in pending:
                self._advance(seq, logits, requests[seq.request], len(prompts[seq.request]))
                if seq.finish is None:
                    stepped.append(seq)
            if not stepped:
                break
            batch = self.batch.batch
            batch.n_tokens = len(stepped)
            for j, seq in enumerate(stepped):
                batch.token[j] = seq.tokens[-1]
                batch.pos[j] = len(prompts[seq.request]) + len(seq.tokens) - 1
                batch.n_seq_id[j], batch.logits[j] = 1, True
                batch.seq_id[j][0] = seq.slot
            self._decode()
            pending = [(seq, self._logits(j)) for j, seq in enumerate(stepped)]
        for seq in live:
            completions[seq.request][seq.sample] = completion_of(seq, requests[seq.request], started)

    def _advance(
        self, seq: _Sequence, logits: np.ndarray, request: GenerationRequest, prompt_len: int
    ) -> None:
        """Sample the next token of `seq` and decide whether it has finished."""
        choice = draw(logits, request.temperature, request.top_p, seq.rng, request.logprobs or 0)
        if choice.token in self.eog:
            self._finish(seq, "eos")
            return
        seq.tokens.append(choice.token)
        seq.logprobs.append(choice.logprob)
        if request.logprobs:
            seq.top.append({self._piece(t): lp for t, lp in choice.top.items()})
        seq.raw += self.pieces[choice.token]
        shown = len(seq.text)
        seq.text = seq.raw.decode("utf-8", errors="ignore")
        stop = find_stop(seq.text, request.stop, shown)
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
