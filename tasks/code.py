"""Code tasks (HumanEval, MBPP): declared in YAML, graded by hidden tests run in the sandbox.

The YAML says where the rows are and which row `shape` they have; this module turns a row into a
Problem whose question is what the model sees, whose reference holds the hidden tests (JSON), and
whose metadata holds only what is public: the entry point, the visible examples (`public_tests`)
and the code a program starts from (`prefix`: HumanEval's prompt, MBPP's test imports).
"""

from __future__ import annotations

import ast
import builtins
import doctest
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tsbench.contracts import AnyProblem, Message, Problem, Verdict
from tsbench.data import DataSource, load_rows
from tsbench.errors import UserError
from tsbench.sandbox import CodeJob, ExecResult, Limits, execute, execute_many

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
# Example lines in HumanEval docstrings that are not doctests: "f(1, 2) == 3", "f(x) ➞ True".
_ARROW = re.compile(
    r"^\s*(?P<call>[A-Za-z_]\w*\(.*\))\s*(?:==>|==|➞|=>|->|returns|should return)\s*(?P<want>.+?)\s*$"
)
# MBPP's task ids 11-510 are its test split (upstream README); the hub's "sanitized/test" matches.
MBPP_TEST_IDS = range(11, 511)
VERDICT_STATUS = {
    "passed": "graded",
    "failed": "graded",
    "error": "error",
    "timeout": "timeout",
    "limit": "limit",
}


def extract_code(text: str) -> str | None:
    """The program in a completion: the last fenced block that defines a function (else the last
    fenced block; an unclosed fence runs to the end), or, with no fence, the text itself."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    code = [body for lang, body in blocks if lang in ("", "python", "py", "python3")]
    if code:
        defining = [body for body in code if re.search(r"^\s*(?:def|class) ", body, re.MULTILINE)]
        chosen = (defining or code)[-1]
    else:
        chosen = text
    return chosen.strip("\n") if chosen.strip() else None


def canonical_code(code: str) -> str:
    """One form for programs that differ only in layout and comments (votes group by it)."""
    try:
        return ast.unparse(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return code.strip()


def _literal_want(want: str) -> str | None:
    want = want.strip().rstrip(".")
    try:
        compile(want, "<want>", "eval")
    except SyntaxError:
        return None
    return want


def doc_examples(prompt: str, entry_point: str) -> list[str]:
    """The visible examples of a HumanEval prompt as assertions: its doctests and lines such as
    `f(1) == 2` or `f(1) ➞ 2` that call the entry point."""
    found: list[str] = []
    text = _docstring(prompt, entry_point)
    try:
        examples = doctest.DocTestParser().get_examples(text)
    except ValueError:
        examples = []
    for example in examples:
        source, want = example.source.strip(), _literal_want(example.want)
        if want and entry_point + "(" in source and "\n" not in source:
            found.append(f"assert {source} == {want}")
    if not found:
        for line in text.splitlines():
            match = _ARROW.match(line)
            if (
                match
                and match["call"].startswith(entry_point + "(")
                and (want := _literal_want(match["want"]))
            ):
                found.append(f"assert {match['call']} == {want}")
    return [test for test in found if _compiles(test)]


def _docstring(prompt: str, entry_point: str) -> str:
    """The entry point's docstring (the whole prompt where it does not parse)."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return prompt
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            return ast.get_docstring(node) or ""
    return prompt


def _compiles(source: str) -> bool:
    try:
        compile(source, "<test>", "exec")
    except SyntaxError:
        return False
    return True


def humaneval_problem(row: dict[str, Any], index: int) -> Problem:
    entry, prompt = str(row["entry_point"]), str(row["prompt"])
    hidden = {"context": prompt, "tests": f"{row['test']}\n\ncheck({entry})\n"}
    public = {"entry_point": entry, "prefix": prompt, "public_tests": doc_examples(prompt, entry)}
    return Problem(str(row["task_id"]), prompt, json.dumps(hidden), public)


def mbpp_problem(row: dict[str, Any], index: int) -> Problem:
    tests = [str(t) for t in row["test_list"]]
    imports = "\n".join(str(i) for i in row.get("test_imports") or [])
    question = f"{row['prompt']}\nYour code should pass this test:\n{tests[0]}"
    # The tests share the reference solution's namespace upstream, and a few use what it imported.
    context = "\n".join([imports, *_imports_of(str(row.get("code", "")))])
    hidden = {"context": context, "tests": "\n".join(tests) + "\n"}
    public = {
        "entry_point": _called(tests[0], str(row.get("code", ""))),
        "prefix": imports,
        "public_tests": [tests[0]],
    }
    return Problem(str(row["task_id"]), question, json.dumps(hidden), public)


def _called(test: str, solution: str) -> str:
    """The function an MBPP assertion tests: the first it calls that the reference solution
    defines (the name is public: the prompt shows the test), else the first not a builtin."""
    calls = [
        node.func.id
        for node in ast.walk(_parse_quietly(test))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    try:
        defined = {n.name for n in _parse_quietly(solution).body if isinstance(n, ast.FunctionDef)}
    except SyntaxError:
        defined = set()
    for name in calls:
        if name in defined:
            return name
    for node in ast.walk(_parse_quietly(test)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id not in vars(builtins)
        ):
            return node.func.id
    raise UserError(f"mbpp test calls no function of the solution: {test[:80]}")


def _parse_quietly(code: str) -> ast.Module:
    with warnings.catch_warnings():  # MBPP's code has '\w' in plain strings: not our warning to give
        warnings.simplefilter("ignore")
        return ast.parse(code)


def _imports_of(code: str) -> list[str]:
    try:
        tree = _parse_quietly(code)
    except SyntaxError:
        return []
    return [ast.unparse(node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]


SHAPES = {"humaneval": humaneval_problem, "mbpp": mbpp_problem}


def program_job(problem: AnyProblem, code: str, tests: str, context: str) -> CodeJob:
    """The job running `tests` (with trusted `context`) against the candidate's code."""
    prefix = str(problem.metadata.get("prefix", ""))
    entry = str(problem.metadata["entry_point"])
    return CodeJob(f"{prefix}\n{code}\n", tests, (entry,), context)


@dataclass
class CodeTask:
    """A code-generation task: extract the program, run the hidden tests in the sandbox."""

    name: str
    description: str
    source: DataSource
    shape: str
    system: str
    user: str
    split: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    data_sha256: str | None = None
    extractor: str = "code"
    grader: str = "hidden-tests"

    def load(self, limit: int | None, seed: int, data_dir: str | None) -> list[Problem]:
        loaded = load_rows(self.name, self.source, data_dir)
        self.data_sha256 = loaded.sha256
        rows = loaded.rows
        if self.split == "test" and self.shape == "mbpp":
            rows = [r for r in rows if int(r.get("task_id", 0)) in MBPP_TEST_IDS]
        problems = []
        for index, row in enumerate(rows[:limit] if limit else rows):
            try:
                problems.append(SHAPES[self.shape](row, index))
            except (KeyError, IndexError, TypeError) as exc:
                raise UserError(
                    f"task {self.name}: row {index} of {loaded.origin} lacks a {self.shape} field ({exc}); "
                    "fix the file or the task's `shape`"
                ) from None
        return problems

    def messages(self, problem: AnyProblem) -> list[Message]:
        user = self.user.format(question=problem.question, **problem.metadata)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def extract(self, text: str) -> str | None:
        return extract_code(text)

    def canonical(self, answer: str) -> str:
        return canonical_code(answer)

    def job(self, answer: str, problem: Problem) -> CodeJob:
        hidden = json.loads(problem.reference)
        return program_job(problem, answer, hidden["tests"], hidden["context"])

    def run(self, answer: str, problem: Problem) -> ExecResult:
        """The structured result of the hidden tests on one program."""
        return execute(self.job(answer, problem), self.limits)

    def verdict(self, answer: str | None, problem: Problem) -> Verdict:
        return self.verdict_many([answer], problem)[0]

    def verdict_many(self, answers: Sequence[str | None], problem: Problem) -> list[Verdict]:
        """Verdicts of many programs for one problem, run in parallel in the sandbox."""
        todo = [a for a in answers if a is not None]
        results = iter(execute_many([self.job(a, problem) for a in todo], self.limits))
        return [
            Verdict(False, "no_answer")
            if a is None
            else (lambda r: Verdict(r.passed, VERDICT_STATUS.get(r.status, "error")))(next(results))
            for a in answers
        ]

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return self.verdict(answer, problem).correct

    @classmethod
    def from_declaration(cls, spec: dict[str, Any], where: str) -> CodeTask:
        """A CodeTask from a parsed task YAML (see tasks/humaneval.yaml)."""
        data, prompt = spec.get("data") or {}, spec.get("prompt") or {}
        hub = data.get("hub") or {}
        shape = spec.get("shape")
        if shape not in SHAPES:
            raise UserError(f"{where}: field 'shape' is '{shape}'; use one of: {', '.join(sorted(SHAPES))}")
        for key, value in (("data.local", data.get("local")), ("name", spec.get("name"))):
            if not value:
                raise UserError(f"{where}: missing field '{key}'; see tasks/humaneval.yaml for the shape")
        limits = spec.get("limits") or {}
        try:
            built = Limits(**limits)
        except TypeError:
            known = ", ".join(Limits.__dataclass_fields__)
            raise UserError(
                f"{where}: unknown field in 'limits' ({', '.join(limits)}); use: {known}"
            ) from None
        return cls(
            name=str(spec["name"]),
            description=str(spec.get("description", "")),
            source=DataSource(str(data["local"]), hub.get("path"), hub.get("name"), hub.get("split", "test")),
            shape=str(shape),
            system=str(prompt.get("system", "")),
            user=str(prompt.get("user", "{question}")),
            split=spec.get("split"),
            generation=dict(spec.get("generation") or {}),
            limits=built,
        )
