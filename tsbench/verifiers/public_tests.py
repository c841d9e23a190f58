"""Execution feedback from the visible examples: a program that passes them scores 1, else 0.

The examples are the ones the model was shown (HumanEval's docstring examples, MBPP's first test),
read from the problem's public metadata (`public_tests`, `entry_point`, `prefix`), so the verifier
needs no reference and is not an oracle; the hidden tests still grade. Each candidate runs in the
sandbox (tsbench.sandbox), the candidates of a problem in parallel. A problem with no visible
example scores every candidate 0.5, so that the examples, not their absence, pick the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tsbench.contracts import AnyProblem, Runner
from tsbench.plugins import verifiers
from tsbench.sandbox import CodeJob, Limits, execute_many

from .base import Scored, VerifierSpend, refuse_unknown

NO_EXAMPLES = 0.5


def public_job(problem: AnyProblem, code: str) -> CodeJob | None:
    """The job running the problem's visible examples against `code`, or None without any."""
    tests = [str(t) for t in problem.metadata.get("public_tests") or []]
    entry = problem.metadata.get("entry_point")
    if not tests or not entry:
        return None
    prefix = str(problem.metadata.get("prefix", ""))
    return CodeJob(f"{prefix}\n{code}\n", "\n".join(tests) + "\n", (str(entry),), prefix)


class PublicTests:
    """1 when the program passes the problem's visible examples in the sandbox, else 0."""

    name = "public-tests"
    oracle = False

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()

    def score(self, problem: AnyProblem, task: Any, solutions: Sequence[str]) -> Scored:
        programs = [task.extract(text) for text in solutions]
        jobs = [None if code is None else public_job(problem, code) for code in programs]
        results = iter(execute_many([j for j in jobs if j is not None], self.limits))
        scores = []
        for code, job in zip(programs, jobs, strict=True):
            if code is None:
                scores.append(0.0)
            elif job is None:
                scores.append(NO_EXAMPLES)
            else:
                scores.append(1.0 if next(results).passed else 0.0)
        return Scored(scores, VerifierSpend())


@verifiers.register("public-tests", "runs the visible examples (docstring / first test) in the sandbox")
def create(runner: Runner | None = None, **options: Any) -> PublicTests:
    wall = options.pop("wall_s", None)
    refuse_unknown("public-tests", options, "wall_s")
    return PublicTests(Limits(wall_s=float(wall)) if wall is not None else None)
