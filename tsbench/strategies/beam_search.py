"""Beam search over reasoning steps, guided by a process verifier, as search-and-learn defines it.

N = budget.samples candidates per round, M = beam_width. The root's first step is sampled N times;
after each round the N/M best live candidates by aggregated verifier score are kept (the beams),
and the next round expands them so that it again has N candidates: the kept beams repeated in
order of score, (beams * repeats)[:N], as search-and-learn duplicates its active beams (it keeps
them in generation order, so when N is not a multiple of their number its extra copies may go to
other beams than ours, which go to the best-scored). Complete candidates (see stepping.py for how
a step ends a solution) are collected, each distinct solution once, and never extended;
candidates with the same steps are merged.

The search ends when it holds N/M distinct complete solutions, when no live beam is left (the
`max_steps` cap completes every path), or when the next round does not fit the budget (each round
is checked before it is taken; stepping.py). It answers with the best complete solution by
aggregated score; with none, it finishes the best live beam greedily within what is left. The
first round must afford whole steps (the step cap); when it does not at width N, the search halves
N until it does, and when it does not even at N = 1 it answers with one greedy solution
(Attempt.fallback). trace["width"] is the N used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tsbench.contracts import PublicProblem, PublicTask
from tsbench.plugins import strategies

from .base import Estimates, Search, SearchBudget
from .stepping import Path, Stepper, WidthSearch, distinct, top_paths


def spread(beams: int, n: int) -> list[int]:
    """How many of n candidates each beam gets: its count in (beams * repeats)[:n]."""
    return [n // beams + (1 if i < n % beams else 0) for i in range(beams)]


@strategies.register("beam-search", "step-level beam search: keep the N/M best partial solutions by a PRM")
class BeamSearch(WidthSearch):
    """Beam search keeping N/M beams, N = budget.samples, M = beam_width (WidthSearch's Args)."""

    name = "beam-search"
    pool = "search"
    oracle = False

    def search(
        self,
        problem: PublicProblem,
        task: PublicTask,
        estimates: Estimates,
        budget: SearchBudget,
        rng: np.random.Generator,
    ) -> Search:
        stepper = Stepper(problem, task, estimates, budget, rng, self.steps)
        n = budget.samples
        keep = max(1, n // self.beam_width)
        live: list[Path] = [Path()]
        completed: dict[tuple[str, ...], Path] = {}
        rounds: list[dict[str, Any]] = []
        while True:
            if len(completed) >= keep:
                stopped = "solutions"
                break
            if not live:
                stopped = "no live beam"
                break
            # A first round must afford whole steps: one cut short at the root decides nothing.
            first = self.steps.max_step_tokens if not rounds else 1
            cap, groups = yield from stepper.step(live, spread(len(live), n), min_cap=first)
            if cap < 1 and not rounds and n > 1:
                # The first round does not fit at this width: search narrower before giving up.
                n, keep = n // 2, max(1, n // 2 // self.beam_width)
                continue
            if cap < 1:
                stopped = "budget"
                break
            children = distinct(child for group in groups for child in group)
            new = [c for c in children if c.done and c.key not in completed]
            completed.update((c.key, c) for c in new)
            live = top_paths([c for c in children if not c.done], keep, self.aggregate)
            rounds.append(
                {
                    "step_cap": cap,
                    "children": [c.as_dict() for c in children],
                    "completed": [c.as_dict() for c in new],
                    "kept": [c.as_dict() for c in live],
                    "spend": stepper.spend.as_dict(),
                }
            )
        trace = {
            "rounds": rounds,
            "completed": [c.as_dict() for c in completed.values()],
            "stopped": stopped,
            "width": n,
            "beams": keep,
            "aggregate": self.aggregate,
        }
        if not rounds:
            return (yield from stepper.fallback(trace))
        return (yield from stepper.conclude(list(completed.values()), live, self.aggregate, trace))
