"""ProcessBench (Zheng et al. 2024): can a process verifier find a solution's first wrong step?

Each item is a problem, a solution already split into steps, and `label`: the index of the first
wrong step, or -1 when every step is right. A verifier scores every step; its predicted first
error is the first step scored below `threshold` (-1 if none). Per subset, as in the paper:
accuracy on the erroneous solutions (predicted == label), accuracy on the correct ones
(predicted == -1), and F1, their harmonic mean; the paper's headline is the mean F1 over subsets.

Data: {gsm8k,math,olympiadbench,omnimath}.json, each a JSON array of {id, generator, problem,
steps, final_answer_correct, label} (Qwen/ProcessBench; a copy lies in ../shared/data/processbench,
a 6-item fixture in tasks/fixtures/processbench).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tsbench.tasks
from tsbench.contracts import AnyProblem, Message, Problem, Task
from tsbench.errors import UserError
from tsbench.tasks.answers import last_boxed
from tsbench.verifiers.base import VerifierSpend, score_paths

SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")
# tasks/ installs as tsbench.tasks, fixtures included, so this resolves installed or not.
FIXTURE_DIR = Path(tsbench.tasks.__file__).resolve().parent / "fixtures" / "processbench"


@dataclass(frozen=True)
class ProcessBenchItem:
    id: str
    subset: str
    problem: str
    steps: tuple[str, ...]
    label: int  # index of the first wrong step, -1 when all are right
    final_answer_correct: bool | None = None
    generator: str = ""


def load_processbench(
    data_dir: str | Path, subsets: Sequence[str] = SUBSETS, limit: int | None = None
) -> list[ProcessBenchItem]:
    """Items of the given subsets, in file order.

    Args:
        data_dir: folder holding <subset>.json files.
        subsets: which subsets to read.
        limit: at most this many items per subset, spread evenly through its file (the files
            list erroneous solutions first, so the first N would hold no correct ones), or all.
    """
    items = []
    for subset in subsets:
        path = Path(data_dir) / f"{subset}.json"
        if not path.is_file():
            raise UserError(
                f"ProcessBench subset {subset}: {path} does not exist; pass the folder that holds "
                f"{', '.join(s + '.json' for s in SUBSETS)}"
            )
        rows = json.loads(path.read_text(encoding="utf-8"))
        picked = spread(len(rows), limit) if limit else range(len(rows))
        for index in picked:
            row = rows[index]
            try:
                items.append(
                    ProcessBenchItem(
                        id=str(row.get("id", f"{subset}-{index}")),
                        subset=subset,
                        problem=str(row["problem"]),
                        steps=tuple(str(step) for step in row["steps"]),
                        label=int(row["label"]),
                        final_answer_correct=row.get("final_answer_correct"),
                        generator=str(row.get("generator", "")),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise UserError(
                    f"{path}: row {index} is not a ProcessBench item ({exc!r}); each needs problem, steps, label"
                ) from None
    return items


def spread(total: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(total), first included, in order."""
    if count >= total:
        return list(range(total))
    return [i * total // count for i in range(count)]


class ProcessBenchTask:
    """The task a verifier is handed for ProcessBench items: a prompt and a \\boxed{} extractor.

    ProcessBench gives no reference answers, so nothing grades correct: a verifier that reads the
    reference (the oracle) learns nothing here.
    """

    name = "processbench"
    description = "ProcessBench problems (step labels only; no reference answers)"

    def load(self, limit: int | None, seed: int, data_dir: str | None) -> list[Problem]:
        return [as_problem(item) for item in load_processbench(data_dir or FIXTURE_DIR, limit=limit)]

    def messages(self, problem: AnyProblem) -> list[Message]:
        return [
            {
                "role": "system",
                "content": "Please reason step by step, and put your final answer within \\boxed{}.",
            },
            {"role": "user", "content": problem.question},
        ]

    def extract(self, text: str) -> str | None:
        return last_boxed(text)

    def canonical(self, answer: str) -> str:
        return answer.strip()

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return False


def as_problem(item: ProcessBenchItem) -> Problem:
    return Problem(item.id, item.problem, "", {"subset": item.subset, "generator": item.generator})


def predicted_first_error(scores: Sequence[float], threshold: float = 0.5) -> int:
    """Index of the first step scored below threshold, or -1 when none is."""
    return next((i for i, score in enumerate(scores) if score < threshold), -1)


def harmonic_mean(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def subset_metrics(labels: Sequence[int], predicted: Sequence[int]) -> dict[str, Any]:
    """ProcessBench's per-subset figures; an accuracy with no items to average is None."""
    erroneous = [p == t for t, p in zip(labels, predicted, strict=True) if t != -1]
    correct = [p == -1 for t, p in zip(labels, predicted, strict=True) if t == -1]
    error_accuracy = sum(erroneous) / len(erroneous) if erroneous else None
    correct_accuracy = sum(correct) / len(correct) if correct else None
    f1 = (
        harmonic_mean(error_accuracy, correct_accuracy)
        if error_accuracy is not None and correct_accuracy is not None
        else None
    )
    return {
        "error_accuracy": error_accuracy,
        "correct_accuracy": correct_accuracy,
        "f1": f1,
        "erroneous": len(erroneous),
        "correct": len(correct),
    }


def evaluate_process_verifier(
    verifier: Any, task: Task | None, items: Sequence[ProcessBenchItem], threshold: float = 0.5
) -> dict[str, Any]:
    """Score every item's steps with a process verifier and report ProcessBench's metrics.

    Args:
        verifier: a ProcessVerifier; each item is one score_steps call with its one solution.
        task: handed to the verifier (for its prompt and extractor); None for ProcessBenchTask.
        items: from load_processbench.
        threshold: a step scored below it is predicted wrong.

    Returns:
        {"threshold", "subsets": {subset: {error_accuracy, correct_accuracy, f1, erroneous,
        correct}}, "average_f1" (over subsets with an F1), "verifier_tokens", "verifier_flops",
        "predictions": [{id, subset, label, predicted, scores}]}.
    """
    task = task or ProcessBenchTask()
    spent = VerifierSpend()
    predictions: list[dict[str, Any]] = []
    for item in items:
        scored = score_paths(verifier, as_problem(item), task, [list(item.steps)])[0]
        if len(scored.scores) != len(item.steps):
            raise ValueError(
                f"verifier gave {len(scored.scores)} scores for the {len(item.steps)} steps of {item.id}"
            )
        spent = spent + scored.spend
        predictions.append(
            {
                "id": item.id,
                "subset": item.subset,
                "label": item.label,
                "predicted": predicted_first_error(scored.scores, threshold),
                "scores": [round(s, 6) for s in scored.scores],
            }
        )
    subsets: dict[str, dict[str, Any]] = {}
    for subset in dict.fromkeys(p["subset"] for p in predictions):
        mine = [p for p in predictions if p["subset"] == subset]
        subsets[subset] = subset_metrics([p["label"] for p in mine], [p["predicted"] for p in mine])
    f1s = [m["f1"] for m in subsets.values() if m["f1"] is not None]
    return {
        "threshold": threshold,
        "subsets": subsets,
        "average_f1": sum(f1s) / len(f1s) if f1s else None,
        "verifier_tokens": spent.tokens,
        "verifier_flops": spent.flops,
        "predictions": predictions,
    }
