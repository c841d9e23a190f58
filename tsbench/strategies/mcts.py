"""Monte Carlo tree search over reasoning steps, valued by a verifier.

Each iteration walks down the tree by UCT, Q + c * sqrt(ln N_parent / N_child) (an unvisited
child first; among equals the first), to a node with no children. A complete node is re-valued
by its own score. Otherwise it is expanded by sampling k next steps, and each new child is
evaluated once: by the verifier's process score of its new step ("verifier"), or by rolling the
solution out to its end with one policy sample and taking the verifier's score of the last step
of that ("rollout"; pass the rollout-value verifier for Math-Shepherd's Monte Carlo values
instead). Every evaluation is one visit of each node on the way up, so a node's visits count the
evaluations below it and its value is their mean.

The search stops when N = budget.samples complete solutions are in the tree, when no leaf is
left to expand, after `max_iterations`, or when the budget's generated tokens are spent. That is
checked before each iteration, so it overshoots by at most one expansion (and its rollouts, when
evaluating by rollout). The answer is read from the most visited path: from the root, the child
with the most visits (then the higher value) down to a leaf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tsbench.contracts import Problem, Runner, Task
from tsbench.plugins import strategies
from tsbench.verifiers.base import STEP_DELIMITER, split_steps

from .base import Attempt, SearchBudget
from .beam_search import Path, StepOptions, Stepper


@dataclass
class Node:
    path: Path
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.path.steps[-1] if self.path.steps else "",
            "score": round(self.path.scores[-1], 6) if self.path.scores else None,
            "done": self.path.done,
            "visits": self.visits,
            "value": round(self.value, 6),
            "children": [child.as_dict() for child in self.children],
        }


def uct(child: Node, parent_visits: int, exploration: float) -> float:
    """Q + c * sqrt(ln N_parent / N_child); infinite for an unvisited child, so it goes first."""
    if child.visits == 0:
        return math.inf
    return child.value + exploration * math.sqrt(math.log(parent_visits) / child.visits)


def select(root: Node, exploration: float) -> list[Node]:
    """The nodes from the root down to the leaf UCT picks; max() keeps the first of equals."""
    nodes = [root]
    while nodes[-1].children and not nodes[-1].path.done:
        parent = nodes[-1]
        nodes.append(max(parent.children, key=lambda child: uct(child, parent.visits, exploration)))
    return nodes


def backpropagate(nodes: Sequence[Node], values: Sequence[float]) -> None:
    """Each value is one evaluation: one visit more, and its value added, on every node of the path."""
    for node in nodes:
        node.visits += len(values)
        node.value_sum += sum(values)


def most_visited(root: Node) -> list[Node]:
    nodes = [root]
    while nodes[-1].children:
        nodes.append(max(nodes[-1].children, key=lambda child: (child.visits, child.value)))
    return nodes


def count_done(node: Node) -> int:
    return int(node.path.done) + sum(count_done(child) for child in node.children)


def has_open_leaf(node: Node) -> bool:
    """Whether any leaf can still be expanded; once none can, more iterations learn nothing."""
    if not node.children:
        return not node.path.done
    return any(has_open_leaf(child) for child in node.children)


@strategies.register("mcts", "Monte Carlo tree search over steps: UCT selection, verifier values")
class MCTS:
    """MCTS with k expansions per visit and N = budget.samples complete solutions to find.

    Args:
        exploration: c in UCT.
        expansions: k, next steps sampled when a node is expanded.
        evaluation: "verifier" (process score of the new step) or "rollout".
        rollout_tokens: cap of a rollout.
        max_iterations: iterations at most; None for 8 * N.
        delimiter: text between steps.
        temperature, top_p: sampling of each step.
        max_step_tokens: cap per step.
        max_steps: steps at most per solution.
    """

    name = "mcts"
    pool = "search"
    oracle = False

    def __init__(
        self,
        exploration: float = 1.0,
        expansions: int = 4,
        evaluation: str = "verifier",
        rollout_tokens: int = 512,
        max_iterations: int | None = None,
        delimiter: str = STEP_DELIMITER,
        temperature: float = 0.8,
        top_p: float = 1.0,
        max_step_tokens: int = 256,
        max_steps: int = 12,
    ) -> None:
        if evaluation not in ("verifier", "rollout"):
            raise ValueError(f"unknown evaluation '{evaluation}'; use verifier or rollout")
        self.exploration, self.expansions, self.evaluation = float(exploration), int(expansions), evaluation
        self.rollout_tokens = int(rollout_tokens)
        self.max_iterations = None if max_iterations is None else int(max_iterations)
        self.delimiter = delimiter
        self.steps = StepOptions(
            delimiter, float(temperature), float(top_p), int(max_step_tokens), int(max_steps)
        )

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return list(requested)

    def evaluate(self, stepper: Stepper, children: Sequence[Path]) -> list[float]:
        """One value per new child."""
        if self.evaluation == "verifier":
            return [child.score("last") for child in children]
        live = [child for child in children if not child.done]
        rollouts = stepper.generate([stepper.prefix(c) for c in live], 1, (), self.rollout_tokens)
        rolled = [
            Path([*child.steps, *split_steps(completions[0].text, self.delimiter)])
            for child, completions in zip(live, rollouts, strict=True)
        ]
        stepper.score(rolled)
        values = iter(path.score("last") for path in rolled)
        return [child.score("last") if child.done else next(values) for child in children]

    def solve(
        self,
        problem: Problem,
        task: Task,
        runner: Runner,
        verifier: Any,
        budget: SearchBudget,
        rng: np.random.Generator,
    ) -> Attempt:
        stepper = Stepper(problem, task, runner, verifier, budget, rng, self.steps)
        root = Node(Path())
        limit = self.max_iterations if self.max_iterations is not None else 8 * budget.samples
        iterations = 0
        while (
            count_done(root) < budget.samples
            and has_open_leaf(root)
            and iterations < limit
            and not stepper.exhausted()
        ):
            nodes = select(root, self.exploration)
            leaf = nodes[-1]
            if leaf.path.done:
                backpropagate(nodes, [leaf.path.score("last")])
            else:
                children = stepper.extend([leaf.path], self.expansions)[0]
                values = self.evaluate(stepper, children)
                leaf.children = [
                    Node(c, visits=1, value_sum=v) for c, v in zip(children, values, strict=True)
                ]
                backpropagate(nodes, values)
            iterations += 1
        chosen = most_visited(root)[-1].path
        return Attempt(
            answer=stepper.answer(chosen),
            spend=stepper.spend,
            trace={
                "tree": root.as_dict(),
                "iterations": iterations,
                "complete": count_done(root),
                "chosen": chosen.as_dict(),
                "exploration": self.exploration,
            },
        )
