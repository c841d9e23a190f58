"""Tasks declared in YAML: data source, prompt template, answer extractor and grader.

Every `*.yaml` beside this module is registered at import; `--task path/to/task.yaml` loads any
other file of the same shape, so a task needs no Python unless it needs new logic.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tsbench.contracts import AnyProblem, Message, Problem, Verdict
from tsbench.data import DataSource, LoadedRows, load_rows
from tsbench.errors import UserError
from tsbench.plugins import tasks

from .answers import CANONICALS, EXTRACTORS, GRADERS, REFERENCES, VERDICTS

# How a worked example states its final answer: the line every declared prompt asks for.
ANSWER_LINE = "Answer: {answer}"


@dataclass
class DeclaredTask:
    """A task whose whole behaviour comes from a YAML declaration."""

    name: str
    description: str
    source: DataSource
    question_field: str
    reference_field: str
    id_field: str | None
    metadata_fields: list[str]
    system: str
    user: str
    extractor: str
    reference_rule: str
    grader: str
    generation: dict[str, Any] = field(default_factory=dict)
    data_sha256: str | None = None
    train: DataSource | None = None  # the train split, for examples(); None: the task has none
    data_dir: str | None = None  # the folder load() read, where examples() reads the train split
    _train_rows: LoadedRows | None = field(default=None, repr=False, compare=False)

    @property
    def stop(self) -> tuple[str, ...]:
        """`generation.stop`: strings that end every sample (checked by parse_declaration)."""
        return tuple(self.generation.get("stop") or ())

    def load(self, limit: int | None, seed: int, data_dir: str | None) -> list[Problem]:
        loaded = load_rows(self.name, self.source, data_dir)
        self.data_sha256, self.data_dir = loaded.sha256, data_dir
        to_reference = REFERENCES[self.reference_rule]
        problems = []
        for index, row in enumerate(loaded.rows[:limit] if limit else loaded.rows):
            for needed in (self.question_field, self.reference_field):
                if needed not in row:
                    raise UserError(
                        f"task {self.name}: {loaded.where(index)} has no field '{needed}'; "
                        f"fix the file or the task's `fields` mapping"
                    )
            problems.append(
                Problem(
                    id=str(row[self.id_field]) if self.id_field else f"{self.name}-{index:05d}",
                    question=str(row[self.question_field]),
                    reference=to_reference(str(row[self.reference_field])),
                    metadata={k: row[k] for k in self.metadata_fields if k in row},
                )
            )
        return problems

    def examples(self, k: int, seed: int) -> list[Problem]:
        """k worked examples from the `train:` split: rows drawn with `seed` (a fixed shuffle, so the
        same seed gives the same first rows whatever k), each reference the row's solution with
        its '#### N' line rewritten as 'Answer: N', metadata["answer"] N.

        The split is read from the data folder load() was given (else TSBENCH_DATA_DIR, else the hub).
        """
        if self.train is None:
            raise UserError(
                f"task {self.name} has no train split to draw worked examples from; add a `train:` "
                "source to its YAML (same shape as `data:`), or use a zero-shot prompt"
            )
        if self._train_rows is None:
            self._train_rows = load_rows(self.name, self.train, self.data_dir)
        rows = self._train_rows.rows
        if not 0 <= k <= len(rows):
            raise UserError(
                f"task {self.name}: asked for {k} train examples, but {self._train_rows.origin} has "
                f"{len(rows)} rows; ask for at most {len(rows)}"
            )
        order = list(range(len(rows)))
        random.Random(f"{self.name}-train:{seed}").shuffle(order)
        return [self._worked(self._train_rows, index) for index in order[:k]]

    def _worked(self, loaded: LoadedRows, index: int) -> Problem:
        """Train row `index` as a worked example (see examples)."""
        row = loaded.rows[index]
        for needed in (self.question_field, self.reference_field):
            if needed not in row:
                raise UserError(
                    f"task {self.name}: {loaded.where(index)} has no field '{needed}'; "
                    "fix the train file or the task's `fields` mapping"
                )
        solution = str(row[self.reference_field])
        answer = REFERENCES[self.reference_rule](solution)
        working = solution.rsplit("####", 1)[0].rstrip() if self.reference_rule == "after_hashes" else ""
        metadata = {k: row[k] for k in self.metadata_fields if k in row}
        return Problem(
            id=f"{self.name}-train-{index:05d}",
            question=str(row[self.question_field]),
            reference=(working + "\n" if working else "") + ANSWER_LINE.format(answer=answer),
            metadata={**metadata, "answer": answer},
        )

    def messages(self, problem: AnyProblem) -> list[Message]:
        try:
            user = self.user.format(question=problem.question, **problem.metadata)
        except (KeyError, IndexError, ValueError) as exc:
            raise UserError(
                f"task {self.name}: prompt.user cannot be filled for problem {problem.id} ({type(exc).__name__}: "
                f"{exc}); use only {{question}} and the fields listed in fields.metadata, and write {{{{ }}}} for braces"
            ) from None
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def extract(self, text: str) -> str | None:
        return EXTRACTORS[self.extractor](text)

    def canonical(self, answer: str) -> str:
        """The grader's normal form: a normalised number for `numeric`, math-verify's reading for
        `math_equivalent` (see math_equivalence.canonical_math_many)."""
        return CANONICALS[self.grader]([answer])[0]

    def canonical_many(self, answers: Sequence[str]) -> list[str]:
        """canonical() of each answer; one round trip to the math-verify worker for them all."""
        return CANONICALS[self.grader](answers)

    def verdict(self, answer: str | None, problem: Problem) -> Verdict:
        return VERDICTS[self.grader](answer, problem.reference)

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return self.verdict(answer, problem).correct


def _need(spec: dict[str, Any], key: str, where: str, choices: dict[str, Any] | None = None) -> Any:
    if key not in spec:
        raise UserError(f"{where}: missing field '{key}'; add it (see tasks/gsm8k.yaml for the shape)")
    value = spec[key]
    if choices is not None and value not in choices:
        raise UserError(f"{where}: field '{key}' is '{value}'; use one of: {', '.join(sorted(choices))}")
    return value


def parse_declaration(spec: Any, where: str) -> DeclaredTask:
    """Build a task from a parsed YAML mapping; `where` names the file in error messages."""
    if not isinstance(spec, dict):
        raise UserError(f"{where}: a task file must be a YAML mapping; see tasks/gsm8k.yaml")
    if "python" in spec:  # logic YAML cannot say: the named DeclaredTask subclass builds the task
        built: DeclaredTask = _python_class(spec["python"], where).from_declaration(spec, where)
        return built
    data = _need(spec, "data", where)
    fields = _need(spec, "fields", where)
    prompt = _need(spec, "prompt", where)
    for key, value in (("data", data), ("fields", fields), ("prompt", prompt)):
        if not isinstance(value, dict):
            raise UserError(
                f"{where}: field '{key}' is {value!r}, not a mapping; see tasks/gsm8k.yaml for its shape"
            )
    return DeclaredTask(
        name=str(_need(spec, "name", where)),
        description=str(spec.get("description", "")),
        source=_source(data, f"{where} data", "test"),
        question_field=str(_need(fields, "question", f"{where} fields")),
        reference_field=str(_need(fields, "reference", f"{where} fields")),
        id_field=fields.get("id"),
        metadata_fields=list(fields.get("metadata", [])),
        system=str(prompt.get("system", "")),
        user=str(_need(prompt, "user", f"{where} prompt")),
        extractor=_need(spec, "extract", where, EXTRACTORS),
        reference_rule=_need({"reference": "as_is", **spec}, "reference", where, REFERENCES),
        grader=_need(spec, "grade", where, GRADERS),
        generation=_generation(spec.get("generation"), where),
        train=_train(spec.get("train"), where),
    )


def _source(data: dict[str, Any], where: str, split: str) -> DataSource:
    hub = data.get("hub") or {}
    return DataSource(
        local=str(_need(data, "local", where)),
        hub_path=hub.get("path"),
        hub_name=hub.get("name"),
        hub_split=hub.get("split", split),
    )


def _train(value: Any, where: str) -> DataSource | None:
    """The optional `train:` source, the same shape as `data:`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UserError(
            f"{where}: field 'train' is {value!r}, not a mapping; give it like `data:`, "
            "e.g. train: {local: gsm8k/train.jsonl}"
        )
    return _source(value, f"{where} train", "train")


def _python_class(name: Any, where: str) -> Any:
    module, _, attr = str(name).partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UserError(
            f"{where}: python '{name}' cannot be imported ({exc}); name a module:Class with from_declaration, "
            "e.g. tsbench.tasks.multiple_choice:MultipleChoiceTask"
        ) from None


def _generation(value: Any, where: str) -> dict[str, Any]:
    generation = value or {}
    if not isinstance(generation, dict):
        raise UserError(f"{where}: generation is {generation!r}; make it a mapping, e.g. {{max_tokens: 384}}")
    stop = generation.get("stop", [])
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise UserError(
            f"{where}: generation.stop is {stop!r}; give a list of non-empty strings, "
            'e.g. generation: {stop: ["Question:"]}'
        )
    return {**generation, "stop": stop} if stop else dict(generation)


def load_task_file(path: str | Path) -> DeclaredTask:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"task file {path} does not exist; give a path to a task YAML or a task name")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"task file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_declaration(spec, str(path))


def _register_builtin_declarations() -> None:
    for path in sorted(Path(__file__).parent.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        if isinstance(spec, dict) and "python" in spec:  # its class may import this module: built on use
            tasks.register(str(spec["name"]), str(spec.get("description", "")))(_factory(path))
            continue
        task = load_task_file(path)
        tasks.register(task.name, task.description)(_factory(path))


def _factory(path: Path) -> Any:
    def create(**options: Any) -> DeclaredTask:
        if options:
            raise UserError(f"task file {path.name} takes no task options, got: {', '.join(options)}")
        return load_task_file(path)

    return create


_register_builtin_declarations()
