"""Built-in strategies; each module registers one."""

from . import (
    beam_search,
    best_of_n,
    dvts,
    greedy,
    majority,
    mcts,
    particle_filtering,
    pass_at_k,
    weighted_best_of_n,
)

__all__ = [
    "beam_search",
    "best_of_n",
    "dvts",
    "greedy",
    "majority",
    "mcts",
    "particle_filtering",
    "pass_at_k",
    "weighted_best_of_n",
]
