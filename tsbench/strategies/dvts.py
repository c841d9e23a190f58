"""Diverse verifier tree search (DVTS, Beeching et al. 2024 in search-and-learn).

Beam search's beams tend to collapse onto one high-scoring prefix. DVTS splits the budget N into
N/M independent subtrees; each is searched greedily by the verifier: its path is extended by M
sampled next steps and keeps the best-scored one. All live subtrees step together, so each round
costs N step generations in one generate call. A subtree ends when its kept step completes the
solution; the answer is the best-scored leaf across subtrees.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tsbench.contracts import Problem, Runner, Task
from tsbench.plugins import strategies

from .base import Attempt, SearchBudget
from .beam_search import Path, Stepper, WidthSearch, top_paths


@strategies.register("dvts", "diverse verifier tree search: N/M greedy subtrees, best leaf wins")
class DVTS(WidthSearch):
    """N/M subtrees (N = budget.samples), each extended by M candidates per step (WidthSearch's Args)."""

    name = "dvts"
    pool = "search"
    oracle = False

    def subtrees(self, n: int) -> int:
        return max(1, n // self.beam_width)

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
        leaves = [Path() for _ in range(self.subtrees(budget.samples))]
        rounds = []
        while not all(leaf.done for leaf in leaves) and not stepper.exhausted():
            live = [i for i, leaf in enumerate(leaves) if not leaf.done]
            groups = stepper.extend([leaves[i] for i in live], self.beam_width)
            for i, children in zip(live, groups, strict=True):
                leaves[i] = top_paths(children, 1, self.aggregate)[0]
            rounds.append(
                {
                    "children": [[c.as_dict() for c in group] for group in groups],
                    "kept": [{"subtree": i, **leaves[i].as_dict()} for i in live],
                    "spend": stepper.spend.as_dict(),
                }
            )
        chosen = top_paths(leaves, 1, self.aggregate)[0]
        return Attempt(
            answer=stepper.answer(chosen),
            spend=stepper.spend,
            trace={
                "subtrees": len(leaves),
                "rounds": rounds,
                "leaves": [leaf.as_dict() for leaf in leaves],
                "chosen": chosen.as_dict(),
                "aggregate": self.aggregate,
            },
        )
