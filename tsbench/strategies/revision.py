"""Sequential revision (Snell et al. 2024, "Scaling LLM Test-Time Compute Optimally can be More
Effective than Scaling Model Parameters"): the model revises its own previous answer, round after
round, and several such chains run side by side.

At level k (samples) there are max(1, k // r) chains of r attempts each, r = `rounds`, and no more
than k attempts in all (a chain is cut to k rounds when r > k): rounds = 1 is pure parallel
sampling, rounds = k pure sequential revision, and values between them Snell's mix of the two.
The chains advance together, so the scheduler batches them: round 1 is one request of n = chains
samples (their prompt is the same and is charged once, as a pool's is, so rounds = 1 costs what
majority@k costs); each later round is one Generate with one request per chain, whose messages
are the task's messages, the chain's previous attempt as an assistant turn, and `revise_prompt`.
Only the last attempt is kept in context: it bounds the prompt's growth to one attempt, so a
round's worst case stays that of one attempt at the task's cap, however many rounds came before.

The answer is the majority vote over the chains' last answers (majority.py; a tie is a uniform
pick drawn from the search's rng), the chosen chain's last attempt its text.

Budget: a revision's prompt grows with the attempt it revises, so before each round its worst case
(each request's prompt + the task's cap per sample) is checked against what is left of
SearchBudget.tokens and .flops; a round that does not fit is not taken, and no later one is (the
trace says so). A first round that does not fit halves the chains until it does, and at one chain
that does not fit the search answers with one greedy solution capped to what is left.

trace: each chain's canonical answer per round (so a revision that turned a right answer wrong
shows), the rounds planned and taken, and why it stopped; trace["width"] is the attempts drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tsbench.contracts import Completion, GenerationRequest, PublicProblem, PublicTask
from tsbench.plugins import strategies
from tsbench.verifiers.base import VerifierSpend

from .base import Estimates, Search, SearchBudget
from .majority import canonical_of, voted
from .stepping import StepOptions, Stepper

DEFAULT_REVISE_PROMPT = (
    "Review your previous answer. If it is wrong, correct it; then give the final answer in the same format."
)


@dataclass
class Chain:
    """One chain of attempts: its last attempt, and each round's canonical answer."""

    text: str = ""
    tokens: int = 0
    answers: list[str | None] = field(default_factory=list)


def plan(k: int, rounds: int) -> tuple[int, int]:
    """(chains, rounds per chain) at level k: k // rounds chains (at least one) of rounds
    attempts, a lone chain cut to k attempts so that no level draws more than k."""
    chains = max(1, k // rounds)
    return chains, max(1, min(rounds, k // chains))


@strategies.register(
    "sequential-revision",
    "the model revises its own answer for r rounds in k/r chains; vote over their last answers",
)
class SequentialRevision:
    """Sequential revision in parallel chains (module docstring).

    Args:
        rounds: r, attempts per chain (the first answer and r - 1 revisions).
        temperature, top_p: sampling of every attempt.
        revise_prompt: the user turn asking for a revision of the previous attempt.
    """

    name = "sequential-revision"
    pool = "search"
    oracle = False
    needs_verifier = False

    def __init__(
        self,
        rounds: int = 2,
        temperature: float = 0.7,
        top_p: float = 0.95,
        revise_prompt: str = DEFAULT_REVISE_PROMPT,
    ) -> None:
        if rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {rounds}; 1 is plain parallel sampling")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(
                f"temperature {temperature} / top_p {top_p}: need temperature >= 0, 0 < top_p <= 1"
            )
        if not isinstance(revise_prompt, str) or not revise_prompt.strip():
            raise ValueError("revise_prompt is empty; give the user turn that asks for a revision")
        self.rounds, self.revise_prompt = int(rounds), revise_prompt
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
        width, per_chain = plan(budget.samples, self.rounds)
        trace: dict[str, Any] = {"rounds_planned": per_chain}
        first = self.first_round(stepper, width, budget.max_tokens)
        while first.n > 1 and not self.fits(stepper, [first]):
            first = replace(first, n=first.n // 2, seeds=first.seeds[: first.n // 2])
        if not self.fits(stepper, [first]):
            return (yield from stepper.fallback({**trace, "chains": [], "rounds_taken": 0, "width": 1}))
        [completions] = yield from stepper.generate([first])
        chains = [self.advanced(Chain(), c, task) for c in completions]
        taken, stopped = 1, "all rounds taken"
        while taken < per_chain:
            requests = [self.revision(stepper, chain, budget.max_tokens) for chain in chains]
            if not self.fits(stepper, requests):
                needs = stepper.needs(self.worst(stepper, requests), VerifierSpend())
                need, left = next((n, left) for n, left in needs if n > left)
                stopped = f"budget: round {taken + 1} needs up to {need:g} with {left:g} left; not taken"
                break
            generated = yield from stepper.generate(requests)
            chains = [self.advanced(chain, c, task) for chain, [c] in zip(chains, generated, strict=True)]
            taken += 1
        trace.update(
            chains=[chain.answers for chain in chains],
            rounds_taken=taken,
            width=len(chains) * taken,
            changed=sum(len(set(chain.answers)) > 1 for chain in chains),
            stopped=stopped,
        )
        index = voted([c.answers[-1] for c in chains], [c.tokens for c in chains], rng)
        chosen = chains[0 if index is None else index]
        return stepper.answer(chosen.text, {**trace, "chosen": index})

    def sampled(
        self, stepper: Stepper, messages: tuple[tuple[str, str], ...], n: int, cap: int
    ) -> GenerationRequest:
        """n attempts at these messages, each seeded from the search's rng."""
        return GenerationRequest(
            messages=messages,
            n=n,
            temperature=self.options.temperature,
            top_p=self.options.top_p,
            max_tokens=cap,
            stop=stepper.task_stop,
            seeds=tuple(int(s) for s in stepper.rng.integers(0, 2**31 - 1, size=n)),
        )

    def first_round(self, stepper: Stepper, chains: int, cap: int) -> GenerationRequest:
        return self.sampled(stepper, stepper.messages, chains, cap)

    def revision(self, stepper: Stepper, chain: Chain, cap: int) -> GenerationRequest:
        """The chain's next attempt: the task, its last attempt only, and the request to revise it."""
        messages = (*stepper.messages, ("assistant", chain.text), ("user", self.revise_prompt))
        return self.sampled(stepper, messages, 1, cap)

    @staticmethod
    def advanced(chain: Chain, attempt: Completion, task: PublicTask) -> Chain:
        return Chain(attempt.text, attempt.tokens, [*chain.answers, canonical_of(task, attempt.text)[1]])

    @staticmethod
    def worst(stepper: Stepper, requests: Sequence[GenerationRequest]) -> float:
        """The requests' worst case in policy tokens: each prompt + n x its cap."""
        return float(sum(stepper.count(r) + r.n * r.max_tokens for r in requests))

    def fits(self, stepper: Stepper, requests: Sequence[GenerationRequest]) -> bool:
        """Whether the requests' worst case fits what is left of the budget."""
        return not stepper.bounded or stepper.fits(self.worst(stepper, requests), VerifierSpend())
