"""Monte Carlo tree search over reasoning steps, valued by a verifier.

Each iteration walks down the tree by UCT, Q + c * sqrt(ln N_parent / N_child) (an unvisited
child first; among equals the first), to a node with no children. A complete node is re-valued
by its own score. Otherwise it is expanded by sampling k next steps (children with the same steps
merged; see stepping.py for how a step ends a solution), and each new child is evaluated once: by
the verifier's process score of its new step ("verifier"), or ("rollout") for a live child by
rolling the solution out to its end with one policy sample, appended to the child as one final
step, and taking the verifier's score of that step (a complete child keeps its own score; pass
the rollout-value verifier for Math-Shepherd's Monte Carlo values instead). Every evaluation is
one visit of each node on the way up, so a node's visits count the evaluations below it and its
value is their mean.

Leaves in parallel (`parallel_leaves` P): one round selects up to P distinct open leaves, each
walk adding a virtual loss (a visit of value 0) to its path so the next walk is steered elsewhere,
as batched MCTS does (Chaslot et al. 2008; mctx); the virtual visits are removed before the real
values go up. The P expansions are one generate need and one scoring need, so a search keeps the
engine busy with P * k sequences instead of k. Each expansion counts as one iteration. With P = 1
this is plain sequential MCTS. A round takes P leaves only while all fit at the full step cap;
otherwise it takes fewer, down to one leaf at the largest cap that fits.

Budget: each expansion's worst case, rollouts included, is checked before it is taken
(stepping.py); the rollouts are checked again, exactly, once the children are known, and are
shortened or skipped (the child keeps its own score) when they no longer fit.

The search stops when the tree holds N = budget.samples distinct complete solutions, when no
leaf is left to expand, after `max_iterations`, or when the next expansion does not fit. The
answer is the best complete leaf by value, then by its score; when no leaf is complete, the leaf
of the most visited path (from the root, the child with the most visits, then the higher value)
finished greedily within what is left; when not even the first expansion fits, one greedy
solution (Attempt.fallback).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tsbench.contracts import PublicProblem, PublicTask
from tsbench.plugins import strategies
from tsbench.verifiers.base import SLACK_TOKENS, STEP_DELIMITER, VerifierSpend

from .base import Estimates, Search, SearchBudget
from .stepping import CostAt, Path, StepOptions, Stepper, Yields, mean_logprob


@dataclass
class Node:
    path: Path
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()

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


def select_leaves(root: Node, exploration: float, most: int) -> tuple[list[list[Node]], int]:
    """Up to `most` walks by UCT, each to a distinct open leaf, with virtual loss between walks.

    A walk that ends on a complete node re-values it at once (one iteration, nothing to generate);
    picking stops at the first walk that returns to a leaf already picked.

    Returns:
        (walks to open leaves, number of complete nodes re-valued); walks + re-valued <= most.
    """
    walks: list[list[Node]] = []
    revalued = 0
    while len(walks) + revalued < most:
        nodes = select(root, exploration)
        leaf = nodes[-1]
        if leaf.path.done:
            backpropagate(nodes, [leaf.path.score("last")])
            revalued += 1
        elif any(leaf is walk[-1] for walk in walks):
            break
        else:
            walks.append(nodes)
            for node in nodes:
                node.visits += 1
    for walk in walks:
        for node in walk:
            node.visits -= 1
    return walks, revalued


def most_visited(root: Node) -> list[Node]:
    nodes = [root]
    while nodes[-1].children:
        nodes.append(max(nodes[-1].children, key=lambda child: (child.visits, child.value)))
    return nodes


def solutions(root: Node) -> list[Node]:
    """The complete leaves, the first of each distinct solution, in tree order."""
    found: dict[tuple[str, ...], Node] = {}
    for node in root.walk():
        if node.path.done:
            found.setdefault(node.path.key, node)
    return list(found.values())


def has_open_leaf(node: Node) -> bool:
    """Whether any leaf can still be expanded; once none can, more iterations learn nothing."""
    return any(not n.children and not n.path.done for n in node.walk())


@strategies.register("mcts", "Monte Carlo tree search over steps: UCT selection, verifier values")
class MCTS:
    """MCTS with k expansions per visit and N = budget.samples distinct complete solutions to find.

    Args:
        exploration: c in UCT.
        expansions: k, next steps sampled when a node is expanded.
        evaluation: "verifier" (process score of the new step) or "rollout".
        rollout_tokens: cap of a rollout.
        max_iterations: iterations at most; None for 8 * N.
        parallel_leaves: P, leaves expanded together in one round (virtual loss).
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
        parallel_leaves: int = 4,
    ) -> None:
        if evaluation not in ("verifier", "rollout"):
            raise ValueError(f"unknown evaluation '{evaluation}'; use verifier or rollout")
        self.exploration, self.expansions, self.evaluation = float(exploration), int(expansions), evaluation
        self.rollout_tokens = int(rollout_tokens)
        self.max_iterations = None if max_iterations is None else int(max_iterations)
        self.parallel_leaves = max(1, int(parallel_leaves))
        self.delimiter = delimiter
        self.steps = StepOptions(
            delimiter, float(temperature), float(top_p), int(max_step_tokens), int(max_steps)
        )

    def budgets(self, requested: Sequence[int]) -> list[int]:
        return list(requested)

    def rollouts_at(self, stepper: Stepper, leaves: Sequence[Path]) -> CostAt | None:
        """The worst case of rolling out each of the leaves' children, at step cap e: each rollout's
        prompt is its leaf's plus at most e tokens of step, and its one final step (the child's
        step, then the rollout) has at most e + rollout_tokens tokens."""
        if self.evaluation != "rollout":
            return None
        k = self.expansions
        requests = [stepper.request(leaf, 1, stop=False) for leaf in leaves]
        prompts = sum(stepper.count(r) for r in requests) if stepper.bounded else 0
        placeholders = [[*leaf.steps, ""] for leaf in leaves for _ in range(k)]

        def cost(cap: int) -> tuple[float, VerifierSpend]:
            policy = k * prompts + len(placeholders) * (cap + SLACK_TOKENS + self.rollout_tokens)
            return policy, stepper.bound(placeholders, cap + self.rollout_tokens)

        return cost

    def expand(self, stepper: Stepper, walks: list[list[Node]]) -> Yields:
        """k next steps of each walk's leaf in one round: all of them while they fit at the full step
        cap, else fewer, down to one leaf at the largest cap that fits.

        Returns:
            (cap, each expanded leaf's children, the walks expanded); cap 0 when none fits.
        """
        leaves = [walk[-1].path for walk in walks]
        for count in range(len(walks), 0, -1):
            full_cap_only = count > 1
            cap, groups = yield from stepper.step(
                leaves[:count],
                [self.expansions] * count,
                self.rollouts_at(stepper, leaves[:count]),
                min_cap=self.steps.max_step_tokens if full_cap_only else 1,
            )
            if cap >= 1 or not full_cap_only:
                return cap, groups, walks[:count]
        return 0, [], []

    def evaluate(self, stepper: Stepper, children: Sequence[Path]) -> Yields:
        """Returns one value per new child."""
        values = [child.score("last") for child in children]
        live = [i for i, child in enumerate(children) if not child.done]
        if self.evaluation == "verifier" or not live:
            return values
        requests = [stepper.request(children[i], 1, stop=False) for i in live]
        prompts = sum(stepper.count(r) for r in requests) if stepper.bounded else 0
        ends = [[*children[i].steps, ""] for i in live]
        cap = stepper.largest(
            lambda c: (prompts + len(live) * c, stepper.bound(ends, c)), self.rollout_tokens
        )
        if cap < 1:
            return values
        rollouts = yield from stepper.generate([replace(r, max_tokens=cap) for r in requests])
        rolled = {}
        for i, completions in zip(live, rollouts, strict=True):
            text = completions[0].text.strip("\n")
            if text.strip():
                rolled[i] = Path(
                    [*children[i].steps, text],
                    logprobs=[*children[i].logprobs, mean_logprob(completions[0])],
                )
        yield from stepper.score(list(rolled.values()))
        return [rolled[i].score("last") if i in rolled else value for i, value in enumerate(values)]

    def search(
        self,
        problem: PublicProblem,
        task: PublicTask,
        estimates: Estimates,
        budget: SearchBudget,
        rng: np.random.Generator,
    ) -> Search:
        stepper = Stepper(problem, task, estimates, budget, rng, self.steps)
        root = Node(Path())
        limit = self.max_iterations if self.max_iterations is not None else 8 * budget.samples
        iterations, caps = 0, []
        stopped = "iterations"
        while iterations < limit:
            if len(solutions(root)) >= budget.samples:
                stopped = "solutions"
                break
            if not has_open_leaf(root):
                stopped = "no open leaf"
                break
            walks, revalued = select_leaves(
                root, self.exploration, min(self.parallel_leaves, limit - iterations)
            )
            iterations += revalued
            if not walks:
                continue
            cap, groups, walks = yield from self.expand(stepper, walks)
            if cap < 1:
                stopped = "budget"
                break
            caps.append(cap)
            values = yield from self.evaluate(stepper, [child for group in groups for child in group])
            start = 0
            for walk, group in zip(walks, groups, strict=True):
                group_values = values[start : start + len(group)]
                start += len(group)
                walk[-1].children = [
                    Node(c, visits=1, value_sum=v) for c, v in zip(group, group_values, strict=True)
                ]
                backpropagate(walk, group_values)
            iterations += len(walks)
        finished = solutions(root)
        trace = {
            "tree": root.as_dict(),
            "iterations": iterations,
            "step_caps": caps,
            "complete": len(finished),
            "stopped": stopped,
            "exploration": self.exploration,
            "parallel_leaves": self.parallel_leaves,
        }
        if stopped == "budget" and not caps:
            return (yield from stepper.fallback(trace))
        if finished:
            best = max(finished, key=lambda node: (node.value, node.path.score("last")))
            return (yield from stepper.conclude([best.path], [], "last", trace))
        return (yield from stepper.conclude([], [most_visited(root)[-1].path], "last", trace))
