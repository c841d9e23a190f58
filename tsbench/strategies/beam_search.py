"""Beam search over reasoning steps, guided by a process verifier (as in search-and-learn).

A solution grows one step at a time; a step is what the policy writes up to the step delimiter
("\\n\\n" by default). The root's first step is sampled N times; after each step the M best
partial solutions by verifier score are kept (the beams) and each is extended by N/M sampled
next steps, so every round costs N step generations. A beam is complete when its step ended
without the delimiter. The search ends when M beams are complete, none is left, `max_steps` is
reached or the budget's generated tokens are spent (checked before each round, so it overshoots
by at most one round), and answers with the best complete beam (the best live one if none is).

This module also holds what the step-wise searches share (Path, Stepper): dvts.py and mcts.py
import them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tsbench.contracts import Completion, GenerationRequest, Problem, Runner, Task
from tsbench.ledger import Spend, policy_spend
from tsbench.plugins import strategies
from tsbench.verifiers.base import (
    AGGREGATES,
    STEP_DELIMITER,
    aggregate,
    join_steps,
    score_paths,
    start_fresh,
    total_spend,
)

from .base import Attempt, SearchBudget


@dataclass
class Path:
    """A partial solution: its steps, the verifier's score of each, and whether it has ended."""

    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    done: bool = False

    def score(self, how: str) -> float:
        return aggregate(self.scores, how)

    def as_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "scores": [round(s, 6) for s in self.scores], "done": self.done}


def step_ended_solution(completion: Completion) -> bool:
    """Whether a step ended the solution rather than stopping at the delimiter.

    Completion does not say which stop ended it, so: a step cut by its token cap ("length") ends
    the solution, as in search-and-learn; an empty step means the model ended right where a new
    step would begin (end of sequence). A non-empty step that stopped is taken as ending at the
    delimiter; if it really ended at EOS, its next extension comes back empty and ends it then.
    """
    return completion.finish_reason == "length" or not completion.text.strip()


def top_paths(paths: Sequence[Path], m: int, how: str) -> list[Path]:
    """The m best paths by aggregated score; equal scores keep their order, so the pick is fixed."""
    return sorted(paths, key=lambda p: -p.score(how))[:m]


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
    """The policy and verifier side of a step-wise search, and its ledger (`spend`).

    Takes the problem, task, runner, verifier, budget and rng as SearchStrategy.solve receives them.
    """

    def __init__(
        self,
        problem: Problem,
        task: Task,
        runner: Runner,
        verifier: Any,
        budget: SearchBudget,
        rng: np.random.Generator,
        options: StepOptions,
    ) -> None:
        self.problem, self.task, self.runner, self.verifier = problem, task, runner, verifier
        self.budget, self.rng, self.options = budget, rng, options
        self.delimiter = options.delimiter
        self.messages = tuple((m["role"], m["content"]) for m in task.messages(problem))
        self.parameters = runner.info().parameters
        self.spend = Spend()
        start_fresh(verifier)

    def exhausted(self) -> bool:
        spent, budget = self.spend, self.budget
        return spent.generated_tokens >= budget.generated_tokens or spent.flops >= budget.flops

    def prefix(self, path: Path) -> str:
        """The assistant text a path's next step continues: its steps, each closed by the delimiter."""
        return "".join(step + self.delimiter for step in path.steps)

    def text(self, path: Path) -> str:
        return join_steps(path.steps, self.delimiter)

    def answer(self, path: Path) -> str | None:
        return self.task.extract(self.text(path)) if path.steps else None

    def generate(
        self, prefixes: Sequence[str], n: int, stop: tuple[str, ...], max_tokens: int
    ) -> list[list[Completion]]:
        """n completions of each prefix in one generate call; the policy's spend goes on the ledger."""
        requests = [
            GenerationRequest(
                messages=self.messages,
                n=n,
                temperature=self.options.temperature,
                top_p=self.options.top_p,
                max_tokens=max_tokens,
                stop=stop,
                seeds=tuple(int(s) for s in self.rng.integers(0, 2**31 - 1, size=n)),
                continuation=prefix,
            )
            for prefix in prefixes
        ]
        results = self.runner.generate(requests) if requests else []
        for result in results:
            self.spend = self.spend + policy_spend(
                self.parameters,
                samples=len(result.completions),
                prompt_tokens=result.prompt_tokens_computed,
                generated_tokens=sum(c.tokens for c in result.completions),
            )
        return [result.completions for result in results]

    def score(self, paths: Sequence[Path]) -> None:
        """Fill in the verifier's step scores of paths; its spend goes on the ledger."""
        if not paths:
            return
        scored = score_paths(self.verifier, self.problem, self.task, [p.steps for p in paths])
        for path, result in zip(paths, scored, strict=True):
            path.scores = list(result.scores)
        spent = total_spend(scored)
        self.spend = self.spend + Spend(verifier_tokens=spent.tokens, flops=spent.flops)

    def extend(self, paths: Sequence[Path], n: int) -> list[list[Path]]:
        """n one-step children of each path, scored, from one generate call and one verifier call."""
        generated = self.generate(
            [self.prefix(p) for p in paths], n, (self.delimiter,), self.options.max_step_tokens
        )
        children: list[list[Path]] = []
        new: list[Path] = []
        for parent, completions in zip(paths, generated, strict=True):
            children.append([])
            for completion in completions:
                ended = step_ended_solution(completion)
                if not completion.text.strip():
                    # Nothing new to score: the parent, now complete.
                    child = Path(list(parent.steps), list(parent.scores), done=True)
                else:
                    steps = [*parent.steps, completion.text.strip("\n")]
                    child = Path(
                        steps, list(parent.scores), done=ended or len(steps) >= self.options.max_steps
                    )
                    new.append(child)
                children[-1].append(child)
        self.score(new)
        return children


class WidthSearch:
    """What beam search and DVTS share: a width M, step sampling settings and a path ranking.

    Args:
        beam_width: M (beam search: beams kept per step; DVTS: candidates per subtree per step).
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


@strategies.register("beam-search", "step-level beam search: keep the M best partial solutions by a PRM")
class BeamSearch(WidthSearch):
    """Beam search with beam width M and N/M expansions per beam per step, N = budget.samples (WidthSearch's Args)."""

    name = "beam-search"
    pool = "search"
    oracle = False

    def solve(
        self,
        problem: Problem,
        task: Task,
        runner: Runner,
        verifier: Any,
        budget: SearchBudget,
        rng: np.random.Generator,
    ) -> Attempt:
        stepper = Stepper(problem, task, runner, verifier, budget, rng, self.steps)
        m = min(self.beam_width, budget.samples)
        active: list[Path] = [Path()]
        completed: list[Path] = []
        rounds: list[dict[str, Any]] = []
        while active and len(completed) < m and not stepper.exhausted():
            # The root alone takes N samples; after it, each of the M beams takes N/M.
            per_beam = budget.samples if not active[0].steps else max(1, budget.samples // m)
            children = [c for group in stepper.extend(active, per_beam) for c in group]
            completed += [c for c in children if c.done and c.steps not in [d.steps for d in completed]]
            active = top_paths([c for c in children if not c.done], m, self.aggregate)
            rounds.append(
                {
                    "children": [c.as_dict() for c in children],
                    "kept": [c.as_dict() for c in active],
                    "spend": stepper.spend.as_dict(),
                }
            )
        chosen = top_paths(completed or active or [Path()], 1, self.aggregate)[0]
        return Attempt(
            answer=stepper.answer(chosen),
            spend=stepper.spend,
            trace={
                "rounds": rounds,
                "completed": [c.as_dict() for c in completed],
                "chosen": chosen.as_dict(),
                "beam_width": m,
                "aggregate": self.aggregate,
            },
        )
