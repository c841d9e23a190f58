"""Diverse verifier tree search (DVTS, Beeching et al. 2024 in search-and-learn).

Beam search's beams tend to collapse onto one high-scoring prefix. DVTS splits N = budget.samples
into N/M independent subtrees (M = beam_width); each is searched greedily by the verifier: its
path is extended by M sampled next steps and keeps the best-scored one (the first among equals).
All live subtrees step together, so a round costs N step generations in one generate call.
A subtree ends when its kept child is complete (see stepping.py for how a step ends a solution);
a subtree whose kept path is the same as an earlier subtree's is merged into it (ends, and is not
a second solution). The search ends when every subtree has ended or the next round does not fit
the budget (checked before each round; stepping.py).

The answer is the best complete leaf by aggregated score; with none, the best live leaf finished
greedily within what is left. The first round must afford whole steps (the step cap); when
it does not with N/M subtrees, the search halves their number until it does; when it does not fit even with one, it answers with one greedy
solution (Attempt.fallback). trace["width"] is the N used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tsbench.contracts import PublicProblem, PublicTask
from tsbench.plugins import strategies

from .base import Estimates, Search, SearchBudget
from .stepping import Path, Stepper, WidthSearch, top_paths


@strategies.register("dvts", "diverse verifier tree search: N/M greedy subtrees, best leaf wins")
class DVTS(WidthSearch):
    """N/M subtrees (N = budget.samples), each extended by M candidates per step (WidthSearch's Args)."""

    name = "dvts"
    pool = "search"
    oracle = False

    def subtrees(self, n: int) -> int:
        return max(1, n // self.beam_width)

    def search(
        self,
        problem: PublicProblem,
        task: PublicTask,
        estimates: Estimates,
        budget: SearchBudget,
        rng: np.random.Generator,
    ) -> Search:
        stepper = Stepper(problem, task, estimates, budget, rng, self.steps)
        leaves = [Path() for _ in range(self.subtrees(budget.samples))]
        merged: dict[int, int] = {}  # subtree -> the earlier subtree holding the same path
        rounds: list[dict[str, Any]] = []
        stopped = "all subtrees ended"
        while live := [i for i, leaf in enumerate(leaves) if not leaf.done and i not in merged]:
            # A first round must afford whole steps: one cut short at the root decides nothing.
            first = self.steps.max_step_tokens if not rounds else 1
            cap, groups = yield from stepper.step(
                [leaves[i] for i in live], [self.beam_width] * len(live), min_cap=first
            )
            if cap < 1 and not rounds and len(leaves) > 1:
                # The first round does not fit with this many subtrees: search fewer before giving up.
                leaves = leaves[: len(leaves) // 2]
                continue
            if cap < 1:
                stopped = "budget"
                break
            for i, children in zip(live, groups, strict=True):
                leaves[i] = top_paths(children, 1, self.aggregate)[0]
            holders: dict[tuple[str, ...], int] = {}
            for i, leaf in enumerate(leaves):
                if i not in merged and holders.setdefault(leaf.key, i) != i:
                    merged[i] = holders[leaf.key]
            rounds.append(
                {
                    "step_cap": cap,
                    "children": [[c.as_dict() for c in group] for group in groups],
                    "kept": [
                        {"subtree": i, "merged_into": merged.get(i), **leaves[i].as_dict()} for i in live
                    ],
                    "spend": stepper.spend.as_dict(),
                }
            )
        own = [leaf for i, leaf in enumerate(leaves) if i not in merged]
        trace = {
            "width": len(leaves) * self.beam_width,
            "subtrees": len(leaves),
            "rounds": rounds,
            "leaves": [leaf.as_dict() for leaf in leaves],
            "merged": merged,
            "stopped": stopped,
            "aggregate": self.aggregate,
        }
        if not rounds:
            return (yield from stepper.fallback(trace))
        completed = [leaf for leaf in own if leaf.done]
        return (
            yield from stepper.conclude(
                completed, [leaf for leaf in own if not leaf.done], self.aggregate, trace
            )
        )
