"""Certainty probing of one chain of thought (Fu et al. 2025, Dynasor-CoT, "Efficiently Serving
LLM Reasoning Programs with Certaindex"): stop reasoning once the model's answer has settled.

One chain is sampled in chunks of `chunk_tokens` (each chunk a request continuing the text so far).
After each chunk a probe asks for the answer now: a greedy continuation of the text so far +
`probe_prefix`, capped at `probe_tokens`, its answer extracted by the task's extractor from the
probe's own text (prefix + what it wrote, so numbers in the chain do not answer for it). The chain
stops when the last `agree` probes give the same canonical answer, and answers with the probe text
that gave it last (Attempt.text, so the grader extracts the same answer); or when the chain ends by
itself (EOS or a stop string) or reaches the task's cap on a solution, and answers with its own text.

Budget: one chain, which at level k may spend what k samples would (SearchBudget.tokens / .flops).
Every chunk and probe is a request on the ledger, its prompt (the chain so far) charged in full as
the ledger charges every prompt, so probing early and often costs tokens. Before each chunk the
worst case of the chunk and its probe is checked (the chunk shortened to fit); before each probe
its exact prompt is counted again. When the budget stops the chain first, the latest probe that
gave an answer answers (a cut chain has no answer of its own yet), else the chain's text. A chain
that cannot take its first chunk answers with one greedy solution capped to what is left.

trace: each probe's answer and the chain tokens it followed, the chain's tokens, the tokens it saved
against the task's cap on a whole chain, what answered and why it stopped; trace["width"] is 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tsbench.contracts import GenerationRequest, PublicProblem, PublicTask
from tsbench.plugins import strategies
from tsbench.verifiers.base import VerifierSpend

from .base import Estimates, Search, SearchBudget
from .majority import canonical_of
from .stepping import StepOptions, Stepper, Yields

DEFAULT_PROBE_PREFIX = "\n... Oh, I suddenly got the answer to the whole problem, Final Answer: "
# Re-tokenizing the chain with a new chunk may take a few tokens more than the chunk generated
# (merges across the seam); kept aside when choosing a chunk's cap, so its probe still fits.
SEAM_TOKENS = 4


@dataclass(frozen=True)
class Probe:
    """One probe: the chain tokens it followed, its text (prefix included) and answers."""

    after_tokens: int
    text: str
    answer: str | None
    canonical: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"after_tokens": self.after_tokens, "answer": self.canonical, "text": self.text}


@dataclass
class ChainState:
    """The chain so far: its text and tokens, chunks, probes, and why it stopped."""

    text: str = ""
    tokens: int = 0
    chunks: int = 0
    probes: list[Probe] = field(default_factory=list)
    stopped: str = "cap: the chain reached the task's cap on a solution"
    cut_by_budget: bool = False


def settled(probes: Sequence[Probe], agree: int) -> bool:
    """Whether the last `agree` probes all gave the same canonical answer (no answer never agrees)."""
    last = [p.canonical for p in probes[-agree:]]
    return len(last) == agree and last[0] is not None and len(set(last)) == 1


@strategies.register(
    "certainty-probe",
    "one chain of thought probed for its answer every chunk; stops once probes agree (Dynasor-CoT)",
)
class CertaintyProbe:
    """Dynasor-CoT's certainty probe on one chain (module docstring).

    Args:
        chunk_tokens: chain tokens between two probes.
        probe_tokens: cap on a probe's answer.
        agree: stop once this many probes in a row give the same answer.
        probe_prefix: the text appended to the chain to ask for its answer.
        temperature, top_p: sampling of the chain (probes are greedy).
    """

    name = "certainty-probe"
    pool = "search"
    oracle = False
    needs_verifier = False

    def __init__(
        self,
        chunk_tokens: int = 32,
        probe_tokens: int = 16,
        agree: int = 3,
        probe_prefix: str = DEFAULT_PROBE_PREFIX,
        temperature: float = 0.7,
        top_p: float = 0.95,
    ) -> None:
        for option, value in (
            ("chunk_tokens", chunk_tokens),
            ("probe_tokens", probe_tokens),
            ("agree", agree),
        ):
            if value < 1:
                raise ValueError(f"{option} must be at least 1, got {value}")
        if not isinstance(probe_prefix, str) or not probe_prefix.strip():
            raise ValueError("probe_prefix is empty; give the text that asks the chain for its answer")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(
                f"temperature {temperature} / top_p {top_p}: need temperature >= 0, 0 < top_p <= 1"
            )
        self.chunk_tokens, self.probe_tokens, self.agree = int(chunk_tokens), int(probe_tokens), int(agree)
        self.probe_prefix = probe_prefix
        self.options = StepOptions(temperature=float(temperature), top_p=float(top_p))

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return list(requested)

    def search(
        self,
        problem: PublicProblem,
        task: PublicTask,
        estimates: Estimates,
        budget: SearchBudget,
        rng: np.random.Generator,
    ) -> Search:
        stepper = Stepper(
            problem, task, estimates, budget, rng, replace(self.options, max_step_tokens=budget.max_tokens)
        )
        state = yield from self.grow(stepper, task, budget.max_tokens)
        trace: dict[str, Any] = {
            "width": 1,
            "chunks": state.chunks,
            "probes": [p.as_dict() for p in state.probes],
            "chain_tokens": state.tokens,
            "chain_tokens_saved": max(0, budget.max_tokens - state.tokens),
            "stopped": state.stopped,
        }
        if state.chunks == 0:
            return (yield from stepper.fallback({**trace, "answered_by": "fallback"}))
        answering = self.answering(state)
        if answering is None:
            return stepper.answer(state.text, {**trace, "answered_by": "chain", "chain": state.text})
        return stepper.answer(answering.text, {**trace, "answered_by": "probe", "chain": state.text})

    def grow(self, stepper: Stepper, task: PublicTask, cap: int) -> Yields:
        """Returns the ChainState: the chain grown chunk by chunk, probed after each, until it stops."""
        state = ChainState()
        while state.tokens < cap:
            chunk = self.request(stepper, state.text, min(self.chunk_tokens, cap - state.tokens))
            fitting = self.chunk_cap(stepper, chunk, state.text)
            if fitting < 1:
                state.stopped, state.cut_by_budget = "budget: the next chunk and its probe do not fit", True
                break
            [[piece]] = yield from stepper.generate([replace(chunk, max_tokens=fitting)])
            state.text, state.tokens, state.chunks = (
                state.text + piece.text,
                state.tokens + piece.tokens,
                state.chunks + 1,
            )
            if piece.stop_reason != "length":
                state.stopped = "the chain ended by itself"
                break
            if state.tokens >= cap:
                break
            probe = self.request(stepper, state.text + self.probe_prefix, self.probe_tokens, greedy=True)
            if stepper.bounded and not stepper.fits(
                stepper.count(probe) + self.probe_tokens, VerifierSpend()
            ):
                state.stopped, state.cut_by_budget = "budget: the probe does not fit", True
                break
            [[said]] = yield from stepper.generate([probe])
            text = self.probe_prefix + said.text
            state.probes.append(Probe(state.tokens, text, *canonical_of(task, text)))
            if settled(state.probes, self.agree):
                state.stopped = f"{self.agree} probes agree"
                break
        return state

    def answering(self, state: ChainState) -> Probe | None:
        """The probe that answers: the last one when probes agree, or when the budget cut the chain
        (the latest that gave an answer); None when the chain answers with its own text."""
        if settled(state.probes, self.agree) or state.cut_by_budget:
            return next((p for p in reversed(state.probes) if p.answer is not None), None)
        return None

    def request(
        self, stepper: Stepper, continuation: str, cap: int, greedy: bool = False
    ) -> GenerationRequest:
        """One sample continuing the assistant text (a chunk, or a probe when greedy)."""
        return GenerationRequest(
            messages=stepper.messages,
            n=1,
            temperature=0.0 if greedy else self.options.temperature,
            top_p=1.0 if greedy else self.options.top_p,
            max_tokens=cap,
            stop=stepper.task_stop,
            seeds=(int(stepper.rng.integers(0, 2**31 - 1)),),
            continuation=continuation,
        )

    def chunk_cap(self, stepper: Stepper, chunk: GenerationRequest, chain: str) -> int:
        """The largest chunk cap (<= chunk.max_tokens) at which the chunk and then its probe fit
        what is left: chunk prompt + c, and the probe's prompt after c more tokens + its cap."""
        if not stepper.bounded:
            return chunk.max_tokens
        prompt = stepper.count(chunk)
        probe = stepper.count(replace(chunk, continuation=chain + self.probe_prefix)) + SEAM_TOKENS
        return stepper.largest(
            lambda c: (prompt + c + probe + c + self.probe_tokens, VerifierSpend()), chunk.max_tokens
        )
