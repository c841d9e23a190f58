"""The four plugin registries. Import from here to register or look up a plugin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tsbench.contracts import Runner, Task
from tsbench.registry import Registry

TaskFactory = Callable[..., Task]
RunnerFactory = Callable[..., Runner]


class TaskRegistry(Registry[TaskFactory]):
    """Tasks by name; `lm-eval:NAME` is any generate_until task of lm-evaluation-harness."""

    def get(self, name: str) -> TaskFactory:
        self._load()
        if name.startswith("lm-eval:") and name not in self._entries:
            from tsbench.tasks.lm_eval_adapter import lm_eval_factory

            return lm_eval_factory(name.removeprefix("lm-eval:"))
        return super().get(name)


tasks: TaskRegistry = TaskRegistry(
    "task",
    "tsbench.tasks",
    (
        "tsbench.tasks.arith",
        "tsbench.tasks.countdown",
        "tsbench.tasks.declared",
        "tsbench.tasks.lm_eval_adapter",
    ),
)
runners: Registry[RunnerFactory] = Registry("runner", "tsbench.runners", ("tsbench.runners.catalog",))
strategies: Registry[Any] = Registry("strategy", "tsbench.strategies", ("tsbench.strategies",))
verifiers: Registry[Any] = Registry("verifier", "tsbench.verifiers", ("tsbench.verifiers",))
