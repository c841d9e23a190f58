"""Built-in strategies; each module registers one."""

from . import greedy, majority, pass_at_k

__all__ = ["greedy", "majority", "pass_at_k"]
