"""A run, before it generates: spec -> task, problems, arms, verifiers and runner, all checked.

What can fail on bad input fails here, before anything is generated; tsbench.generation then
generates and records.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
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
from tsbench.thinking import ThinkTags

DEFAULT_MAX_TOKENS = 256
POOLS = ("greedy", "sampled")


def resolve_task(spec: RunSpec) -> Task:
    """The spec's task, its answers read after a reasoning model's thinking (spec.think_tags)."""
    from tsbench.answer_after_thinking import with_thinking

    if spec.task.endswith((".yaml", ".yml")):
        from tsbench.tasks.declared import load_task_file

        if spec.task_options:
            raise UserError(f"task file {spec.task} takes no task options; remove task_options")
        return with_thinking(load_task_file(spec.task), spec.think_tags)
    factory = plugins.tasks.get(spec.task)
    return with_thinking(factory(**spec.task_options), spec.think_tags)


def pool_size(spec: RunSpec) -> int:
    """Samples per problem in the sampled pool."""
    if spec.pool_size:
        return spec.pool_size
    return max(spec.budgets) if spec.budget_unit == "samples" else DEFAULT_POOL_SIZE


def needs_verifier(strategy: Any) -> bool:
    """Searches consult a verifier unless they say otherwise (proposal strategies such as budget
    forcing or revision set needs_verifier = False); pool strategies only when they say so."""
    return bool(getattr(strategy, "needs_verifier", strategy.pool == "search"))


def split_arm_name(name: str) -> tuple[str, str]:
    """'sequential-revision:r4' -> ('sequential-revision', 'r4'): a registered strategy and a label,
    so one strategy runs as several arms, each with its own strategy_options entry (keyed by the
    whole name). A name without ':' is its own strategy with no label."""
    base, _, label = name.partition(":")
    return base, label


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


def check_options(factory: Any, options: dict[str, Any], where: str) -> None:
    """Refuse an option the factory does not take, or one of a plainly wrong type (text where
    it takes a number), in one line naming the option, its value and what it takes."""
    target = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(target)
        parameters = inspect.signature(target).parameters
    except (NameError, TypeError, ValueError):
        return
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key, value in options.items():
        if key not in parameters and not takes_any:
            known = ", ".join(k for k in parameters if k not in ("self", "runner")) or "none"
            raise UserError(f"{where}: unknown option '{key}'; it takes: {known}")
        allowed = _plain_types(hints.get(key))
        if allowed and value is not None and not _fits(value, allowed):
            names = " or ".join(t.__name__ for t in allowed)
            raise UserError(
                f"{where}.{key}: {value!r} is not {names}; give e.g. {key}={_example(allowed[0])}"
            )


def _plain_types(hint: Any) -> tuple[type, ...]:
    """int, float, bool, str (or those or None); () for anything else, which is not checked."""
    plain = (int, float, bool, str)
    if hint in plain:
        return (hint,)
    args = typing.get_args(hint)
    if args and type(None) in args and all(a in plain or a is type(None) for a in args):
        return tuple(a for a in args if a is not type(None))
    return ()


def _fits(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    return isinstance(value, allowed)


def _example(kind: type) -> str:
    return {int: "4", float: "0.5", bool: "true", str: "TEXT"}[kind]


def build_strategy(spec: RunSpec, name: str) -> Any:
    base, label = split_arm_name(name)
    if ":" in label or (label and not label.replace("-", "").replace("_", "").replace(".", "").isalnum()):
        raise UserError(
            f"strategy {name!r}: an arm label after ':' takes letters, digits, '-', '_' and '.'; e.g. sequential-revision:r4"
        )
    factory = plugins.strategies.get(base)
    options = spec.strategy_options.get(name, {})
    check_options(factory, options, f"strategy_options.{name}")
    try:
        return _labelled(factory(**options), name)
    except TypeError as exc:
        raise UserError(
            f"strategy_options.{name}: {exc}; see the strategy's docstring for its options"
        ) from None
    except ValueError as exc:
        raise UserError(
            f"strategy_options.{name}: {exc}; see the strategy's docstring for its options"
        ) from None


def _labelled(strategy: Any, name: str) -> Any:
    """The strategy under its arm name (rows and records are keyed by it)."""
    if name != getattr(strategy, "name", name):
        try:
            strategy.name = name
        except AttributeError:
            raise UserError(f"strategy {name}: this strategy cannot take an arm label; drop ':...'") from None
    return strategy


def load_problems(spec: RunSpec) -> tuple[Task, list[Problem]]:
    """The spec's task and the problems it loads (spec.limit, spec.seed, spec.data_dir)."""
    task = resolve_task(spec)
    return task, task.load(spec.limit, spec.seed, spec.data_dir)


def prepare(spec: RunSpec, load: Callable[[RunSpec], tuple[Task, list[Problem]]] = load_problems) -> Prepared:
    """Resolve task, problems, strategies and verifier names; fill the task's default max_tokens.

    Args:
        spec: the run.
        load: gives the task and its problems (a sweep shares them between cells).
    """
    task, problems = load(spec)
    for name in spec.verifiers:
        plugins.verifiers.get(name)
    arms: list[Arm] = []
    for name in spec.strategies:
        strategy = build_strategy(spec, name)
        tags = getattr(strategy, "tags", None)  # a strategy that writes thinking (budget forcing)
        if isinstance(tags, ThinkTags) and (tags.open, tags.close) != tuple(spec.think_tags):
            raise UserError(
                f"strategy_options.{name}.tags {[tags.open, tags.close]} differ from the run's think_tags "
                f"{list(spec.think_tags)}, which grade its answers; set think_tags to the same tags"
            )
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
    for name in names:
        options = prepared.spec.verifier_options.get(name, {})
        check_options(plugins.verifiers.get(name), options, f"verifier_options.{name}")
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
        # The run's identity hashes the runner's module: the wrapped runner's, not this one's.
        self.__module__ = getattr(runner, "__module__", type(self).__module__)

    def info(self) -> RunnerInfo:
        return replace(self._runner.info(), parameters=self._parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)


def open_runner(spec: RunSpec, cache: bool = True) -> Any:
    """The spec's runner, loaded; wrapped to report --param-count where the spec gives one, and
    behind the generation cache (tsbench.cache) unless `cache` is False or $TSBENCH_GENERATION_CACHE=off."""
    from tsbench.cache import with_cache

    factory = plugins.runners.get(spec.runner)
    try:
        runner = factory(model=spec.model, threads=spec.threads, **spec.runner_options)
    except UserError:
        raise
    except Exception as exc:
        if not spec.runner_options:
            raise
        # The runners' factories take **options: a wrong name or type shows only here.
        raise UserError(
            f"runner {spec.runner} could not start with runner_options {spec.runner_options} "
            f"({type(exc).__name__}: {str(exc)[:160]}); check each option's name and type in the runner's docstring"
        ) from None
    if spec.param_count:
        runner = WithParameterCount(runner, spec.param_count)
    if not cache:
        return runner
    try:
        return with_cache(runner, spec.runner, spec.model, spec.runner_options)
    except BaseException:
        runner.close()
        raise


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
            if arm.verifier is not None and not callable(
                getattr(verifiers[arm.verifier or ""], "cost_bound", None)
            ):
                raise UserError(
                    f"verifier {arm.verifier} cannot bound its cost before scoring, so {arm.strategy.name} "
                    f"cannot keep it within budgets in {spec.budget_unit}; use budgets in samples or "
                    "another verifier"
                )
