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
        min_tokens: before a sample has this many tokens neither EOS nor a stop string ends it
            (vLLM's min_tokens; budget forcing's floor). max_tokens ignores EOS altogether.
        template: True renders the messages with the model's chat template; False renders them as
            a plain completion prompt (plain_prompt), for comparing the two.
        template_options: extra chat-template variables, e.g. (("enable_thinking", False),), passed
            to the template by every runner that renders one.
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
    min_tokens: int = 0
    template: bool = True
    template_options: tuple[tuple[str, Any], ...] = ()

    def message_dicts(self) -> list[Message]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def seed_for(self, index: int) -> int:
        return self.seeds[index] if index < len(self.seeds) else index


def plain_prompt(request: GenerationRequest) -> str:
    """A request as a plain completion prompt, the same in every runner: the messages' contents,
    a blank line between them and after the last, then the continuation."""
    return "".join(content + "\n\n" for _, content in request.messages) + request.continuation


STOP_REASONS = ("eos", "stop", "length")


@dataclass
class Completion:
    """One sampled completion.

    Args:
        text: what the model wrote, without the EOS token and without the stop string.
        tokens: generated tokens, counted the same way by every runner (see the runner conformance
            suite): the tokens of the text, plus the stop string's, plus one for an EOS token.
        stop_reason: "eos" (the model ended), "stop" (a stop string ended it) or "length" (the
            token cap, or the context, cut it).
        seed: the sample's seed.
        logprobs, top_logprobs: per token of the text, when asked.
        latency_s: from the start of its batch to its last token.
        stop_string: the stop string that ended it, when stop_reason is "stop".
    """

    text: str
    tokens: int
    stop_reason: str
    seed: int
    logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float]] | None = None
    latency_s: float = 0.0
    stop_string: str | None = None

    @property
    def finish_reason(self) -> str:
        """OpenAI's coarser form: "length" when cut by the cap, else "stop"."""
        return "length" if self.stop_reason == "length" else "stop"


@dataclass
class GenerationResult:
    """All completions for one request, with what the engine spent on them."""

    completions: list[Completion]
    prompt_tokens: int  # tokens in the prompt, as the engine tokenized it
    prompt_tokens_computed: int  # prompt tokens the engine actually evaluated (less with prefix reuse)
    total_s: float
    ttft_s: float | None = None
    engine_s: float | None = None  # its share of the engine's time, where the runner can tell


@dataclass(frozen=True)
class RunnerInfo:
    model_id: str
    parameters: int
    engine: str
    engine_version: str
    device: str
    model_sha256: str | None = None
    dtype: str = ""  # weights' dtype as the engine runs them, e.g. "q4_1", "float32", "bfloat16"
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


class GenerationSession(Protocol):
    """Continuous batching: requests join a running batch and leave it as they finish."""

    def add(self, request: GenerationRequest) -> int:
        """Queue a request; returns its key."""
        ...

    def step(self) -> list[tuple[int, GenerationResult]]:
        """Decode until at least one added request has finished (or none is left); returns the
        (key, result) of those finished since the last step. The same adds give the same steps."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class OpensSessions(Protocol):
    """A runner that can batch continuously (the scheduler then keeps its slots busy across
    searches' rounds rather than waiting for each round's slowest sample)."""

    def open_session(self) -> GenerationSession: ...


@runtime_checkable
class CountsPromptTokens(Protocol):
    """A runner that can count a request's prompt tokens without generating (every built-in one
    can); searches need it to check, before each step, that the step fits its budget."""

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """What GenerationResult.prompt_tokens would say for this request, continuation included."""
        ...


@dataclass(frozen=True)
class Problem:
    """One item of a task, reference included: only the harness, graders and oracle arms see it."""

    id: str
    question: str
    reference: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def public(self) -> PublicProblem:
        return PublicProblem(self.id, self.question, self.metadata)


@dataclass(frozen=True)
class PublicProblem:
    """What a strategy or verifier that is not an oracle sees of a problem: no reference at all."""

    id: str
    question: str
    metadata: dict[str, Any] = field(default_factory=dict)


AnyProblem = Problem | PublicProblem


@runtime_checkable
class Task(Protocol):
    """A benchmark: its problems, how to prompt for them, and how to grade an answer.

    Optional members, read where present: `stop` (strings that end every sample of the task, e.g.
    a few-shot prompt's next "Question:"; none by default, see task_stop), `canonical_many`,
    `verdict`, `generation` (e.g. {"max_tokens": 384}).
    """

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

    def messages(self, problem: AnyProblem) -> list[Message]:
        """The prompt; it reads the question and metadata only, never the reference."""
        ...

    def extract(self, text: str) -> str | None:
        """The final answer found in a completion, or None."""
        ...

    def canonical(self, answer: str) -> str:
        """A normal form of an extracted answer: answers equal by meaning share it (votes group by it)."""
        ...

    def grade(self, answer: str | None, problem: Problem) -> bool: ...


class PublicTask:
    """A task as non-oracle strategies and verifiers see it: prompts, extraction and canonical
    forms, but no grading and no loading (either would reach the reference)."""

    def __init__(self, task: Task) -> None:
        self.__task = task
        self.name = task.name
        self.description = task.description
        self.stop = task_stop(task)

    def messages(self, problem: AnyProblem) -> list[Message]:
        return self.__task.messages(problem)

    def extract(self, text: str) -> str | None:
        return self.__task.extract(text)

    def canonical(self, answer: str) -> str:
        return canonical_answer(self.__task, answer)

    def direct_messages(self, problem: AnyProblem) -> list[Message] | None:
        """The task's answer-only prompt (its optional `direct_messages`), or None."""
        method = getattr(self.__task, "direct_messages", None)
        return list(method(problem)) if callable(method) else None

    def examples(self, k: int, seed: int) -> list[Problem]:
        """k worked examples from the task's train split (never its test problems), drawn with
        `seed`; each reference is a worked solution ending in its answer. The task's optional
        `examples` member; a task without one raises UserError."""
        method = getattr(self.__task, "examples", None)
        if not callable(method):
            from tsbench.errors import UserError

            raise UserError(
                f"task {self.name} has no train split to draw few-shot examples from; "
                "use a zero-shot prompt, or add an `examples(k, seed)` method (or a train file) to the task"
            )
        found = method(k, seed)
        return list(found)


def task_stop(task: Any) -> tuple[str, ...]:
    """The task's stop strings (its optional `stop` member), in order, without repeats; () for none.
    Every request for the task's samples, pools and searches alike, carries them."""
    declared = getattr(task, "stop", None) or ()
    if isinstance(declared, str) or not all(isinstance(s, str) and s for s in declared):
        raise TypeError(f"task {getattr(task, 'name', task)!r}: stop must be a list of non-empty strings")
    return tuple(dict.fromkeys(declared))


def canonical_answer(task: Any, answer: str) -> str:
    """task.canonical(answer), or the stripped answer for a task that defines no canonical form."""
    method = getattr(task, "canonical", None)
    return str(method(answer)) if callable(method) else answer.strip()


@dataclass(frozen=True)
class Verdict:
    """A grade and how it was reached: "graded", "no_answer", or "timeout" / "error" when the
    checker ran past its time limit or failed on what the model wrote (both graded false)."""

    correct: bool
    status: str = "graded"


def verdict_of(task: Any, answer: str | None, problem: Problem) -> Verdict:
    """task.verdict(answer, problem) where the task has one, else its grade with status "graded"."""
    method = getattr(task, "verdict", None)
    if callable(method):
        found = method(answer, problem)
        assert isinstance(found, Verdict)
        return found
    if answer is None:
        return Verdict(False, "no_answer")
    return Verdict(bool(task.grade(answer, problem)))
