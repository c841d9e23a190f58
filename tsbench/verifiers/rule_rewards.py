"""DeepSeek-R1's rule-based rewards (DeepSeek-AI 2025, section 2.2.2), as outcome verifiers.

R1 trained on two rules: a format reward (the output has the expected shape; for R1, reasoning
inside <think> tags) and an accuracy reward (the final answer is right, checked by rule). Here
the format is the one tsbench's tasks ask for: a final 'Answer: <number>' line or a \\boxed{}
answer. The accuracy reward reads the reference, so it is an oracle.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tsbench.contracts import Problem, Runner, Task
from tsbench.plugins import verifiers
from tsbench.tasks.answers import last_boxed

from .base import Scored, VerifierSpend, refuse_unknown

# A line that is only the answer: 'Answer: 42', '**Answer:** 42', 'The answer is 42.', '#### 42'.
ANSWER_LINE = re.compile(
    r"^\s*(?:the\s+)?(?:final\s+)?(?:\*\*)?(?:answer(?:\s+is)?|####)(?:\*\*)?\s*[:=]?\s*(?:\*\*)?\s*"
    r"-?\$?\d[\d,]*(?:\.\d+)?\s*(?:\*\*)?\s*\.?\s*$",
    re.IGNORECASE | re.MULTILINE,
)


def well_formatted(text: str) -> bool:
    """Whether the solution states its answer in the expected form."""
    return bool(ANSWER_LINE.search(text)) or last_boxed(text) is not None


class FormatReward:
    """1 when the answer is in the expected form ('Answer: <number>' line or \\boxed{}), else 0."""

    name = "format-reward"
    oracle = False

    def score(self, problem: Problem, task: Task, solutions: Sequence[str]) -> Scored:
        return Scored([1.0 if well_formatted(text) else 0.0 for text in solutions], VerifierSpend())


class AccuracyReward:
    """1 when the task grades the extracted answer correct, else 0 (oracle)."""

    name = "accuracy-reward"
    oracle = True

    def score(self, problem: Problem, task: Task, solutions: Sequence[str]) -> Scored:
        return Scored(
            [1.0 if task.grade(task.extract(text), problem) else 0.0 for text in solutions],
            VerifierSpend(),
        )


@verifiers.register("format-reward", "DeepSeek-R1 format reward: answer line or \\boxed{} present")
def create_format(runner: Runner | None = None, **options: Any) -> FormatReward:
    refuse_unknown("format-reward", options, "no options")
    return FormatReward()


@verifiers.register("accuracy-reward", "DeepSeek-R1 accuracy reward: answer graded correct (oracle)")
def create_accuracy(runner: Runner | None = None, **options: Any) -> AccuracyReward:
    refuse_unknown("accuracy-reward", options, "no options")
    return AccuracyReward()
