"""What the step-wise searches (beam search, DVTS, MCTS) share: paths, step sampling, the budget.

Steps. A step is what the policy writes up to the step delimiter. How it ended decides its path:
"stop" at the delimiter and the path goes on; "stop" at one of the task's stop strings (which every
step request carries beside the delimiter; the delimiter wins where they coincide), or "eos", and
the solution is complete; "length" (the step cap) and it is complete too, as search-and-learn
treats it. An empty step completes its parent without adding a step; a path with `max_steps`
steps is complete. Complete paths are never extended, and children with the same steps as a
sibling are merged into one.

Budget. Spend is canonical (ledger.py): each request's prompt once, plus generated tokens, plus
the verifier's tokens unless `budget.policy_only`; FLOPs likewise. Before each round `step` takes
the round's worst case at step cap e: for each request runner.count_prompt_tokens(request) +
n * e, plus verifier.cost_bound(each child as its parent with an empty new step, extra_tokens=e),
plus whatever else the round does (`more`, e.g. MCTS rollouts). It takes the largest
e <= max_step_tokens at which that fits what is left (costs are affine in e, so e is solved from
e = 0 and e = max_step_tokens, then checked), and declines the round when e < 1. A late round may
so get a shorter cap; a step cut by it is complete. Spend stays within the budget as long as the
runner counts prompts exactly and the verifier's bound holds.

Batching. The Stepper never calls the runner or the verifier: `step`, `greedy_completion`,
`conclude` and `fallback` are generators that yield a Generate or ScoreSteps need and receive
its results from the scheduler (use them with `yield from`), which batches them with the needs of
every other live search.

Ending. A search that ends with no complete solution finishes its best live path: one greedy
continuation, not scored, capped to min(budget.max_tokens, what is left). A search that cannot take
its first round answers with `fallback`: one greedy solution from the root capped the same way but
to at least 1 token, with Attempt.fallback set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tsbench.contracts import (
    Completion,
    GenerationRequest,
    GenerationResult,
    PublicProblem,
    PublicTask,
    task_stop,
)
from tsbench.ledger import Spend, forward_flops, policy_spend
from tsbench.verifiers.base import (
    AGGREGATES,
    STEP_DELIMITER,
    Scored,
    VerifierSpend,
    aggregate,
    join_steps,
    total_spend,
)

from .base import Attempt, Estimates, Generate, Need, ScoreSteps, SearchBudget

# Part of a search: yields needs, receives their results, returns what its docstring says.
Yields = Generator[Need, Any, Any]

# A cost at cap e: (policy tokens, verifier spend).
CostAt = Callable[[int], tuple[float, VerifierSpend]]


@dataclass
class Path:
    """A partial solution: its steps, the verifier's score of each, whether it is complete, and
    each step's mean token logprob as sampled (None where the runner gave none)."""

    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    done: bool = False
    logprobs: list[float | None] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(self.steps)

    def score(self, how: str) -> float:
        return aggregate(self.scores, how)

    def as_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "scores": [round(s, 6) for s in self.scores], "done": self.done}


def mean_logprob(completion: Completion) -> float | None:
    """The mean logprob of a completion's tokens, None when the runner gave none."""
    logprobs = completion.logprobs
    return round(sum(logprobs) / len(logprobs), 6) if logprobs else None


def top_paths(paths: Sequence[Path], m: int, how: str) -> list[Path]:
    """The m best paths by aggregated score; equal scores keep their order, so the pick is fixed."""
    return sorted(paths, key=lambda p: -p.score(how))[:m]


def distinct(paths: Iterable[Path]) -> list[Path]:
    """The first path of each set of paths with the same steps, in order."""
    seen: dict[tuple[str, ...], Path] = {}
    for path in paths:
        seen.setdefault(path.key, path)
    return list(seen.values())


@dataclass(frozen=True)
class StepOptions:
    """How a step-wise search samples steps.

    Args:
        delimiter: the text between steps; generation stops at it.
        temperature, top_p: sampling of each step.
        max_step_tokens: cap per step.
        max_steps: a path with this many steps is complete.
    """

    delimiter: str = STEP_DELIMITER
    temperature: float = 0.8
    top_p: float = 1.0
    max_step_tokens: int = 256
    max_steps: int = 12


class Stepper:
    """The policy and verifier side of a step-wise search, its ledger (`spend`) and its budget.

    Takes the problem, task, estimates, budget and rng as SearchStrategy.search does.
    """

    def __init__(
        self,
        problem: PublicProblem,
        task: PublicTask,
        estimates: Estimates,
        budget: SearchBudget,
        rng: np.random.Generator,
        options: StepOptions,
    ) -> None:
        self.task, self.estimates = task, estimates
        self.budget, self.rng, self.options = budget, rng, options
        self.delimiter = options.delimiter
        # A step ends at the delimiter or at one of the task's stop strings (which end the answer).
        self.task_stop = task_stop(task)
        self.step_stop = tuple(dict.fromkeys((self.delimiter, *self.task_stop)))
        self.messages = tuple((m["role"], m["content"]) for m in task.messages(problem))
        self.parameters = estimates.parameters
        self.spend = Spend()
        self.bounded = math.isfinite(budget.tokens) or math.isfinite(budget.flops)

    # -- text --------------------------------------------------------------------------------------

    def prefix(self, path: Path) -> str:
        """The assistant text a path's next step continues: its steps, each closed by the delimiter."""
        return "".join(step + self.delimiter for step in path.steps)

    def text(self, path: Path) -> str:
        return join_steps(path.steps, self.delimiter)

    def child(self, parent: Path, completion: Completion) -> Path:
        """What a sampled step makes of its parent (how a step ends: the module docstring)."""
        step = completion.text.strip("\n")
        if not step.strip():
            return Path(list(parent.steps), list(parent.scores), True, list(parent.logprobs))
        steps = [*parent.steps, step]
        ended = completion.stop_string not in (None, self.delimiter)  # at a task stop string
        done = completion.stop_reason != "stop" or ended or len(steps) >= self.options.max_steps
        return Path(steps, list(parent.scores), done, [*parent.logprobs, mean_logprob(completion)])

    # -- the budget --------------------------------------------------------------------------------

    def count(self, request: GenerationRequest) -> int:
        return int(self.estimates.count_prompt_tokens(request))

    def bound(self, paths: Sequence[Sequence[str]], extra_tokens: int) -> VerifierSpend:
        """The verifier's worst case for scoring paths whose last step grows by up to extra_tokens."""
        if self.budget.policy_only or not paths:
            return VerifierSpend()
        return self.estimates.verifier_cost_bound(paths, extra_tokens)

    def needs(self, policy_tokens: float, verifier: VerifierSpend) -> list[tuple[float, float]]:
        """(what this would take, what is left) under each finite limit: tokens, then FLOPs."""
        spent, budget = self.spend, self.budget
        policy_flops = forward_flops(self.parameters, policy_tokens)
        if budget.policy_only:
            tokens_left = budget.tokens - spent.policy_tokens
            flops_left = budget.flops - forward_flops(self.parameters, spent.policy_tokens)
            needs = [(policy_tokens, tokens_left), (policy_flops, flops_left)]
        else:
            needs = [
                (policy_tokens + verifier.tokens, budget.tokens - spent.tokens),
                (policy_flops + verifier.flops, budget.flops - spent.flops),
            ]
        return [
            need
            for need, limit in zip(needs, (budget.tokens, budget.flops), strict=True)
            if math.isfinite(limit)
        ]

    def fits(self, policy_tokens: float, verifier: VerifierSpend) -> bool:
        return all(need <= left for need, left in self.needs(policy_tokens, verifier))

    def largest(self, cost: CostAt, most: int) -> int:
        """The largest cap c <= most at which cost(c) fits what is left; 0 when none does.

        cost is affine in c, so each limit is solved from c = 0 and c = most; the answer is then
        checked, and searched for below it should rounding (or a bound not quite affine) fail it.
        """
        if not self.bounded or most < 1:
            return max(most, 0)
        at_zero, at_most = self.needs(*cost(0)), self.needs(*cost(most))
        cap = most
        for (low, left), (high, _) in zip(at_zero, at_most, strict=True):
            if low > left:
                return 0
            if high > left:
                cap = min(cap, math.floor((left - low) * most / (high - low)))
        if cap < 1 or self.fits(*cost(cap)):
            return cap
        low_cap, high_cap = 0, cap - 1
        while low_cap < high_cap:
            middle = (low_cap + high_cap + 1) // 2
            low_cap, high_cap = (middle, high_cap) if self.fits(*cost(middle)) else (low_cap, middle - 1)
        return low_cap

    # -- policy and verifier -----------------------------------------------------------------------

    def request(self, path: Path, n: int, greedy: bool = False, stop: bool = True) -> GenerationRequest:
        """n samples continuing a path (max_tokens is set when the round's cap is known)."""
        return GenerationRequest(
            messages=self.messages,
            n=n,
            temperature=0.0 if greedy else self.options.temperature,
            top_p=1.0 if greedy else self.options.top_p,
            max_tokens=self.options.max_step_tokens,
            stop=self.step_stop if stop else self.task_stop,
            seeds=tuple(int(s) for s in self.rng.integers(0, 2**31 - 1, size=n)),
            logprobs=0,
            continuation=self.prefix(path),
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> Yields:
        """Samples for the requests (one need); the policy's canonical spend goes on the ledger.
        Returns each request's completions."""
        results: list[GenerationResult] = (yield Generate(tuple(requests))) if requests else []
        for result in results:
            self.spend = self.spend + policy_spend(
                self.parameters,
                samples=len(result.completions),
                prompt_tokens=result.prompt_tokens,
                generated_tokens=sum(c.tokens for c in result.completions),
            )
        return [result.completions for result in results]

    def score(self, paths: Sequence[Path]) -> Yields:
        """Fill in the verifier's step scores of paths (one need); its spend goes on the ledger."""
        if not paths:
            return
        need = ScoreSteps(tuple(tuple(p.steps) for p in paths), tuple(tuple(p.logprobs) for p in paths))
        scored: list[Scored] = yield need
        for path, result in zip(paths, scored, strict=True):
            path.scores = list(result.scores)
        spent = total_spend(scored)
        self.spend = self.spend + Spend(verifier_tokens=spent.tokens, flops=spent.flops)

    def step(
        self,
        parents: Sequence[Path],
        counts: Sequence[int],
        more: CostAt | None = None,
        min_cap: int = 1,
        merge: bool = True,
    ) -> Yields:
        """One round: counts[i] next steps of parents[i], at the largest step cap the budget allows.

        Args:
            more: the worst case of what else the round will spend, at step cap e.
            min_cap: the round is declined (nothing generated) when the cap that fits is below it.
            merge: children with the same steps as a sibling are merged; without, every child is
                kept (particles count by multiplicity), and the same path is scored once.

        Returns:
            (cap, groups): the cap, and each parent's children, scored; no children when the cap
            is 0 (the round does not fit).
        """
        requests = [self.request(parent, n) for parent, n in zip(parents, counts, strict=True)]
        prompts = float(sum(self.count(r) for r in requests)) if self.bounded else 0.0
        placeholders = [
            [*parent.steps, ""] for parent, n in zip(parents, counts, strict=True) for _ in range(n)
        ]

        def cost(cap: int) -> tuple[float, VerifierSpend]:
            policy, verifier = prompts + cap * sum(counts), self.bound(placeholders, cap)
            if more is not None:
                extra_policy, extra_verifier = more(cap)
                policy, verifier = policy + extra_policy, verifier + extra_verifier
            return policy, verifier

        cap = self.largest(cost, self.options.max_step_tokens)
        if cap < max(1, min_cap):
            return 0, []
        generated = yield from self.generate([replace(r, max_tokens=cap) for r in requests])
        groups = [
            [self.child(parent, c) for c in completions]
            for parent, completions in zip(parents, generated, strict=True)
        ]
        if merge:
            groups = [distinct(group) for group in groups]
        new = [
            c for parent, group in zip(parents, groups, strict=True) for c in group if c.steps != parent.steps
        ]
        scored = {path.key: path for path in distinct(new)}
        yield from self.score(list(scored.values()))
        for child in new:
            child.scores = list(scored[child.key].scores)
        return cap, groups

    # -- ending --------------------------------------------------------------------------------------

    def greedy_completion(self, path: Path, at_least_one: bool = False) -> Yields:
        """The path's text finished by one greedy continuation capped to what is left (and to the
        task's cap on a solution); returns None when not even one token fits (unless at_least_one)."""
        request = self.request(path, 1, greedy=True, stop=False)
        prompt = self.count(request) if self.bounded else 0
        cap = self.largest(lambda c: (prompt + c, VerifierSpend()), self.budget.max_tokens)
        if cap < 1 and not at_least_one:
            return None
        [[completion]] = yield from self.generate([replace(request, max_tokens=max(cap, 1))])
        return self.prefix(path) + completion.text

    def answer(self, text: str, trace: dict[str, Any], fallback: bool = False) -> Attempt:
        return Attempt(text, self.task.extract(text) if text else None, self.spend, trace, fallback)

    def conclude(
        self, completed: Sequence[Path], live: Sequence[Path], how: str, trace: dict[str, Any]
    ) -> Yields:
        """Returns the Attempt: the best complete path by aggregated score, else the best live one finished."""
        if completed:
            chosen = top_paths(completed, 1, how)[0]
            return self.answer(self.text(chosen), {**trace, "chosen": chosen.as_dict()})
        if not live:
            return self.answer("", {**trace, "chosen": None})
        best = top_paths(live, 1, how)[0]
        finished = yield from self.greedy_completion(best)
        text = finished if finished is not None else self.text(best)
        return self.answer(text, {**trace, "chosen": best.as_dict(), "finished": finished is not None})

    def fallback(self, trace: dict[str, Any]) -> Yields:
        """Returns one greedy solution from the root, for a budget too small for the first round."""
        text = (yield from self.greedy_completion(Path(), at_least_one=True)) or ""
        return self.answer(text, {**trace, "chosen": None, "finished": True}, fallback=True)


class WidthSearch:
    """What beam search and DVTS share: a width M, step sampling settings and a path ranking.

    Args:
        beam_width: M (beam search: N/M beams kept, each expanded M times; DVTS: N/M subtrees,
            M candidates each per step).
        delimiter: text between steps.
        temperature, top_p: sampling of each step.
        max_step_tokens: cap per step.
        max_steps: steps at most per solution.
        aggregate: how a path's step scores rank it: last, min, prod or mean.
    """

    def __init__(
        self,
        beam_width: int = 4,
        delimiter: str = STEP_DELIMITER,
        temperature: float = 0.8,
        top_p: float = 1.0,
        max_step_tokens: int = 256,
        max_steps: int = 12,
        aggregate: str = "last",
    ) -> None:
        if aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate '{aggregate}'; use one of: {', '.join(AGGREGATES)}")
        self.beam_width = int(beam_width)
        self.steps = StepOptions(
            delimiter, float(temperature), float(top_p), int(max_step_tokens), int(max_steps)
        )
        self.aggregate = aggregate

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return [k for k in requested if k >= self.beam_width]
