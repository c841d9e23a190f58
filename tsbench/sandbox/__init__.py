"""A sandbox for untrusted generated code: see runner.py for how, docs/CODE_TASKS.md for why."""

from .runner import (
    CONTAINMENTS,
    SANDBOX_ENV,
    CodeJob,
    ExecResult,
    Limits,
    choose_containment,
    execute,
    execute_many,
)

__all__ = [
    "CONTAINMENTS",
    "SANDBOX_ENV",
    "CodeJob",
    "ExecResult",
    "Limits",
    "choose_containment",
    "execute",
    "execute_many",
]
