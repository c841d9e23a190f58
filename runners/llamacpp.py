"""llama.cpp runner: samples decoded together over shared, once-evaluated prompts.

llama-cpp-python's high-level API draws samples one after another at full price each. Here every
request's prompt is evaluated once into a KV sequence and copied to the sequences that sample
from it, and every live sequence advances by one token per decode call (llama.cpp's
multi-sequence batch API, as in its `batched` and `parallel` examples). Requests join and leave
the batch as they come and finish (llamacpp_session.py: continuous batching, prefixes kept for
the next step of a search); `generate` is one such session run to its end.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tsbench.contracts import GenerationRequest, GenerationResult, Message, RunnerInfo
from tsbench.errors import UserError
from tsbench.provenance import file_sha256

from .chat import prompt_text, render
from .cpu_load import OtherLoad, available_cores, default_threads
from .embedded import resolve_model_file
from .llamacpp_session import Session, _Sequence
from .sampling import draw, eos_allowed, find_stop, stops_checked


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


class LlamaCppRunner:
    """Generates with llama.cpp on the CPU (or its GPU build) through llama-cpp-python."""

    code_modules = ("tsbench.runners.llamacpp_session",)  # decodes too (tsbench.identity)

    def __init__(
        self,
        model: str | None = None,
        threads: int | None = None,
        parallel: int = 32,
        n_ctx: int = 16384,
        n_batch: int = 512,
        repack: bool = False,
        chat_template: str | None = None,
    ) -> None:
        """Load a GGUF.

        Args:
            model: None for the embedded GGUF, else a .gguf file.
            threads: CPU threads (default: the cores other processes leave idle, re-checked).
            parallel: KV sequences, the most samples decoded at once.
            n_ctx: KV cells shared by all sequences.
            n_batch: prompt tokens evaluated per decode call.
            repack: llama.cpp's weight repacking (off: see below).
            chat_template: a Jinja chat template to use instead of the GGUF's.
        """
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaModel
        from llama_cpp._logger import set_verbose

        set_verbose(False)

        path, self.model_id = resolve_model_file(model, ".gguf")
        self.path = path
        # Threads given are kept; otherwise they follow the load, re-checked between calls.
        self.fixed_threads = threads is not None
        self.threads = threads or default_threads()
        self.cores = available_cores()
        self.load = OtherLoad()
        self.parallel = parallel
        self.kv_sequences = parallel
        # New requests start only while fewer than this decode, so that finished steps' cells
        # stay a while for the searches' next steps (llamacpp_session.py; docs/BENCHMARKS.md).
        self.decoding_cap = max(1, parallel - parallel // 4)
        # Sequences per generate call (tsbench.scheduler): slots refill as sequences finish, so a
        # call of several slots' worth keeps every slot busy until its last few sequences.
        self.batch_sequences = 4 * parallel
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
        self.batch = LlamaBatch(
            n_tokens=max(n_batch, parallel), embd=0, n_seq_max=self.kv_sequences, verbose=False
        )
        self.vocab = llama_cpp.llama_model_get_vocab(self.model.model)
        self.n_vocab = self.model.n_vocab()
        self.eog = {t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)}
        self.eog_ids = sorted(self.eog)  # banned below min_tokens
        self.pieces = [self._token_bytes(t, special=False) for t in range(self.n_vocab)]
        metadata = self.model.metadata()
        self.template = chat_template or metadata.get("tokenizer.chat_template")
        self.bos_text = self._piece(self.model.token_bos()) if self.model.token_bos() >= 0 else ""
        self.dtype = gguf_file_type(metadata.get("general.file_type"), llama_cpp)
        self._sha256: str | None = None
        self._session: Session | None = None

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

    def _chat(self, messages: list[Message], options: dict[str, Any]) -> str:
        return render(self.template, messages, bos=self.bos_text, options=options)

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        text = prompt_text(request, self._chat)
        add_bos = self.model.add_bos_token() and not (self.bos_text and text.startswith(self.bos_text))
        return list(self.model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone (runners/token_counting.py), split as prompts are."""
        return len(self.model.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """GenerationResult.prompt_tokens of `request`, without generating."""
        return len(self.prompt_tokens(request))

    def follow_load(self) -> None:
        """Use every core that other processes left idle over the last call (at least one)."""
        if self.fixed_threads:
            return
        others = self.load.cores()
        if others is None:
            return
        threads = max(1, self.cores - int(others + 0.5))
        if threads != self.threads:
            self.threads = threads
            if self.ctx is not None:
                self._lib.llama_set_n_threads(self.ctx.ctx, threads, threads)

    def open_session(self) -> Session:
        """A continuous-batching session (tsbench.contracts.GenerationSession); one at a time, and
        generate() calls made while it is open run within it."""
        if self._session is not None:
            raise RuntimeError("a llama.cpp session is already open; close it first")
        self._session = Session(self)
        return self._session

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if self._session is not None:
            return self._session.run(requests)
        session = Session(self)
        try:
            return session.run(requests)
        finally:
            session.close()

    def _ensure_context(self, cells: int) -> None:
        """(Re)create the KV context with room for `cells` (a session asks for n_ctx: attention
        reads the cells in use, not the whole cache, so its size did not change decode speed)."""
        from llama_cpp._internals import LlamaContext

        if self.ctx is not None and self.n_ctx >= cells:
            return
        if self.ctx is not None:
            self.ctx.close()
        params = self._lib.llama_context_default_params()
        params.n_ctx = min(self.max_ctx, -(-cells // 1024) * 1024)
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_seq_max, params.kv_unified = self.kv_sequences, True
        params.n_threads = params.n_threads_batch = self.threads
        # Measured on 2 CPU cores: flash attention off decoded 16 sequences about 15% faster.
        params.flash_attn_type = self._lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = LlamaContext(model=self.model, params=params, verbose=False)
        self.n_ctx = self.ctx.n_ctx()

    def _decode(self) -> None:
        code = self._lib.llama_decode(self.ctx.ctx, self.batch.batch)
        if code != 0:
            raise RuntimeError(f"llama_decode failed with code {code}")

    def _logits(self, index: int) -> np.ndarray:
        pointer = self._lib.llama_get_logits_ith(self.ctx.ctx, index)
        return np.ctypeslib.as_array(
            ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)
        ).copy()

    def _eval_prompt(self, tokens: list[int], slot: int, start: int = 0) -> np.ndarray:
        """Evaluate a prompt's tokens from `start` on into one KV sequence (the cells before it are
        already there); returns the logits after its last token."""
        batch = self.batch.batch
        for first in range(start, len(tokens), self.n_batch):
            chunk = tokens[first : first + self.n_batch]
            batch.n_tokens = len(chunk)
            for j, token in enumerate(chunk):
                batch.token[j], batch.pos[j], batch.n_seq_id[j] = token, first + j, 1
                batch.seq_id[j][0] = slot
                batch.logits[j] = False
            batch.logits[len(chunk) - 1] = True
            self._decode()
        return self._logits(batch.n_tokens - 1)

    def _advance(
        self, seq: _Sequence, logits: np.ndarray, request: GenerationRequest, prompt_len: int
    ) -> None:
        """Sample the next token of `seq` and decide whether it has finished."""
        banned = () if eos_allowed(request, len(seq.tokens)) else self.eog_ids
        choice = draw(logits, request.temperature, request.top_p, seq.rng, request.logprobs or 0, banned)
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
        stop = find_stop(seq.text, request.stop, shown) if stops_checked(request, len(seq.tokens)) else None
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
