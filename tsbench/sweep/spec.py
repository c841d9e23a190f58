"""A sweep spec: the cross product of runners, models, tasks, strategies, budgets, temperatures and
seeds, expanded into cells, each an ordinary run spec (tsbench.spec.RunSpec).

    # fields every cell shares (any RunSpec field)
    limit: 20
    verifiers: [self-certainty]
    # axes: lists; the cells are their cross product, in this order of nesting
    runners: [llamacpp]                      # names, or {runner: NAME, runner_options: {...}}
    models: [null]                           # null for the runner's default, a path or id, or
                                             # {model: ID, param_count: N, runner: NAME}
    tasks: [arith, {task: gsm8k, task_options: {}}]
    strategies: [majority, [beam-search, dvts]]   # an entry that is a list is one cell's arms
    budgets: [1, 4, [8, 16]]                  # an entry that is a list is one cell's levels
    temperatures: [0.7]
    seeds: [0, 1, 2]

A model entry that names a runner pairs only with that runner. A cell's identity is its run's
(tsbench.identity): any cell can be re-run, resumed, or served from a cache alone.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from typing import Any

from tsbench.errors import UserError
from tsbench.spec import RunSpec, build_spec, read_spec_file

AXES = ("runners", "models", "tasks", "strategies", "budgets", "temperatures", "seeds")
SWEEP_ONLY = ("results",)


@dataclass(frozen=True)
class Cell:
    """One run of a sweep.

    Args:
        index: its place in the sweep's order.
        spec: the run.
        where: the sweep file and the axis values that made it, for messages.
    """

    index: int
    spec: RunSpec
    where: str

    @property
    def engine(self) -> tuple[Any, ...]:
        """What a loaded runner is reused for: cells with the same key share one engine."""
        s = self.spec
        return (s.runner, s.model, repr(sorted(s.runner_options.items())), s.threads, s.param_count)

    @property
    def label(self) -> str:
        s = self.spec
        model = s.model or "default"
        budgets = ",".join(str(b) for b in s.budgets)
        return (
            f"{s.runner}/{model} {s.task} {'+'.join(s.strategies)} @{budgets} T={s.temperature} seed={s.seed}"
        )


@dataclass(frozen=True)
class Sweep:
    """The expanded sweep: its cells, and the results root their run folders go under."""

    cells: list[Cell]
    results: str


def _axis(values: dict[str, Any], name: str, default: list[Any], where: str) -> list[Any]:
    raw = values.pop(name, default)
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise UserError(f"{where}: axis {name} is empty; give at least one entry or drop it")
    return items


def _runner_entry(entry: Any, where: str) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"runner": entry}
    if (
        isinstance(entry, dict)
        and set(entry) <= {"runner", "runner_options", "threads"}
        and "runner" in entry
    ):
        return dict(entry)
    raise UserError(
        f"{where}: runners entry {entry!r} must be a runner name or {{runner: NAME, runner_options: {{...}}}}"
    )


def _model_entry(entry: Any, where: str) -> dict[str, Any]:
    if entry is None or isinstance(entry, str):
        return {"model": entry}
    if isinstance(entry, dict) and set(entry) <= {"model", "param_count", "runner", "runner_options"}:
        return dict(entry)
    raise UserError(
        f"{where}: models entry {entry!r} must be null, a model path or id, or "
        "{model: ID, param_count: N, runner: NAME}"
    )


def _task_entry(entry: Any, where: str) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"task": entry}
    if (
        isinstance(entry, dict)
        and set(entry) <= {"task", "task_options", "limit", "max_tokens"}
        and "task" in entry
    ):
        return dict(entry)
    raise UserError(
        f"{where}: tasks entry {entry!r} must be a task name or {{task: NAME, task_options: {{...}}}}"
    )


def _group(entry: Any) -> list[Any]:
    return list(entry) if isinstance(entry, list | tuple) else [entry]


def expand(values: dict[str, Any], where: str) -> Sweep:
    """The cells of a sweep spec's values, each checked as a RunSpec (nothing is loaded).

    Args:
        values: the spec file's mapping.
        where: the file, for messages.
    Returns:
        the sweep, its cells in axis order (runners outermost, seeds innermost).
    """
    values = dict(values)
    for singular, plural in (
        ("runner", "runners"),
        ("model", "models"),
        ("task", "tasks"),
        ("temperature", "temperatures"),
        ("seed", "seeds"),
    ):
        if singular in values and plural in values:
            raise UserError(f"{where}: give {singular} or {plural}, not both")
    if "output" in values:
        raise UserError(
            f"{where}: a sweep's cells each get their own run folder; use results: DIR, not output"
        )
    base_fields = {f.name for f in fields(RunSpec)}
    unknown = sorted(set(values) - base_fields - set(AXES) - set(SWEEP_ONLY) - {"temperature", "budgets"})
    if unknown:
        raise UserError(
            f"{where}: unknown field '{unknown[0]}'; a sweep takes the axes {', '.join(AXES)}, "
            f"results, and any run field ({', '.join(sorted(base_fields))})"
        )
    results = str(values.pop("results", "results"))
    runners = [
        _runner_entry(e, where) for e in _axis(values, "runners", [values.pop("runner", "llamacpp")], where)
    ]
    models = [_model_entry(e, where) for e in _axis(values, "models", [values.pop("model", None)], where)]
    tasks = [_task_entry(e, where) for e in _axis(values, "tasks", [values.pop("task", "arith")], where)]
    strategies = [_group(e) for e in _axis(values, "strategies", [["greedy", "majority", "pass@k"]], where)]
    budgets = [_group(e) for e in _axis(values, "budgets", [[1, 2, 4, 8, 16]], where)]
    temperatures = _axis(values, "temperatures", [values.pop("temperature", 0.7)], where)
    seeds = _axis(values, "seeds", [values.pop("seed", 0)], where)
    cells: list[Cell] = []
    seen: dict[str, str] = {}
    for runner, model, task, arms, levels, temperature, seed in itertools.product(
        runners, models, tasks, strategies, budgets, temperatures, seeds
    ):
        if model.get("runner", runner["runner"]) != runner["runner"]:
            continue
        cell_values = {**values, **task, "strategies": arms, "budgets": levels}
        cell_values.update(runner=runner["runner"], temperature=temperature, seed=seed)
        cell_values["model"] = model.get("model")
        options = {**values.get("runner_options", {}), **runner.get("runner_options", {})}
        options.update(model.get("runner_options", {}))
        if options:
            cell_values["runner_options"] = options
        for key in ("threads", "param_count"):
            if key in runner or key in model:
                cell_values[key] = model.get(key, runner.get(key))
        label = (
            f"{where}: cell {len(cells) + 1} ({task['task']}, {'+'.join(map(str, arms))}, budgets {levels})"
        )
        spec = build_spec(cell_values, label)
        key = spec.run_id()
        if key in seen:
            raise UserError(f"{label} is the same run as {seen[key]}; remove the repeated axis entry")
        seen[key] = label
        cells.append(Cell(len(cells), spec, label))
    if not cells:
        raise UserError(f"{where}: no cell is left (every model entry names another runner); check models")
    return Sweep(cells, results)


def load_sweep(path: str) -> Sweep:
    """The sweep in a YAML file (tsbench.spec.read_spec_file's rules), expanded."""
    return expand(read_spec_file(path), path)
