"""A run's sample browser: every problem with its candidates, grades, arm scores and search trees,
cut into static pages so a run of 10,000 samples never makes one large page.

Pages are plain HTML (no fetch(), which file:// blocks in Chromium); page 1 sits on the run's own
page and the others in samples-NNNN.html beside it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tsbench.leaderboard.runs import Run

SAMPLES_PER_PAGE = 100
MAX_PROBLEMS_PER_PAGE = 25
# About how many bytes of HTML a page may hold before the next problem goes to a new page.
PAGE_WEIGHT = 400_000
TREE_DEPTH = 14


@dataclass
class Node:
    """One node of a search trace, shown as nested <details>.

    Attributes:
        label: what the node is (a field name, "path 2", "step 1").
        text: a step's or value's text, shown preformatted; None for containers.
        note: a short line beside the label (scores, done, counts).
        children: nested nodes.
    """

    label: str
    text: str | None = None
    note: str = ""
    children: list[Node] | None = None


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _short(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 40 and "\n" not in value


def _path_node(label: str, path: dict[str, Any], depth: int) -> Node:
    """A search path: its steps, each with the score the verifier gave it."""
    scores = path.get("scores") or []
    steps = [
        Node(f"step {i + 1}", str(step), f"score {_scalar(scores[i])}" if i < len(scores) else "")
        for i, step in enumerate(path.get("steps") or [])
    ]
    rest = {k: v for k, v in path.items() if k not in ("steps", "scores")}
    notes = [f"{k}={_scalar(v)}" for k, v in sorted(rest.items()) if not isinstance(v, dict | list)]
    others = [tree(k, v, depth + 1) for k, v in sorted(rest.items()) if isinstance(v, dict | list)]
    return Node(label, None, f"{len(steps)} steps " + " ".join(notes), steps + others)


def tree(label: str, value: Any, depth: int = 0) -> Node:
    """Any JSON trace as nodes: paths (dicts with "steps") get their steps, the rest nests by key.

    Args:
        label: the node's label.
        value: the JSON value.
        depth: nesting so far; deeper values are summarised in one line.
    """
    if depth > TREE_DEPTH:
        return Node(label, None, "(deeper levels not shown)")
    if isinstance(value, dict):
        if isinstance(value.get("steps"), list):
            return _path_node(label, value, depth)
        short = {k for k, v in value.items() if not isinstance(v, dict | list | str) or _short(v)}
        scalars = [f"{k}={_scalar(value[k])}" for k in sorted(short)]
        texts = [Node(k, v) for k, v in sorted(value.items()) if isinstance(v, str) and k not in short]
        nested = [tree(k, v, depth + 1) for k, v in sorted(value.items()) if isinstance(v, dict | list)]
        return Node(label, None, " ".join(scalars), texts + nested)
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value) and len(value) <= 20:
            return Node(label, None, "[" + ", ".join(_scalar(v) for v in value) + "]")
        return Node(
            label,
            None,
            f"{len(value)} items",
            [tree(f"{label} {i + 1}", v, depth + 1) for i, v in enumerate(value)],
        )
    if isinstance(value, str):
        return Node(label, value)
    return Node(label, None, _scalar(value))


@dataclass
class ProblemView:
    """Everything the browser shows for one problem."""

    problem_id: str
    question: str
    reference: str
    metadata: dict[str, Any]
    candidates: list[dict[str, Any]]
    arms: list[dict[str, Any]]
    searches: list[dict[str, Any]]
    weight: int = 0  # estimated bytes of its HTML

    @property
    def correct_count(self) -> int:
        return sum(bool(c["correct"]) for c in self.candidates)

    def summary(self, page_file: str) -> dict[str, Any]:
        """A row of the run's problem table (rendered as text by the table's script)."""
        greedy = [c for c in self.candidates if c["pool"] == "greedy"]
        return {
            "problem": self.problem_id,
            "level": self.metadata.get("level", ""),
            "question": self.question[:160],
            "reference": self.reference,
            "greedy": ("correct" if greedy[0]["correct"] else "wrong") if greedy else "",
            "correct": f"{self.correct_count}/{len(self.candidates)}",
            "truncated": sum(c["stop_reason"] == "length" for c in self.candidates),
            "href": f"{page_file}#p-{self.anchor}",
        }

    @property
    def anchor(self) -> str:
        from tsbench.leaderboard.safe import slug

        return slug(self.problem_id)


def problem_views(run: Run) -> list[ProblemView]:
    """Join a run's problems, samples, grades, scores, search attempts and traces per problem."""
    grades = {(g["problem_id"], g["pool"], g["index"]): g for g in run.grades()}
    candidates: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in run.samples():
        key = (sample["problem_id"], sample["pool"], sample["index"])
        grade = grades.get(key, {})
        candidates[sample["problem_id"]].append(
            {
                "pool": sample["pool"],
                "index": sample["index"],
                "text": sample.get("text", ""),
                "answer": grade.get("answer"),
                "correct": grade.get("correct"),
                "status": grade.get("status", "not graded"),
                "stop_reason": sample.get("stop_reason"),
                "stop_string": sample.get("stop_string"),
                "generated_tokens": sample.get("generated_tokens"),
                "mean_logprob": sample.get("mean_logprob"),
                "scores": sample.get("scores") or {},
            }
        )
    arms: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for score in run.scores():
        arms[score["problem_id"]].append(score)
    traces = {(t["problem_id"], t["arm"], str(t["k"])): t["trace"] for t in run.traces()}
    views = []
    for problem in run.problems():
        pid = str(problem["problem_id"])
        searches = []
        weight = sum(1000 + 2 * len(str(c["text"])) for c in candidates.get(pid, []))
        for arm, levels in sorted((problem.get("searches") or {}).items()):
            for level, attempt in sorted(levels.items(), key=lambda item: float(item[0])):
                trace = traces.get((pid, arm, str(level)))
                weight += 3 * len(json.dumps(trace, ensure_ascii=False)) + 2 * len(
                    str(attempt.get("text", ""))
                )
                searches.append(
                    {
                        "arm": arm,
                        "level": level,
                        "attempt": attempt,
                        "tree": tree("trace", trace) if trace is not None else None,
                    }
                )
        views.append(
            ProblemView(
                problem_id=pid,
                question=str(problem.get("question", "")),
                reference=str(problem.get("reference", "")),
                metadata=problem.get("metadata") or {},
                candidates=candidates.get(pid, []),
                arms=arms.get(pid, []),
                searches=searches,
                weight=weight,
            )
        )
    return views


def page_file(page: int) -> str:
    """File of page `page` (1-based) of a run's samples, relative to the run's folder."""
    return "index.html" if page == 1 else f"samples-{page:04d}.html"


def paginate(views: list[ProblemView], per_page: int = SAMPLES_PER_PAGE) -> list[list[ProblemView]]:
    """Whole problems per page, about `per_page` candidates on each."""
    if not views:
        return [[]]
    per_problem = max(1, max(len(v.candidates) for v in views))
    size = max(1, min(MAX_PROBLEMS_PER_PAGE, math.ceil(per_page / per_problem)))
    pages: list[list[ProblemView]] = [[]]
    weight = 0
    for view in views:
        # Search trees can outweigh the samples many times over: a page also closes at PAGE_WEIGHT.
        if pages[-1] and (len(pages[-1]) == size or weight + view.weight > PAGE_WEIGHT):
            pages.append([])
            weight = 0
        pages[-1].append(view)
        weight += view.weight
    return pages


def pager(page: int, pages: int, window: int = 3) -> list[dict[str, Any]]:
    """Links of a pager: first, previous, a window of numbers, next, last (None href = current/absent)."""
    numbers = sorted({1, pages, *range(max(1, page - window), min(pages, page + window) + 1)})
    links: list[dict[str, Any]] = [
        {"label": "« previous", "href": page_file(page - 1) if page > 1 else None, "rel": "prev"}
    ]
    last = 0
    for n in numbers:
        if n - last > 1:
            links.append({"label": "…", "href": None, "rel": ""})
        links.append({"label": str(n), "href": None if n == page else page_file(n), "rel": ""})
        last = n
    links.append({"label": "next »", "href": page_file(page + 1) if page < pages else None, "rel": "next"})
    return links
