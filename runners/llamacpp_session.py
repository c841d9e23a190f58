"""Continuous batching on llama.cpp: requests join and leave one KV cache while it decodes.

A session has `parallel` slots (KV sequences). It starts new requests while fewer than three
quarters of them decode, so that finished sequences can keep their cells for a while. A request is
admitted, in the order added, once its n samples may decode and it has room for its KV cells (prompt + n x max_tokens, reserved until its last sample ends); its prompt starts from
the longest prefix that a slot already holds (those cells are copied, not evaluated again), and
its samples share it. Every live sequence advances by one token per decode call; a finished
sequence frees its slot at once, and the next request takes it.

A finished sequence's cells stay in its slot until the slot or its cells are needed (the least
recently finished go first): a search's next step continues a path that was just generated, so
its prompt is mostly there already. What runs when depends on the requests added and the tokens
drawn, never on timing, so a session repeats exactly.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tsbench.contracts import Completion, GenerationRequest, GenerationResult
from tsbench.errors import UserError

from .sampling import check_min_tokens, completion_of


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


@dataclass
class _Entry:
    """An added request and what it has got so far."""

    request: GenerationRequest
    prompt: list[int]
    added_at: float
    completions: list[Completion | None]
    live: list[_Sequence] = field(default_factory=list)
    admitted_at: float = 0.0
    ttft_s: float | None = None
    computed: int = 0
    engine_s: float = 0.0


class Session:
    """Continuous batching over the runner's KV cache (GenerationSession in tsbench.contracts)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        runner.follow_load()
        runner._ensure_context(runner.max_ctx)
        self.memory = runner._lib.llama_get_memory(runner.ctx.ctx)
        runner._lib.llama_memory_clear(self.memory, True)
        self.entries: dict[int, _Entry] = {}
        self.queue: deque[int] = deque()
        self.free = list(range(runner.kv_sequences))
        self.decoding = 0  # live sequences
        self.kept: dict[int, list[int]] = {}  # free slot -> the tokens its cells still hold, oldest first
        self.reserved = 0
        self.pending: list[tuple[_Sequence, np.ndarray]] = []
        self.finished: list[tuple[int, GenerationResult]] = []

    # -- the contract ---------------------------------------------------------------------------

    def add(self, request: GenerationRequest) -> int:
        """Queue a request; returns its key."""
        runner, key = self.runner, len(self.entries)
        check_min_tokens(request)
        prompt = runner.prompt_tokens(request)
        if request.n > runner.parallel:
            raise UserError(
                f"a request asks n={request.n} samples; this llama.cpp runner decodes at most "
                f"{runner.parallel} at once (runner option parallel)"
            )
        if len(prompt) + request.n * request.max_tokens > runner.n_ctx:
            raise UserError(
                f"a request's prompt ({len(prompt)} tokens) + n x max_tokens ({request.n} x {request.max_tokens}) "
                f"exceed the context of {runner.n_ctx}; lower --max-tokens or raise runner option n_ctx"
            )
        self.entries[key] = _Entry(request, prompt, time.perf_counter(), [None] * request.n)
        self.queue.append(key)
        return key

    def step(self) -> list[tuple[int, GenerationResult]]:
        """Decode until at least one added request has all its samples (or nothing is left);
        returns those finished since the last step, in the order they finished."""
        while not self.finished and (self.queue or self.pending):
            self._iterate()
        finished, self.finished = self.finished, []
        return finished

    def run(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Add requests and decode until each has finished; what else finishes meanwhile is kept
        for the next step()."""
        keys = [self.add(request) for request in requests]
        wanted, found = set(keys), dict[int, GenerationResult]()
        while wanted - found.keys():
            if not (self.queue or self.pending):
                raise RuntimeError("llama.cpp session: requests were lost before they finished")
            self._iterate()
            for key, result in list(self.finished):
                if key in wanted:
                    found[key] = result
                    self.finished.remove((key, result))
        return [found[key] for key in keys]

    def close(self) -> None:
        if self.runner._session is self:
            self.runner._session = None

    # -- decoding --------------------------------------------------------------------------------

    def _admit(self) -> None:
        runner = self.runner
        while self.queue and self._may_decode(self.entries[self.queue[0]].request.n):
            key = self.queue[0]
            entry = self.entries[key]
            need = len(entry.prompt) + entry.request.n * entry.request.max_tokens
            if self.reserved and self.reserved + need > runner.n_ctx:
                return
            self.queue.popleft()
            started = entry.admitted_at = time.perf_counter()
            shared, source = self._shared_prefix(entry.prompt)
            slots = self._take(entry.request.n, source if source in self.kept else -1)
            self.decoding += entry.request.n
            self._evict_until(runner.n_ctx - self.reserved - need, keep=source)
            in_place = bool(shared) and source == slots[0]
            for slot in slots:
                self._forget(slot, unless=source if in_place else -1)
            if in_place:
                runner._lib.llama_memory_seq_rm(self.memory, source, shared, -1)
            elif shared:
                runner._lib.llama_memory_seq_cp(self.memory, source, slots[0], 0, shared)
            logits = runner._eval_prompt(entry.prompt, slots[0], shared)
            entry.computed = len(entry.prompt) - shared
            for s, slot in enumerate(slots):
                if s:
                    runner._lib.llama_memory_seq_cp(self.memory, slots[0], slot, -1, -1)
                seq = _Sequence(key, s, slot, np.random.default_rng(entry.request.seed_for(s)))
                entry.live.append(seq)
                self.pending.append((seq, logits))
            self.reserved += need
            entry.ttft_s = time.perf_counter() - started
            entry.engine_s += entry.ttft_s

    def _may_decode(self, n: int) -> bool:
        """New requests start while fewer than the cap decode; one may then fill every slot (so a
        pool of many samples need not wait for the last of another's)."""
        runner = self.runner
        return self.decoding == 0 or (
            self.decoding < runner.decoding_cap and self.decoding + n <= runner.parallel
        )

    def _take(self, n: int, first: int) -> list[int]:
        """n free slots: `first` (a kept slot holding the prompt's prefix) when given, then slots
        holding nothing, then kept ones, least recently finished first."""
        empty = [slot for slot in self.free if slot not in self.kept and slot != first]
        kept = [slot for slot in self.kept if slot != first]
        chosen = ([first] if first >= 0 else []) + empty + kept
        chosen = chosen[:n]
        self.free = [slot for slot in self.free if slot not in chosen]
        return chosen

    def _forget(self, slot: int, unless: int = -1) -> None:
        """Drop what a slot still holds (but not the prefix reused in place, for `unless`)."""
        tokens = self.kept.pop(slot, None)
        if tokens is not None and slot != unless:
            self.runner._lib.llama_memory_seq_rm(self.memory, slot, -1, -1)

    def _evict_until(self, room: int, keep: int) -> None:
        """Forget kept slots, least recently finished first (not `keep`), until their cells fit room."""
        for slot in list(self.kept):
            if sum(len(tokens) for tokens in self.kept.values()) <= room:
                return
            if slot != keep:
                self._forget(slot)

    def _shared_prefix(self, prompt: list[int]) -> tuple[int, int]:
        """(tokens, slot): the longest prefix of `prompt` that a slot holds, a live request's or a
        kept one's (at least one token of the prompt is left to evaluate, for its logits);
        (0, -1) for none."""
        held = [(entry.prompt, entry.live[0].slot) for entry in self.entries.values() if entry.live]
        best, source = 0, -1
        for tokens, slot in held + [(tokens, slot) for slot, tokens in self.kept.items()]:
            limit, length = min(len(tokens), len(prompt) - 1), 0
            while length < limit and tokens[length] == prompt[length]:
                length += 1
            if length > best:
                best, source = length, slot
        return best, source

    def _iterate(self) -> None:
        """Admit what fits, draw one token for every live sequence, retire the finished ones and
        decode the rest one position further."""
        runner = self.runner
        self._admit()
        stepped: list[_Sequence] = []
        for seq, logits in self.pending:
            entry = self.entries[seq.request]
            runner._advance(seq, logits, entry.request, len(entry.prompt))
            if seq.finish is None:
                stepped.append(seq)
                continue
            entry.completions[seq.sample] = completion_of(seq, entry.request, entry.admitted_at)
            # Its cells hold the prompt and every drawn token but the last, unless that was EOS
            # (never appended): a token is decoded into the cache in the step after it is drawn.
            decoded = seq.tokens if seq.finish == "eos" else seq.tokens[:-1]
            self.kept[seq.slot] = entry.prompt + decoded
            self.free.append(seq.slot)
            self.decoding -= 1
            entry.live.remove(seq)
            if not entry.live:
                self.reserved -= len(entry.prompt) + entry.request.n * entry.request.max_tokens
                self.finished.append((seq.request, self._result(entry)))
        self.free.sort()
        self.pending = []
        if not stepped:
            return
        batch = runner.batch.batch
        batch.n_tokens = len(stepped)
        for j, seq in enumerate(stepped):
            batch.token[j] = seq.tokens[-1]
            batch.pos[j] = len(self.entries[seq.request].prompt) + len(seq.tokens) - 1
            batch.n_seq_id[j], batch.logits[j] = 1, True
            batch.seq_id[j][0] = seq.slot
        started = time.perf_counter()
        runner._decode()
        share = (time.perf_counter() - started) / len(stepped)
        for seq in stepped:
            self.entries[seq.request].engine_s += share
        self.pending = [(seq, runner._logits(j)) for j, seq in enumerate(stepped)]

    def _result(self, entry: _Entry) -> GenerationResult:
        return GenerationResult(
            completions=[c for c in entry.completions if c is not None],
            prompt_tokens=len(entry.prompt),
            prompt_tokens_computed=entry.computed,
            total_s=time.perf_counter() - entry.added_at,
            ttft_s=entry.ttft_s,
            engine_s=entry.engine_s,
        )
