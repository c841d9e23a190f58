"""Multiple-choice tasks declared in YAML (`python: tsbench.tasks.multiple_choice:MultipleChoiceTask`).

Choices are shown lettered A, B, C, ... whatever keys the data uses (ARC has a few questions keyed
1-4), and the answer is the letter the model gives on its answer line. The YAML's `fields.choices`
names the row's list of choice keys, each key also a field holding that choice's text (the
flattened layout); rows without it are read in HuggingFace's layout (`choices: {text, label}`,
`answerKey`). The user prompt template gets `{question}` and `{choices}` (one "A. text" line per
choice).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from tsbench.contracts import AnyProblem, Message, Problem, Verdict
from tsbench.data import load_rows
from tsbench.errors import UserError

from .declared import DeclaredTask, parse_declaration

LETTERS = "ABCDEFGH"  # no I or J: "Answer: I think..." must not read as a choice
RULE = "choice_letter"
# "Answer: B", "answer is (B)", "**Answer:** B", "Final answer: B." The letter must stand alone,
# so "Answer: Because" is not B. Linear-time patterns: model output is hostile input.
_ANSWER = re.compile(r"answer(?:\s+is)?\s*[:=]?[\s*]*\(?([A-H])\)?(?![A-Za-z])", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*([A-H])\s*\}")
_ALONE = re.compile(r"^[\s*]*\(?([A-H])\)?[.:)]?[\s*]*$")


def extract_letter(text: str) -> str | None:
    """The choice letter on the answer line ('Answer: B'), else in \\boxed{B}, else a last line
    that is only a letter ('(B)', 'B.'); None otherwise (no guessing from a stray capital)."""
    for pattern in (_ANSWER, _BOXED):
        found = [m.group(1) for m in pattern.finditer(text) if m.group(1).isupper()]
        if found:
            return found[-1]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    match = _ALONE.match(lines[-1]) if lines else None
    return match.group(1) if match else None


def _choices(row: dict[str, Any], field: str, where: str) -> tuple[list[str], list[str]]:
    """(keys, texts) of a row's choices, in either layout."""
    value = row.get(field)
    if isinstance(value, dict) and "text" in value:
        keys, texts = [str(k) for k in value.get("label", [])], [str(t) for t in value["text"]]
    elif isinstance(value, list):
        keys = [str(k) for k in value]
        texts = [str(row[k]) for k in keys if k in row]
    else:
        keys, texts = [], []
    if not keys or len(keys) != len(texts) or len(keys) > len(LETTERS):
        raise UserError(
            f"{where}: field '{field}' is {value!r}; give a list of choice keys, each a field of the row, "
            "or {text: [...], label: [...]}"
        )
    return keys, texts


@dataclass
class MultipleChoiceTask(DeclaredTask):
    """A declared task whose answer is a choice letter."""

    choices_field: str = "choices"

    @classmethod
    def from_declaration(cls, spec: dict[str, Any], where: str) -> MultipleChoiceTask:
        for key in ("extract", "grade"):
            if spec.get(key) != RULE:
                raise UserError(
                    f"{where}: field '{key}' is {spec.get(key)!r}; a multiple-choice task uses {RULE}"
                )
        choices_field = (spec.get("fields") or {}).get("choices")
        if not isinstance(choices_field, str):
            raise UserError(f"{where}: fields.choices is missing; name the row field listing the choice keys")
        # The shared fields are checked by the plain parser; extraction and grading are this class's.
        plain = {k: v for k, v in spec.items() if k != "python"} | {"extract": "number", "grade": "numeric"}
        base = parse_declaration(plain, where)
        values = {f.name: getattr(base, f.name) for f in fields(base)}
        return cls(**{**values, "extractor": RULE, "grader": RULE}, choices_field=choices_field)

    def load(self, limit: int | None, seed: int, data_dir: str | None) -> list[Problem]:
        loaded = load_rows(self.name, self.source, data_dir)
        self.data_sha256 = loaded.sha256
        problems = []
        for index, row in enumerate(loaded.rows[:limit] if limit else loaded.rows):
            where = f"task {self.name}: row {index} of {loaded.origin}"
            # HuggingFace's multiple-choice layout (choices: {text, label}, answerKey) where the
            # declared fields are absent, so the hub's rows load too.
            keys, texts = _choices(row, self.choices_field if self.choices_field in row else "choices", where)
            answer = str(row.get(self.reference_field, row.get("answerKey", "")))
            if answer not in keys:
                raise UserError(
                    f"{where}: answer {answer!r} is not one of the choice keys {keys}; fix the row"
                )
            problems.append(
                Problem(
                    id=str(row[self.id_field]) if self.id_field else f"{self.name}-{index:05d}",
                    question=str(row[self.question_field]),
                    reference=LETTERS[keys.index(answer)],
                    metadata={"choices": texts, "keys": keys},
                )
            )
        return problems

    def messages(self, problem: AnyProblem) -> list[Message]:
        lines = "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(problem.metadata["choices"]))
        user = self.user.format(question=problem.question, choices=lines)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def extract(self, text: str) -> str | None:
        return extract_letter(text)

    def canonical(self, answer: str) -> str:
        return answer.strip().upper()

    def canonical_many(self, answers: Sequence[str]) -> list[str]:
        return [self.canonical(a) for a in answers]

    def verdict(self, answer: str | None, problem: Problem) -> Verdict:
        if answer is None:
            return Verdict(False, "no_answer")
        return Verdict(self.canonical(answer) == problem.reference)
