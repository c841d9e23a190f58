"""The oracle: ground truth from the task's own grader. An upper bound, never a method.

Outcome form: 1 when the task grades the extracted answer correct, else 0.
Process form: each prefix (steps 1..i) scores 1 when the answer extracted from it so far is
correct. Extractors fall back to the last number in the text, so a prefix that has already
computed the right value scores 1 even before the solution states it as the answer; early steps
of a correct solution usually score 0. That makes it an oracle for "has the right answer been
reached", not for step validity, which no task's grader knows. It is free: its spend, and so its
`cost_bound`, is zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tsbench.contracts import Problem, Runner, Task
from tsbench.plugins import verifiers

from .base import STEP_DELIMITER, Scored, VerifierSpend, join_steps, refuse_unknown


class Oracle:
    """Scores by the reference answer (oracle=True); free, so its spend is zero."""

    name = "oracle"
    oracle = True

    def __init__(self, delimiter: str = STEP_DELIMITER) -> None:
        self.delimiter = delimiter

    def _correct(self, problem: Problem, task: Task, text: str) -> float:
        return 1.0 if task.grade(task.extract(text), problem) else 0.0

    def score(self, problem: Problem, task: Task, solutions: Sequence[str]) -> Scored:
        return Scored([self._correct(problem, task, text) for text in solutions], VerifierSpend())

    def score_steps(self, problem: Problem, task: Task, steps: Sequence[Sequence[str]]) -> list[Scored]:
        return [
            Scored(
                [
                    self._correct(problem, task, join_steps(path[: i + 1], self.delimiter))
                    for i in range(len(path))
                ],
                VerifierSpend(),
            )
            for path in steps
        ]

    def cost_bound(
        self, problem: Problem, task: Task, steps: Sequence[Sequence[str]], extra_tokens: int
    ) -> VerifierSpend:
        """Zero: the oracle costs nothing (CostBounded)."""
        return VerifierSpend()


@verifiers.register("oracle", "ground truth from the task's grader (oracle: an upper bound)")
def create(runner: Runner | None = None, delimiter: str = STEP_DELIMITER, **options: Any) -> Oracle:
    refuse_unknown("oracle", options, "delimiter")
    return Oracle(delimiter)
