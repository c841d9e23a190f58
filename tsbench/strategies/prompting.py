"""Prompting as strategies: zero-shot, zero-shot chain of thought and few-shot, each with the chat
template or as a plain completion prompt, on the same budget axis as majority vote and best-of-N.

Each variant is a proposal strategy (no verifier). At budget level k it sends one request of
n = k samples with its prompt and answers by majority vote over the samples' canonical answers
(k = 1: the one sample; a tie is a pick among the tied answers drawn from the search's rng).
The prompt is charged on the ledger whatever it costs, so a long few-shot prompt leaves less for
samples: n is the most samples whose worst case (prompt + n x the task's cap) fits the budget's
tokens and FLOPs; when not even one fits, one sample with the largest cap that fits; when not one
token fits, no request and no answer (trace["stopped"] says so).

The trace records the variant, shots (and the examples' ids and seed), whether the chat template
was used, the prompt's tokens, the samples used (`width`), their cap, each sample's canonical
answer, the votes and the chosen sample.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tsbench.contracts import (
    GenerationRequest,
    GenerationResult,
    Message,
    Problem,
    PublicProblem,
    PublicTask,
    task_stop,
)
from tsbench.errors import UserError
from tsbench.ledger import Spend, forward_flops, policy_spend
from tsbench.plugins import strategies

from .base import Attempt, Candidate, Estimates, Generate, Search, SearchBudget
from .majority import by_answer

COT_TRIGGER = "Let's think step by step."  # Kojima et al. 2022
DIRECT_LINE = "Answer directly."


@dataclass(frozen=True)
class Prompt:
    """A variant's prompt for one problem: its messages, and what the trace says of it."""

    messages: tuple[tuple[str, str], ...]
    notes: dict[str, Any] = field(default_factory=dict)


def problem_seed(seed: int, problem_id: str) -> int:
    """A 31-bit seed fixed by a seed and a problem id, the same on every machine and Python run."""
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def as_pairs(messages: Sequence[Message]) -> tuple[tuple[str, str], ...]:
    return tuple((m["role"], m["content"]) for m in messages)


def with_user_suffix(messages: Sequence[Message], suffix: str) -> list[Message]:
    """The messages with `suffix` on its own line after the last user turn's content."""
    found = [dict(m) for m in messages]
    last = max((i for i, m in enumerate(found) if m["role"] == "user"), default=None)
    if last is None:
        raise ValueError("the task's prompt has no user turn to add to")
    found[last]["content"] = found[last]["content"].rstrip() + "\n\n" + suffix
    return found


def direct_messages(task: PublicTask, problem: PublicProblem) -> tuple[list[Message], bool]:
    """The task's own answer-only prompt (its optional `direct_messages`) where it has one, else
    its usual messages with DIRECT_LINE after the user turn. Returns (messages, whether the task's own)."""
    method = getattr(task, "direct_messages", None)
    own = method(problem) if callable(method) else None
    if own is not None:
        return list(own), True
    return with_user_suffix(task.messages(problem), DIRECT_LINE), False


def draw_examples(task: PublicTask, problem: PublicProblem, shots: int, seed: int) -> list[Problem]:
    """`shots` worked examples, none with the problem's question: those that have it are dropped
    and more are drawn with the same seed (the tasks' draws keep their first examples as k grows)."""
    asked = shots
    while True:
        found = task.examples(asked, seed)
        kept = [e for e in found if e.question != problem.question]
        if len(kept) >= shots:
            return kept[:shots]
        if len(found) < asked:
            raise UserError(
                f"task {task.name}: its train split gave {len(kept)} examples other than problem "
                f"{problem.id}, fewer than shots={shots}; lower shots"
            )
        asked += shots - len(kept)


def few_shot_messages(task: PublicTask, problem: PublicProblem, examples: Sequence[Problem]) -> list[Message]:
    """lm-eval's multi-turn few-shot format: the task's system turn, each example as a user turn
    (the task's own rendering of its question) and an assistant turn (its worked solution), then
    the problem's user turn."""
    messages = task.messages(problem)
    system = [m for m in messages if m["role"] == "system"]
    turns: list[Message] = []
    for example in examples:
        user = [m for m in task.messages(example) if m["role"] == "user"][-1]
        turns += [
            {"role": "user", "content": user["content"]},
            {"role": "assistant", "content": example.reference},
        ]
    return [*system, *turns, *(m for m in messages if m["role"] != "system")]


def largest_fit(budget: SearchBudget, parameters: int, prompt: int, want: int, cap: int) -> tuple[int, int]:
    """(n, max_tokens) of the request: the most samples up to `want` at `cap` whose worst case fits
    the budget's tokens and FLOPs; else one sample at the largest cap that fits; (0, 0) when none.

    Args:
        budget: the search's budget (this is its only request, so all of it is left).
        parameters: the policy's parameters (FLOPs).
        prompt: the request's prompt tokens.
        want: samples asked for.
        cap: tokens per sample asked for.
    """

    def fits(n: int, each: int) -> bool:
        tokens = prompt + n * each
        return tokens <= budget.tokens and forward_flops(parameters, tokens) <= budget.flops

    left = budget.tokens
    if math.isfinite(budget.flops) and parameters > 0:
        left = min(left, budget.flops / forward_flops(parameters, 1))
    if cap < 1:
        return 0, 0
    if not math.isfinite(left):
        return want, cap
    n = max(0, min(want, math.floor((left - prompt) / cap)))
    while n > 0 and not fits(n, cap):  # float rounding at the edge
        n -= 1
    if n > 0:
        return n, cap
    each = max(0, min(cap, math.floor(left - prompt)))
    while each > 0 and not fits(1, each):
        each -= 1
    return (1, each) if each > 0 else (0, 0)


def choose(answers: Sequence[str | None], rng: np.random.Generator) -> int:
    """The index of the sample answering with the most common answer (the first such sample);
    a tie between answers is a pick drawn from rng; sample 0 when none has an answer."""
    groups = by_answer([Candidate(i, a, 0) for i, a in enumerate(answers)])
    if not groups:
        return 0
    top = max(len(members) for members in groups.values())
    tied = [answer for answer, members in groups.items() if len(members) == top]
    pick = tied[int(rng.integers(len(tied)))] if len(tied) > 1 else tied[0]
    return groups[pick][0]


class PromptVariant:
    """What the prompting strategies share: one request of up to k samples, then a vote.

    Args:
        template: True renders the prompt with the model's chat template; False sends it as a
            plain completion prompt (GenerationRequest.template).
        temperature, top_p: sampling of each sample.
    """

    name = "prompt-variant"
    variant = "task"
    pool = "search"
    oracle = False
    needs_verifier = False

    def __init__(self, template: bool = True, temperature: float = 0.7, top_p: float = 0.95) -> None:
        if temperature < 0:
            raise ValueError(f"temperature must be at least 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.template, self.temperature, self.top_p = bool(template), float(temperature), float(top_p)

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return list(requested)

    def prompt(self, problem: PublicProblem, task: PublicTask) -> Prompt:
        """The variant's prompt for the problem."""
        return Prompt(as_pairs(task.messages(problem)), {"shots": 0})

    def search(
        self,
        problem: PublicProblem,
        task: PublicTask,
        estimates: Estimates,
        budget: SearchBudget,
        rng: np.random.Generator,
    ) -> Search:
        prompt = self.prompt(problem, task)
        request = GenerationRequest(
            messages=prompt.messages,
            n=budget.samples,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=budget.max_tokens,
            stop=task_stop(task),
            template=self.template,
        )
        prompt_tokens = int(estimates.count_prompt_tokens(request))
        n, cap = largest_fit(budget, estimates.parameters, prompt_tokens, budget.samples, budget.max_tokens)
        trace: dict[str, Any] = {
            "variant": self.variant,
            **prompt.notes,
            "template": self.template,
            "prompt_tokens": prompt_tokens,
            "width": n,
            "max_tokens": cap,
        }
        if n < 1:
            trace["stopped"] = f"budget: the prompt alone ({prompt_tokens} tokens) leaves no room for a token"
            return Attempt("", None, Spend(), trace)
        seeds = tuple(int(s) for s in rng.integers(0, 2**31 - 1, size=n))
        results: list[GenerationResult] = yield Generate(
            (replace(request, n=n, max_tokens=cap, seeds=seeds),)
        )
        [result] = results
        completions = result.completions
        spend = policy_spend(
            estimates.parameters,
            samples=len(completions),
            prompt_tokens=result.prompt_tokens,
            generated_tokens=sum(c.tokens for c in completions),
        )
        raw = [task.extract(c.text) for c in completions]
        answers = [None if a is None else task.canonical(a) for a in raw]
        chosen = choose(answers, rng)
        votes = by_answer([Candidate(i, a, 0) for i, a in enumerate(answers)])
        trace |= {
            "prompt_tokens": result.prompt_tokens,
            "width": len(completions),
            "answers": answers,
            "votes": {answer: len(members) for answer, members in votes.items()},
            "chosen": chosen,
            "stopped": "voted" if n == budget.samples else f"budget: {n} of {budget.samples} samples fit",
        }
        if not completions:
            return Attempt("", None, spend, trace)
        return Attempt(completions[chosen].text, raw[chosen], spend, trace)


@strategies.register("zero-shot", "zero-shot: the final answer asked for directly, no working; vote over k")
class ZeroShot(PromptVariant):
    """Asks for the final answer alone. A task's optional `direct_messages(problem)` gives the
    prompt (arith's asks only for 'Answer: <number>'); a task without one gets its own messages,
    step-by-step request and all, with "Answer directly." after the user turn: a weaker, generic
    stand-in, since the task's own instruction still asks for working (trace["direct"] is False)."""

    name = "zero-shot"
    variant = "zero-shot"

    def prompt(self, problem: PublicProblem, task: PublicTask) -> Prompt:
        messages, own = direct_messages(task, problem)
        return Prompt(as_pairs(messages), {"shots": 0, "direct": own})


@strategies.register("cot", 'zero-shot chain of thought: "Let\'s think step by step." after the question')
class ChainOfThought(PromptVariant):
    """Zero-shot chain of thought (Kojima et al. 2022): the task's messages with "Let's think step
    by step." appended to the user turn."""

    name = "cot"
    variant = "cot"

    def prompt(self, problem: PublicProblem, task: PublicTask) -> Prompt:
        return Prompt(as_pairs(with_user_suffix(task.messages(problem), COT_TRIGGER)), {"shots": 0})


@strategies.register("few-shot", "few-shot: worked train-split examples as chat turns before the question")
class FewShot(PromptVariant):
    """`shots` worked examples from the task's train split (PublicTask.examples) as alternating
    user/assistant turns before the question, lm-eval's multi-turn few-shot format; an example
    with the problem's own question is replaced by another.

    Args:
        shots: examples per prompt.
        seed: the examples' draw; every problem of a run sees the same examples...
        per_problem: ...unless True: then each problem draws its own, from seed and its id.
        template, temperature, top_p: as PromptVariant.
    """

    name = "few-shot"
    variant = "few-shot"

    def __init__(
        self,
        shots: int = 4,
        seed: int = 0,
        per_problem: bool = False,
        template: bool = True,
        temperature: float = 0.7,
        top_p: float = 0.95,
    ) -> None:
        super().__init__(template, temperature, top_p)
        if int(shots) < 1:
            raise ValueError(f"shots must be at least 1, got {shots}; for none use zero-shot or cot")
        self.shots, self.seed, self.per_problem = int(shots), int(seed), bool(per_problem)

    def prompt(self, problem: PublicProblem, task: PublicTask) -> Prompt:
        seed = problem_seed(self.seed, problem.id) if self.per_problem else self.seed
        examples = draw_examples(task, problem, self.shots, seed)
        notes = {"shots": self.shots, "examples": [e.id for e in examples], "examples_seed": seed}
        return Prompt(as_pairs(few_shot_messages(task, problem, examples)), notes)
