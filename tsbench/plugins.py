"""The four plugin registries. Import from here to register or look up a plugin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tsbench.contracts import Runner, Task
from tsbench.registry import Registry

TaskFactory = Callable[..., Task]
RunnerFactory = Callable[..., Runner]

tasks: Registry[TaskFactory] = Registry(
    "task", "tsbench.tasks", ("tsbench.tasks.arith", "tsbench.tasks.declared")
)
runners: Registry[RunnerFactory] = Registry("runner", "tsbench.runners", ("tsbench.runners.catalog",))
strategies: Registry[Any] = Registry("strategy", "tsbench.strategies", ("tsbench.strategies",))
verifiers: Registry[Any] = Registry("verifier", "tsbench.verifiers", ("tsbench.verifiers",))
