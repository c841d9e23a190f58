"""A run's two identities: what determines its samples, and what determines its scores.

Samples are kept as generated and are only ever reused under the same sample identity: the task's
problems and prompts, the model file, the runner and its engine, the sampling settings and seeds,
and the code that generates (the runner's own decode loop, the run loop, and the searches and
verifiers that call the model). Scores are derived from stored samples by the extractor, canonical form, grader
and pool strategies: a change there re-scores the stored samples without generating anything.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tsbench import __version__
from tsbench.contracts import Problem, RunnerInfo, Task, task_stop


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def source_digest(objects: Iterable[Any]) -> str:
    """sha256 over the source files that define these objects (their modules), in name order."""
    files: dict[str, str] = {}
    for obj in objects:
        name = obj if isinstance(obj, str) else getattr(obj, "__module__", "")
        module = importlib.import_module(name) if isinstance(obj, str) else sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path and Path(path).is_file():
            files[module.__name__] = hashlib.sha256(Path(path).read_bytes()).hexdigest()  # type: ignore[union-attr]
        elif not isinstance(obj, str):
            try:
                files[repr(obj)] = hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()
            except (OSError, TypeError):
                files[repr(obj)] = "unknown"
    return digest(files)


def problems_digest(problems: list[Problem]) -> str:
    """The problems as loaded: ids, questions, references and metadata, in order."""
    return digest([[p.id, p.question, p.reference, p.metadata] for p in problems])


def prompts_digest(task: Task, problems: list[Problem]) -> str:
    return digest([task.messages(p.public()) for p in problems])


GENERATION_MODULES = (
    "tsbench.generation",
    "tsbench.scheduler",
    "tsbench.strategies.base",
    "tsbench.strategies.stepping",
    "tsbench.verifiers.base",
)


def sample_identity(
    spec_identity: dict[str, Any],
    task: Task,
    problems: list[Problem],
    info: RunnerInfo,
    runner: Any,
    generating: Iterable[Any],
) -> dict[str, Any]:
    """Everything that determines a run's samples, field by field (so a change can be named).

    Args:
        spec_identity: RunSpec.identity(): task, options, model path, runner and its options,
            strategies, verifiers and their options, budgets, sampling settings, seed.
        task, problems: the task and the problems it loaded (their prompts and the task's stop
            strings determine the samples).
        info: the loaded runner's description (engine, version, dtype, model sha256, parameters).
        runner: the runner object, whose module's code decodes (with the modules it names in
            `code_modules`, e.g. llama.cpp's session).
        generating: the search strategies and verifiers of the run (they call the model); the
            generation loop, the scheduler and what searches share (GENERATION_MODULES: how
            pools are requested and seeded, how needs are batched) are always included.
    """
    identity = {
        "spec": spec_identity,
        "data_sha256": problems_digest(problems),
        "prompts_sha256": prompts_digest(task, problems),
        "task_stop": list(task_stop(task)),  # they end every sample, so they determine the samples
        "model_sha256": info.model_sha256,
        "model_id": info.model_id,
        "model_parameters": info.parameters,
        "engine": info.engine,
        "engine_version": info.engine_version,
        "dtype": info.dtype,
        "runner_code_sha256": source_digest(
            [runner, *getattr(runner, "code_modules", ()), "tsbench.runners.sampling", "tsbench.runners.chat"]
        ),
        "generation_code_sha256": source_digest([*generating, *GENERATION_MODULES]),
    }
    # As it reads back from identity.json: tuples become lists, so a reopened run compares equal.
    loaded: dict[str, Any] = json.loads(json.dumps(identity, sort_keys=True, default=str))
    return loaded


def run_id(identity: dict[str, Any]) -> str:
    return digest(identity)[:12]


def scoring_identity(task: Task, strategies: Iterable[Any]) -> dict[str, Any]:
    """What determines scores from stored samples: the task's extraction, canonical form and
    grading code (and, for a task declared in YAML, its extractor and grader), the pool
    strategies' code, and this tsbench's version."""
    return {
        "tsbench": __version__,
        "task_code_sha256": source_digest(
            [
                task,
                "tsbench.tasks.answers",
                "tsbench.tasks.math_equivalence",
                "tsbench.tasks.declared",
                "tsbench.scoring",
                "tsbench.thinking",
                "tsbench.answer_after_thinking",
            ]
        ),
        "extract": getattr(task, "extractor", None),
        "grade": getattr(task, "grader", None),
        "strategy_code_sha256": source_digest(strategies),
    }


def changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Names of the fields that differ, 'spec.temperature' style, with short old -> new values."""
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            found += changes(a, b, f"{prefix}{key}.")
        else:
            found.append(f"{prefix}{key} ({_short(a)} -> {_short(b)})")
    return found


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 24 else text[:12] + "..."
