"""RunSpec: everything that decides a run's results, from a YAML file and/or CLI flags."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from tsbench.errors import UserError

DEFAULT_STRATEGIES = ("greedy", "majority", "pass@k")
DEFAULT_BUDGETS = (1, 2, 4, 8, 16)
# Fields that change where or how fast a run goes, never what it produces: left out of the run id.
NOT_IN_RUN_ID = ("output", "data_dir", "threads")
BUDGET_UNITS = ("samples", "tokens", "flops")
DEFAULT_POOL_SIZE = 16  # samples per problem when budgets are tokens or FLOPs
DEFAULT_THINK_TAGS = ("<think>", "</think>")


@dataclass(frozen=True)
class RunSpec:
    """What to run.

    Args:
        task: task name, or a path to a task YAML file.
        task_options: options passed to the task factory (e.g. arith levels).
        limit: number of problems (the first ones).
        seed: seeds procedural tasks and every sample.
        runner: runner name.
        model: model path or id; None for the runner's default.
        strategies: strategy names.
        verifiers: verifier names; strategies that need a verifier run once with each.
        strategy_options: strategy name -> options for its constructor (e.g. beam width).
        verifier_options: verifier name -> options for its factory.
        runner_options: options for the runner factory (e.g. base_url for `openai`).
        budgets: budget levels, in budget_unit; with samples the sampled pool holds max(budgets).
        budget_unit: samples (k policy samples; N for searches; verifier spend not bounded),
            tokens (policy prompt + generated + verifier tokens per problem) or flops (the same
            in FLOPs). With tokens or FLOPs a level bounds each row's whole spend on a problem
            (tsbench.scoring for pools, strategies/stepping.py for searches).
        pool_size: samples per problem in the sampled pool; None for max(budgets) with samples,
            else DEFAULT_POOL_SIZE.
        temperature, top_p: sampling settings of the sampled pool (greedy always uses 0).
        max_tokens: generation cap per sample; None for the task's default.
        data_dir: local data folder; None for $TSBENCH_DATA_DIR or the hub.
        output: results folder; None for results/<run-id>.
        threads: CPU threads for CPU runners; None lets the runner choose.
        param_count: the policy's parameter count, for FLOPs, where the runner cannot know it
            (an OpenAI-compatible server); None takes the runner's.
        batch_sequences: most sequences per generate call (tsbench.scheduler); None takes the
            runner's preference, which the run then records here, so a rerun batches the same way.
        max_live: most searches live at once (tsbench.scheduler); None for its default.
        think_tags: the (open, close) tags around a reasoning model's thinking; answers are
            extracted from what follows it (tsbench.thinking). () grades the whole text.
    """

    task: str = "arith"
    task_options: dict[str, Any] = field(default_factory=dict)
    limit: int | None = 30
    seed: int = 0
    runner: str = "llamacpp"
    model: str | None = None
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    budgets: tuple[int, ...] = DEFAULT_BUDGETS
    budget_unit: str = "samples"
    pool_size: int | None = None
    verifiers: tuple[str, ...] = ()
    strategy_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    verifier_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    runner_options: dict[str, Any] = field(default_factory=dict)
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int | None = None
    data_dir: str | None = None
    output: str | None = None
    threads: int | None = None
    param_count: int | None = None
    batch_sequences: int | None = None
    max_live: int | None = None
    think_tags: tuple[str, ...] = DEFAULT_THINK_TAGS

    def identity(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in NOT_IN_RUN_ID}
        # Left out at their defaults, so that runs from before these fields keep their ids.
        if data["budget_unit"] == "samples":
            del data["budget_unit"]
        for name in ("pool_size", "param_count", "batch_sequences", "max_live"):
            if data[name] is None:
                del data[name]
        if tuple(data["think_tags"]) == DEFAULT_THINK_TAGS:
            del data["think_tags"]
        return data

    def run_id(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, default=list)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def to_yaml(self) -> str:
        """The fields that decide results; `tsbench run -c` on this file reproduces the run."""
        data = self.identity()
        for name in ("strategies", "budgets", "verifiers", "think_tags"):
            if name in data:
                data[name] = list(data[name])
        return yaml.safe_dump(data, sort_keys=False)


def _positive_int(value: Any, where: str, fix: str) -> int:
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and value.isdigit())
    ):
        raise UserError(f"{where}: {value!r} is not a positive integer; {fix}")
    if int(value) <= 0:
        raise UserError(f"{where}: {value!r} must be at least 1; {fix}")
    return int(value)


def _number(value: Any, where: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {value!r} is not a number; give a number from {low} to {high}") from None
    if not low <= number <= high:
        raise UserError(f"{where}: {number} is out of range; give a number from {low} to {high}")
    return number


def _count(value: Any, where: str, what: str = "FLOP count", example: str = "1e11,1e12") -> int:
    """A large positive count written as a number or in e-notation."""
    try:
        number = float(str(value).strip())
    except ValueError:
        number = 0.0
    if not number >= 1:
        raise UserError(f"{where}: {value!r} is not a positive {what}; give e.g. {example}")
    return int(number)


def _names(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(item).strip() for item in items if str(item).strip())


def build_spec(values: dict[str, Any], where: str) -> RunSpec:
    """Validate raw values (from YAML or flags) into a RunSpec.

    Args:
        values: field name -> raw value; unknown names are an error.
        where: how error messages name the source, e.g. 'spec.yaml' or 'command line'.
    """
    known = {f.name for f in fields(RunSpec)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{where}: unknown field '{unknown[0]}'; known fields: {', '.join(sorted(known))}")
    clean: dict[str, Any] = dict(values)
    unit = str(clean.get("budget_unit", "samples"))
    if unit not in BUDGET_UNITS:
        raise UserError(f"{where}: budget_unit '{unit}' is unknown; use one of {', '.join(BUDGET_UNITS)}")
    clean["budget_unit"] = unit
    if "budgets" in clean:
        raw = clean["budgets"]
        items = raw.split(",") if isinstance(raw, str) else (raw if isinstance(raw, list | tuple) else [raw])
        if unit == "flops":
            budgets = sorted({_count(b, f"{where}: budgets") for b in items})
        else:
            fix = f"give budgets in {unit} as positive integers, e.g. " + (
                "1,4,16" if unit == "samples" else "200,800"
            )
            budgets = sorted({_positive_int(str(b).strip(), f"{where}: budgets", fix) for b in items})
        clean["budgets"] = tuple(budgets)
    elif unit != "samples":
        raise UserError(
            f"{where}: budget_unit {unit} needs budgets in {unit}, e.g. --budget "
            + ("200,800" if unit == "tokens" else "1e11,1e12")
        )
    if "strategies" in clean:
        clean["strategies"] = _names(clean["strategies"])
        if not clean["strategies"]:
            raise UserError(
                f"{where}: strategies is empty; name at least one (see `tsbench list strategies`)"
            )
    if clean.get("param_count") is not None:
        clean["param_count"] = _count(
            clean["param_count"], f"{where}: param_count", "parameter count", "1.5e9"
        )
    for name in ("limit", "max_tokens", "threads", "pool_size", "batch_sequences", "max_live"):
        if clean.get(name) is not None:
            clean[name] = _positive_int(clean[name], f"{where}: {name}", f"give {name} as a positive integer")
    if "seed" in clean:
        try:
            clean["seed"] = int(clean["seed"])
        except (TypeError, ValueError):
            raise UserError(f"{where}: seed {clean['seed']!r} is not an integer; give e.g. seed: 0") from None
    if "temperature" in clean:
        clean["temperature"] = _number(clean["temperature"], f"{where}: temperature", 0.0, 5.0)
    if "top_p" in clean:
        clean["top_p"] = _number(clean["top_p"], f"{where}: top_p", 0.01, 1.0)
    if "verifiers" in clean:
        clean["verifiers"] = _names(clean["verifiers"])
    if "think_tags" in clean:
        clean["think_tags"] = _think_tags(clean["think_tags"], where)
    for name in ("task_options", "runner_options", "strategy_options", "verifier_options"):
        if name in clean and not isinstance(clean[name], dict):
            raise UserError(f"{where}: {name} must be a mapping, e.g. {name}: {{key: value}}")
    for name in ("strategy_options", "verifier_options"):
        for key, value in clean.get(name, {}).items():
            if not isinstance(value, dict):
                raise UserError(f"{where}: {name}.{key} must be a mapping of options, got {value!r}")
    for name in ("task", "runner", "model", "data_dir", "output"):
        if clean.get(name) is not None:
            clean[name] = str(clean[name])
    return RunSpec(**clean)


def _think_tags(value: Any, where: str) -> tuple[str, ...]:
    tags = tuple(value) if isinstance(value, list | tuple) else None
    if tags == () or (
        tags and len(tags) == 2 and all(isinstance(t, str) and t for t in tags) and tags[0] != tags[1]
    ):
        return tags
    raise UserError(
        f"{where}: think_tags {value!r} must be two different non-empty strings, e.g. "
        "['<think>', '</think>'], or [] to grade the whole text"
    )


def read_spec_file(path: str) -> dict[str, Any]:
    """Raw values from a YAML spec file (validated later by build_spec, together with flags)."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"spec file {path} does not exist; give the path of a YAML spec (see examples/)")
    try:
        values = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(
            f"spec file {path} is not valid YAML{line}: {getattr(exc, 'problem', exc)}; fix the syntax"
        ) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"spec file {path} must be a YAML mapping of fields (task:, strategies:, ...)")
    return values
