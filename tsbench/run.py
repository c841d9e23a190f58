"""A run, before it generates: spec -> task, problems, arms, verifiers and runner, all checked.

What can fail on bad input fails here, before anything is generated; tsbench.generation then
generates and records.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tsbench import plugins
from tsbench.contracts import (
    CountsPromptTokens,
    Problem,
    Runner,
    RunnerInfo,
    Task,
)
from tsbench.errors import UserError
from tsbench.scoring import Arm
from tsbench.spec import DEFAULT_POOL_SIZE, RunSpec

DEFAULT_MAX_TOKENS = 256
POOLS = ("greedy", "sampled")


def resolve_task(spec: RunSpec) -> Task:
    if spec.task.endswith((".yaml", ".yml")):
        from tsbench.tasks.declared import load_task_file

        if spec.task_options:
            raise UserError(f"task file {spec.task} takes no task options; remove task_options")
        return load_task_file(spec.task)
    factory = plugins.tasks.get(spec.task)
    return factory(**spec.task_options)


def pool_size(spec: RunSpec) -> int:
    """Samples per problem in the sampled pool."""
    if spec.pool_size:
        return spec.pool_size
    return max(spec.budgets) if spec.budget_unit == "samples" else DEFAULT_POOL_SIZE


def needs_verifier(strategy: Any) -> bool:
    return strategy.pool == "search" or bool(getattr(strategy, "needs_verifier", False))


@dataclass
class Prepared:
    """A validated run, ready to generate: everything that can fail on bad input has been tried."""

    spec: RunSpec
    task: Task
    problems: list[Problem]
    arms: list[Arm]

    @property
    def pools(self) -> list[str]:
        return [pool for pool in POOLS if any(a.strategy.pool == pool for a in self.arms)]


def build_strategy(spec: RunSpec, name: str) -> Any:
    factory = plugins.strategies.get(name)
    options = spec.strategy_options.get(name, {})
    try:
        return factory(**options)
    except TypeError as exc:
        raise UserError(
            f"strategy_options.{name}: {exc}; see the strategy's docstring for its options"
        ) from None


def prepare(spec: RunSpec) -> Prepared:
    """Resolve task, problems, strategies and verifier names; fill the task's default max_tokens."""
    task = resolve_task(spec)
    for name in spec.verifiers:
        plugins.verifiers.get(name)
    arms: list[Arm] = []
    for name in spec.strategies:
        strategy = build_strategy(spec, name)
        if not needs_verifier(strategy):
            arms.append(Arm(strategy, None))
        elif not spec.verifiers:
            raise UserError(
                f"strategy {name} needs a verifier; pass --verifier NAME (see `tsbench list verifiers`)"
            )
        else:
            arms += [Arm(strategy, verifier) for verifier in spec.verifiers]
    if spec.budget_unit == "samples" and spec.pool_size and spec.pool_size < max(spec.budgets):
        raise UserError(
            f"pool_size {spec.pool_size} is below the largest budget {max(spec.budgets)}; "
            "raise pool_size or drop it (it defaults to the largest budget)"
        )
    problems = task.load(spec.limit, spec.seed, spec.data_dir)
    if not problems:
        raise UserError(f"task {spec.task} has no problems to run; check its data file and --limit")
    task_generation = getattr(task, "generation", None) or {}
    spec = replace(spec, max_tokens=spec.max_tokens or task_generation.get("max_tokens", DEFAULT_MAX_TOKENS))
    return Prepared(spec, task, problems, arms)


def build_verifiers(prepared: Prepared, runner: Runner) -> dict[str, Any]:
    """Build the verifiers the arms consult, on the policy runner (llm-judge and rollouts use it).

    Step-wise searches need a process verifier and pool strategies an outcome verifier: pairings
    of the wrong shape are dropped, and a strategy left with no verifier is an input error.
    """
    names = sorted({a.verifier for a in prepared.arms if a.verifier is not None})
    built = {
        name: plugins.verifiers.get(name)(runner, **prepared.spec.verifier_options.get(name, {}))
        for name in names
    }

    def fits(arm: Arm) -> bool:
        if arm.verifier is None:
            return True
        shape = "score_steps" if arm.strategy.pool == "search" else "score"
        return hasattr(built[arm.verifier], shape)

    kept = [a for a in prepared.arms if fits(a)]
    for name in prepared.spec.strategies:
        if any(a.strategy.name == name for a in prepared.arms) and not any(
            a.strategy.name == name for a in kept
        ):
            search = any(a.strategy.name == name and a.strategy.pool == "search" for a in prepared.arms)
            need, example = (
                ("a process verifier", "llm-judge") if search else ("an outcome verifier", "self-certainty")
            )
            raise UserError(
                f"strategy {name} needs {need}, but none of {', '.join(names)} is one; "
                f"add e.g. --verifier {example}"
            )
    prepared.arms = kept
    return built


class WithParameterCount:
    """A runner whose info() reports the parameter count the user gave (--param-count), so that
    every FLOP on the ledger, a search's or a verifier's on the same runner too, uses it."""

    def __init__(self, runner: Any, parameters: int) -> None:
        self._runner, self._parameters = runner, parameters

    def info(self) -> RunnerInfo:
        return replace(self._runner.info(), parameters=self._parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)


def open_runner(spec: RunSpec) -> Any:
    """The spec's runner, loaded; wrapped to report --param-count where the spec gives one."""
    runner = plugins.runners.get(spec.runner)(model=spec.model, threads=spec.threads, **spec.runner_options)
    return WithParameterCount(runner, spec.param_count) if spec.param_count else runner


def check_budgets(prepared: Prepared, runner: Runner, parameters: int, verifiers: dict[str, Any]) -> None:
    """Refuse, before generating, budgets the run could not keep."""
    spec = prepared.spec
    if spec.budget_unit == "flops" and parameters <= 0:
        raise UserError(
            f"budgets in FLOPs need the model's parameter count, which runner {spec.runner} cannot "
            "know; pass --param-count N (e.g. --param-count 1.5e9)"
        )
    searches = [a for a in prepared.arms if a.strategy.pool == "search"]
    if searches and not isinstance(runner, CountsPromptTokens):
        raise UserError(
            f"runner {spec.runner} cannot count prompt tokens before generating, which searches need "
            "to keep each step within its budget; use another runner or drop the search strategies"
        )
    if spec.budget_unit != "samples":
        for arm in searches:
            if not callable(getattr(verifiers[arm.verifier or ""], "cost_bound", None)):
                raise UserError(
                    f"verifier {arm.verifier} cannot bound its cost before scoring, so {arm.strategy.name} "
                    f"cannot keep it within budgets in {spec.budget_unit}; use budgets in samples or "
                    "another verifier"
                )
