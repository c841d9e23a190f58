"""Particle filtering over reasoning steps (Puri et al. 2025, "A Probabilistic Inference Approach
to Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods"; its_hub ships it).

N = budget.samples particles start from the root. Each round extends every live particle by one
sampled step (particles on the same path share one request of n samples), the process verifier
scores the new steps, and N particles are drawn with replacement from all N, complete ones
included, with probability softmax(aggregated score / temperature). Complete particles (see
stepping.py for how a step ends a solution) are never extended. Drawing from the search's own
seeded rng, and keeping the drawn particles in their order, makes a run repeat exactly.

The search ends when no particle is live, or when the next round does not fit the budget (each
round is checked before it is taken). It answers with the best complete particle by aggregated
score; with none, the best live one finished greedily within what is left. As in beam search,
a first round that cannot afford whole steps halves N until it can, and falls back to one greedy
solution when it cannot even at N = 1. trace["width"] is the N used.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from tsbench.contracts import PublicProblem, PublicTask
from tsbench.plugins import strategies

from .base import Estimates, Search, SearchBudget
from .stepping import Path, Stepper, WidthSearch, distinct


def resample(particles: list[Path], how: str, temperature: float, rng: np.random.Generator) -> list[Path]:
    """len(particles) draws with replacement, probability softmax(score / temperature), in draw order
    sorted by index (so the particles on one path stay together)."""
    scores = np.array([p.score(how) for p in particles]) / temperature
    weights = np.exp(scores - scores.max())
    drawn = rng.choice(len(particles), size=len(particles), p=weights / weights.sum())
    return [particles[i] for i in sorted(int(i) for i in drawn)]


@strategies.register("particle-filtering", "particle filtering: N particles stepped, PRM-weighted, resampled")
class ParticleFiltering(WidthSearch):
    """N = budget.samples particles (WidthSearch's Args; beam_width is unused).

    Args:
        temperature: of the softmax over aggregated scores that weights the resampling.
    """

    name = "particle-filtering"
    pool = "search"
    oracle = False

    def __init__(self, temperature: float = 1.0, **options: Any) -> None:
        options.setdefault("beam_width", 1)
        super().__init__(**options)
        if temperature <= 0:
            raise ValueError(f"temperature must be above 0, got {temperature}")
        self.resample_temperature = float(temperature)

    def search(
        self,
        problem: PublicProblem,
        task: PublicTask,
        estimates: Estimates,
        budget: SearchBudget,
        rng: np.random.Generator,
    ) -> Search:
        stepper = Stepper(problem, task, estimates, budget, rng, self.steps)
        particles = [Path() for _ in range(budget.samples)]
        rounds: list[dict[str, Any]] = []
        stopped = "all particles complete"
        while live := [p for p in particles if not p.done]:
            counts = Counter(p.key for p in live)
            parents = distinct(live)
            # A first round must afford whole steps: one cut short at the root decides nothing.
            first = self.steps.max_step_tokens if not rounds else 1
            cap, groups = yield from stepper.step(
                parents, [counts[p.key] for p in parents], min_cap=first, merge=False
            )
            if cap < 1 and not rounds and len(particles) > 1:
                particles = particles[: len(particles) // 2]
                continue
            if cap < 1:
                stopped = "budget"
                break
            stepped = [p for p in particles if p.done] + [c for group in groups for c in group]
            particles = resample(stepped, self.aggregate, self.resample_temperature, rng)
            rounds.append(
                {
                    "step_cap": cap,
                    "particles": [p.as_dict() for p in stepped],
                    "kept": [p.as_dict() for p in distinct(particles)],
                    "spend": stepper.spend.as_dict(),
                }
            )
        trace = {"width": len(particles), "rounds": rounds, "stopped": stopped, "aggregate": self.aggregate}
        if not rounds:
            return (yield from stepper.fallback(trace))
        completed = distinct(p for p in particles if p.done)
        live = distinct(p for p in particles if not p.done)
        return (yield from stepper.conclude(completed, live, self.aggregate, trace))
