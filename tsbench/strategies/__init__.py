"""Built-in strategies; each module registers one (or a family)."""

from . import (
    adaptive_consistency,
    beam_search,
    best_of_n,
    budget_forcing,
    certainty_probe,
    dvts,
    greedy,
    majority,
    mcts,
    particle_filtering,
    pass_at_k,
    prompting,
    revision,
    weighted_best_of_n,
)

__all__ = [
    "adaptive_consistency",
    "beam_search",
    "best_of_n",
    "budget_forcing",
    "certainty_probe",
    "dvts",
    "greedy",
    "majority",
    "mcts",
    "particle_filtering",
    "pass_at_k",
    "prompting",
    "revision",
    "weighted_best_of_n",
]
