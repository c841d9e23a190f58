"""Budget forcing (Muennighoff et al. 2025, "s1: Simple test-time scaling"): one chain of thought
whose length is set from outside. A cap cuts the thinking at `cap` tokens and forces the answer;
a floor suppresses the model's own end of thinking (its close tag or EOS), appends "Wait", and
lets it go on thinking until the floor is met.

Flow on one problem. Thinking requests continue the assistant turn from the open tag (sent as a
continuation when `open_thinking`, for models whose template does not put it in the prompt) and
stop at the close tag or the task's stop strings, with max_tokens = what the cap has left. Cut
by max_tokens ("length"): the thinking ends there. Ended by the model (close tag, stop string,
EOS) below the floor: the end is dropped, " Wait" appended, and the next request continues the
whole text so far. Then one greedy answer request continues `open + thinking + close +
answer_prefix` for at most `answer_tokens`, stopping at the task's stop strings and at either tag.
Attempt.text is that whole text plus the answer, so tsbench.thinking.answer_part gives the grader
the answer only; a thinking that opened tags of its own gets a close for each, so that the text
still splits there (and `wait` and `answer_prefix` may not hold a tag).

Budget. Spend is canonical, as stepping.Stepper's: each request's prompt (continuation included)
once, plus its generated tokens; thinking_tokens are those generated in the thinking phases
(a dropped close tag or EOS included: it was generated). "Wait" is text appended by the strategy,
so it is charged as prompt of the request that continues it. The whole spend stays at or under
SearchBudget.tokens and .flops: before each thinking request its worst case, prompt + m
generated, plus the answer phase at worst (its prompt, which holds those m tokens again, plus
answer_tokens) must fit what is left, so each thinking token costs two at the margin and m is the
largest that fits. When not one thinking token fits, the search answers directly (empty thinking;
Attempt.fallback); the answer's own cap is shrunk to what is left at the end, and when the answer
prompt alone no longer fits nothing more is generated. `cap` None thinks as long as the budget
allows (budget.max_tokens where the budget is unbounded).

trace: "width" 1 (one chain), the thinking tokens, why the thinking stopped ("cut": "cap" or
"budget" for max_tokens, else None), the Waits, whether it answered directly, and each phase's
request and result.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from tsbench.contracts import Completion, GenerationRequest, PublicProblem, PublicTask, task_stop
from tsbench.ledger import Spend, forward_flops, policy_spend
from tsbench.plugins import strategies
from tsbench.thinking import DEFAULT_TAGS, ThinkTags, answer_part, open_depth

from .base import Attempt, Estimates, Generate, Need, Search, SearchBudget

# Fewest tokens a thinking request after "Wait" generates before EOS or the close tag may end it.
# Right after "Wait" a model that wanted to stop often ends again at once; every such round would
# re-charge the whole prompt for a token or two of thinking, spending the budget on prompts.
WAIT_MIN_TOKENS = 4


class Forcing:
    """One problem's budget forcing: its requests, its ledger, and what its budget has left.

    Args:
        strategy: the BudgetForcing arm (its options).
        messages: the task's prompt.
        stop: the task's stop strings.
        estimates, budget, rng: as SearchStrategy.search takes them.
    """

    def __init__(
        self,
        strategy: BudgetForcing,
        messages: tuple[tuple[str, str], ...],
        stop: tuple[str, ...],
        estimates: Estimates,
        budget: SearchBudget,
        rng: np.random.Generator,
    ) -> None:
        self.options, self.messages, self.task_stop = strategy, messages, stop
        self.estimates, self.budget, self.rng = estimates, budget, rng
        self.spend = Spend()
        self.thinking_tokens = 0
        self.phases: list[dict[str, Any]] = []
        self.bounded = math.isfinite(budget.tokens) or math.isfinite(budget.flops)

    def start(self) -> str:
        return self.options.tags.open if self.options.open_thinking else ""

    def closing(self, thinking: str) -> str:
        """The close tags that end `thinking` (one more for each tag it opened itself)."""
        return self.options.tags.close * (1 + open_depth(thinking, self.options.tags))

    def answer_text(self, thinking: str) -> str:
        return self.start() + thinking + self.closing(thinking) + self.options.answer_prefix

    def thinking_request(self, thinking: str, min_tokens: int) -> GenerationRequest:
        """A thinking round continuing `thinking` (max_tokens is set once the round's cap is known)."""
        options = self.options
        return GenerationRequest(
            messages=self.messages,
            temperature=options.temperature,
            stop=tuple(dict.fromkeys((options.tags.close, *self.task_stop))),
            seeds=(int(self.rng.integers(0, 2**31 - 1)),),
            continuation=self.start() + thinking,
            min_tokens=min_tokens,
        )

    def answer_request(self, thinking: str, max_tokens: int) -> GenerationRequest:
        """The greedy answer after `thinking`; it stops at either tag too, so that what it writes
        after the answer prefix is all answer when the text is split again."""
        tags = self.options.tags
        return GenerationRequest(
            messages=self.messages,
            temperature=0.0,
            max_tokens=max_tokens,
            stop=tuple(dict.fromkeys((*self.task_stop, tags.open, tags.close))),
            continuation=self.answer_text(thinking),
        )

    def left(self) -> float:
        """Tokens (prompt or generated) the budget has left under every finite limit."""
        left = self.budget.tokens - self.spend.tokens
        per_token = forward_flops(self.estimates.parameters, 1)
        if math.isfinite(self.budget.flops) and per_token > 0:
            left = min(left, math.floor((self.budget.flops - self.spend.flops) / per_token))
        return left

    def count(self, request: GenerationRequest) -> int:
        return int(self.estimates.count_prompt_tokens(request)) if self.bounded else 0

    def thinking_room(self, request: GenerationRequest, thinking: str) -> float:
        """The most tokens `request` may generate with the answer phase, at worst, still fitting."""
        if not self.bounded:
            return math.inf
        answer = self.count(self.answer_request(thinking, 0)) + self.options.answer_tokens
        return (self.left() - self.count(request) - answer) // 2

    def generate(self, request: GenerationRequest, phase: str) -> Generator[Need, list[Any], Completion]:
        """One completion of `request` (one need); its canonical spend goes on the ledger."""
        [result] = yield Generate((request,))
        [completion] = result.completions
        self.spend += policy_spend(
            self.estimates.parameters,
            samples=1,
            prompt_tokens=result.prompt_tokens,
            generated_tokens=completion.tokens,
        )
        if phase == "think":
            self.spend += Spend(thinking_tokens=completion.tokens)
            self.thinking_tokens += completion.tokens
        self.phases.append(
            {
                "phase": phase,
                "max_tokens": request.max_tokens,
                "min_tokens": request.min_tokens,
                "prompt_tokens": result.prompt_tokens,
                "tokens": completion.tokens,
                "stop_reason": completion.stop_reason,
                "stop_string": completion.stop_string,
            }
        )
        return completion

    def think(self, cap: float) -> Generator[Need, list[Any], tuple[str, int, str | None]]:
        """Thinking rounds until the model ends at or past the floor, or max_tokens cuts it.

        Args:
            cap: the most thinking tokens (inf: as many as the budget allows).

        Returns:
            (thinking, waits, cut): the thinking text ("Wait"s included), the Waits appended, and
            "cap" or "budget" when max_tokens cut it (None when the model ended it).
        """
        thinking, waits, early = "", 0, False
        while (want := cap - self.thinking_tokens) >= 1:
            # After an early end, the round continues the thinking with "Wait" in place of the end.
            text = thinking + (self.waited(thinking) if early else "")
            request = self.thinking_request(text, WAIT_MIN_TOKENS if early else 0)
            fits = int(min(want, self.thinking_room(request, text)))
            if fits < 1:
                return thinking, waits, "budget"
            thinking, waits = text, waits + int(early)
            round_ = replace(request, max_tokens=fits, min_tokens=min(request.min_tokens, fits))
            completion = yield from self.generate(round_, "think")
            thinking += completion.text
            if completion.stop_reason == "length":
                return thinking, waits, "cap" if fits == want else "budget"
            if self.thinking_tokens >= self.options.floor:
                return thinking, waits, None
            early = True
        return thinking, waits, "cap"

    def waited(self, thinking: str) -> str:
        """What replaces the model's early end of `thinking`: the wait text, spaced from it."""
        return ("" if not thinking or thinking[-1].isspace() else " ") + self.options.wait

    def answer(self, thinking: str) -> Generator[Need, list[Any], str]:
        """The whole text: the thinking closed, the answer prefix, and the answer (none when not
        even its prompt fits what is left)."""
        request = self.answer_request(thinking, self.options.answer_tokens)
        room = self.left() - self.count(request) if self.bounded else math.inf
        most = int(min(self.options.answer_tokens, room))
        if most < 1:
            self.phases.append({"phase": "answer", "max_tokens": 0, "skipped": "the budget has no room left"})
            return request.continuation
        completion = yield from self.generate(replace(request, max_tokens=most), "answer")
        return request.continuation + completion.text


@strategies.register(
    "budget-forcing", "s1 budget forcing: one chain whose thinking is capped, or extended with 'Wait'"
)
class BudgetForcing:
    """One chain of thought with its thinking length forced (the module docstring says how).

    Args:
        cap: most thinking tokens; None: what the budget leaves after the prompt and the answer.
        floor: fewest thinking tokens: an end of thinking before them becomes `wait`.
        wait: the text appended where the model ended its thinking too early.
        tags: the thinking's [open, close] tags.
        open_thinking: start the assistant turn with the open tag (False for templates that put
            it in the prompt themselves).
        answer_prefix: appended after the close tag to force the answer.
        answer_tokens: cap of the answer phase.
        temperature: of the thinking (0: greedy, as s1 evaluates; the answer is always greedy).
    """

    name = "budget-forcing"
    pool = "search"
    oracle = False
    needs_verifier = False

    def __init__(
        self,
        cap: int | None = None,
        floor: int = 0,
        wait: str = "Wait",
        tags: Sequence[str] | None = None,
        open_thinking: bool = True,
        answer_prefix: str = "\nFinal answer:",
        answer_tokens: int = 32,
        temperature: float = 0.0,
    ) -> None:
        if cap is not None and cap < 0:
            raise ValueError(f"cap must be 0 or more thinking tokens (or null for the budget's), got {cap}")
        if floor < 0 or (cap is not None and floor > cap):
            raise ValueError(f"floor must be from 0 to the cap ({cap}), got {floor}")
        if not wait:
            raise ValueError("wait must be non-empty text, e.g. 'Wait'")
        if answer_tokens < 1:
            raise ValueError(f"answer_tokens must be 1 or more, got {answer_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be 0 or more, got {temperature}")
        if tags is not None and (isinstance(tags, str) or len(tags) != 2):
            raise ValueError(f"tags must be a list of two strings [open, close], got {tags!r}")
        self.cap, self.floor, self.wait = cap, int(floor), wait
        self.tags = DEFAULT_TAGS if tags is None else ThinkTags(str(tags[0]), str(tags[1]))
        for field, text in (("wait", wait), ("answer_prefix", answer_prefix)):
            if self.tags.open in text or self.tags.close in text:
                # The text could then no longer be split where the strategy closed the thinking.
                raise ValueError(
                    f"{field} {text!r} must not contain the thinking tags {self.tags.open!r}, {self.tags.close!r}"
                )
        self.open_thinking, self.answer_prefix = bool(open_thinking), answer_prefix
        self.answer_tokens, self.temperature = int(answer_tokens), float(temperature)

    def budgets(self, requested: Sequence[int]) -> list[int]:
        """A fixed cap spends the same at every level: one row, at the smallest; else every level."""
        return [min(requested)] if self.cap is not None and requested else list(requested)

    def search(
        self,
        problem: PublicProblem,
        task: PublicTask,
        estimates: Estimates,
        budget: SearchBudget,
        rng: np.random.Generator,
    ) -> Search:
        messages = tuple((m["role"], m["content"]) for m in task.messages(problem))
        forcing = Forcing(self, messages, task_stop(task), estimates, budget, rng)
        cap: float = self.cap if self.cap is not None else math.inf if forcing.bounded else budget.max_tokens
        thinking, waits, cut = yield from forcing.think(cap)
        direct = not forcing.phases and cap >= 1  # not one thinking token fitted the budget
        text = yield from forcing.answer(thinking)
        trace = {
            "width": 1,
            "cap": self.cap,
            "floor": self.floor,
            "thinking_tokens": forcing.thinking_tokens,
            "cut": cut,
            "waits": waits,
            "direct": direct,
            "phases": forcing.phases,
        }
        answered = any(p["phase"] == "answer" and "skipped" not in p for p in forcing.phases)
        answer = task.extract(answer_part(text, self.tags)) if answered else None
        return Attempt(text, answer, forcing.spend, trace, fallback=direct)
