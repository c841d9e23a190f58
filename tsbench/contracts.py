"""Core data contracts shared by runners, tasks, strategies and the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to sample `n` completions from.

    Args:
        messages: chat messages; the runner applies the model's chat template.
        n: number of samples.
        temperature: 0 means greedy.
        top_p: nucleus mass.
        max_tokens: generation cap per sample.
        stop: strings that end a sample (not included in its text).
        seeds: one seed per sample, so each sample is reproducible on its own.
        logprobs: None for none; k >= 0 returns each chosen token's logprob and k top alternatives.
        continuation: assistant text already written; generation extends it. Tree searches send
            partial solutions this way so that engines with prefix caching reuse the shared prefix.
    """

    messages: tuple[tuple[str, str], ...]
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    logprobs: int | None = None
    continuation: str = ""

    def message_dicts(self) -> list[Message]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def seed_for(self, index: int) -> int:
        return self.seeds[index] if index < len(self.seeds) else index


@dataclass
class Completion:
    """One sampled completion."""

    text: str
    tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    seed: int
    logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float]] | None = None
    latency_s: float = 0.0


@dataclass
class GenerationResult:
    """All completions for one request, with what the engine spent on them."""

    completions: list[Completion]
    prompt_tokens: int  # tokens in the prompt, as the engine tokenized it
    prompt_tokens_computed: int  # prompt tokens the engine actually evaluated (less with prefix reuse)
    total_s: float
    ttft_s: float | None = None


@dataclass(frozen=True)
class RunnerInfo:
    model_id: str
    parameters: int
    engine: str
    engine_version: str
    device: str
    model_sha256: str | None = None
    prefix_sharing: bool = False  # evaluates a prompt shared by samples once
    continuation: bool = True  # can extend a partial assistant answer (GenerationRequest.continuation)


@runtime_checkable
class Runner(Protocol):
    """A text-generation backend."""

    def info(self) -> RunnerInfo: ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate for a batch of requests; results come back in request order."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Problem:
    """One item of a task."""

    id: str
    question: str
    reference: str
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    """A benchmark: its problems, how to prompt for them, and how to grade an answer."""

    name: str
    description: str

    def load(self, limit: int | None, seed: int, data_dir: str | None) -> list[Problem]:
        """Return problems in a fixed order.

        Args:
            limit: at most this many problems (the first ones), or all.
            seed: seed for procedural tasks.
            data_dir: local data folder, or None to use the hub.
        """
        ...

    def messages(self, problem: Problem) -> list[Message]: ...

    def extract(self, text: str) -> str | None:
        """The final answer found in a completion, or None."""
        ...

    def grade(self, answer: str | None, problem: Problem) -> bool: ...
