"""The verifier contract: two shapes, one ledger.

An outcome verifier scores whole solutions; a process verifier scores each step of partial
solutions. Both report what they spent, so the ledger can keep verifier tokens and FLOPs apart
from the policy's while adding them into the total.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tsbench.contracts import AnyProblem, CountsPromptTokens, GenerationRequest, Problem, PublicTask, Task
from tsbench.errors import UserError

STEP_DELIMITER = "\n\n"
# Tokens that re-tokenisation may add where a step's text meets the text around it (cost bounds).
SLACK_TOKENS = 4


@dataclass(frozen=True)
class VerifierSpend:
    tokens: float = 0.0  # tokens the verifier evaluated or generated
    flops: float = 0.0

    def __add__(self, other: VerifierSpend) -> VerifierSpend:
        return VerifierSpend(self.tokens + other.tokens, self.flops + other.flops)


@dataclass(frozen=True)
class Scored:
    """Scores in [0, 1] (higher is better) and what producing them cost."""

    scores: list[float]
    spend: VerifierSpend


@runtime_checkable
class OutcomeVerifier(Protocol):
    name: str
    oracle: bool  # True when it reads the reference answer: an upper bound, labelled as such

    def score(self, problem: Problem, task: Task, solutions: Sequence[str]) -> Scored:
        """One score per whole solution."""
        ...


@runtime_checkable
class ProcessVerifier(Protocol):
    name: str
    oracle: bool

    def score_steps(self, problem: Problem, task: Task, steps: Sequence[Sequence[str]]) -> list[Scored]:
        """For each partial solution (a list of steps), one score per step."""
        ...


@dataclass
class StepJob:
    """One search's scoring need, for a verifier that scores many searches' paths in one call.

    Args:
        problem, task: the views the verifier may see (see BoundVerifier).
        paths: partial solutions, each a list of steps.
        logprobs: per path, each step's mean token logprob as the policy sampled it, or None.
        memo: the search's own remembered step scores (prefix -> score); a memoising verifier
            reads and fills it, so that a search pays once per prefix and no two searches share it.
    """

    problem: Any
    task: Any
    paths: Sequence[Sequence[str]]
    logprobs: Sequence[Sequence[float | None]] | None = None
    memo: dict[tuple[str, ...], float] = field(default_factory=dict)


@runtime_checkable
class BatchesSteps(Protocol):
    """A process verifier that scores the needs of many concurrent searches together (one
    generate call, or batched forward passes), keeping each search's memo in its StepJob."""

    def score_steps_many(self, jobs: Sequence[StepJob]) -> list[list[Scored]]:
        """For each job, what score_steps(job.problem, job.task, job.paths) would give."""
        ...


class RemembersSteps:
    """What memoising process verifiers (llm-judge, rollout-value) share.

    Each new prefix (steps 1..i) is scored once, its cost charged to the first path that needed
    it, and remembered: in a search's own memo (StepJob.memo), or, for callers outside a search
    (score_steps: ProcessBench), for the current problem here. A subclass scores new prefixes in
    `score_prefixes`, every job's in one call, and calls `reset()` when it is built.
    """

    _cache_problem: str | None
    _cache: dict[tuple[str, ...], float]

    def reset(self) -> None:
        """Forget remembered step scores (a new search pays for its own)."""
        self._cache_problem, self._cache = None, {}

    def remembered(
        self, problem: Any, memo: dict[tuple[str, ...], float] | None
    ) -> dict[tuple[str, ...], float]:
        """The memo a cost bound counts against: the search's own, else this problem's here."""
        if memo is not None:
            return memo
        return self._cache if problem.id == self._cache_problem else {}

    def score_steps(self, problem: Any, task: Any, steps: Sequence[Sequence[str]]) -> list[Scored]:
        """Step scores, remembered for the current problem (for callers outside a search)."""
        if problem.id != self._cache_problem:
            self._cache_problem, self._cache = problem.id, {}
        return self.score_steps_many([StepJob(problem, task, steps, None, self._cache)])[0]

    def score_steps_many(self, jobs: Sequence[StepJob]) -> list[list[Scored]]:
        """For each job, its paths' step scores (BatchesSteps)."""
        news = [new_prefixes(job.paths, job.memo) for job in jobs]
        found = iter(self.score_prefixes(jobs, news))
        results = []
        for job, new in zip(jobs, news, strict=True):
            owed = [VerifierSpend() for _ in job.paths]
            for prefix, owner in new.items():
                score, spend = next(found)
                job.memo[prefix] = score
                owed[owner] = owed[owner] + spend
            results.append(
                [
                    Scored([job.memo[tuple(path[: i + 1])] for i in range(len(path))], owed[p])
                    for p, path in enumerate(job.paths)
                ]
            )
        return results

    def score_prefixes(
        self, jobs: Sequence[StepJob], news: Sequence[dict[tuple[str, ...], int]]
    ) -> Iterable[tuple[float, VerifierSpend]]:
        """(score, spend) of each new prefix, job by job in order."""
        raise NotImplementedError


class CostBounded(Protocol):
    """A process verifier whose spend can be bounded before it is asked; searches need this to
    check, before each step, that the step and its scoring fit the budget."""

    def cost_bound(
        self, problem: Problem, task: Task, steps: Sequence[Sequence[str]], extra_tokens: int
    ) -> VerifierSpend:
        """At least what score_steps(problem, task, paths) would spend now (its memo counted),
        where each path is one of `steps` whose last step is longer by up to `extra_tokens`
        tokens. Affine in extra_tokens, so a search can solve for the longest step that fits."""
        ...


def split_steps(text: str, delimiter: str = STEP_DELIMITER) -> list[str]:
    """Steps of a solution; empty pieces dropped."""
    return [step for step in text.split(delimiter) if step.strip()]


# Helpers shared by the built-in verifiers, the search strategies and the ProcessBench evaluation.

AGGREGATES = ("last", "min", "prod", "mean")


def aggregate(scores: Sequence[float], how: str = "last") -> float:
    """One number for a path from its step scores: the last, the weakest, their product or mean.

    An empty path scores 0, so a path with no scored step never beats one that has any.
    """
    if how not in AGGREGATES:
        raise ValueError(f"unknown aggregate '{how}'; use one of: {', '.join(AGGREGATES)}")
    if not scores:
        return 0.0
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "mean":
        return float(sum(scores) / len(scores))
    product = 1.0
    for score in scores:
        product *= score
    return product


def join_steps(steps: Sequence[str], delimiter: str = STEP_DELIMITER) -> str:
    return delimiter.join(steps)


def score_paths(
    verifier: object,
    problem: Problem,
    task: Task,
    paths: Sequence[Sequence[str]],
    step_logprobs: Sequence[Sequence[float | None]] | None = None,
) -> list[Scored]:
    """Process scores of partial solutions, handing each step's mean logprob to verifiers that take
    them (self-certainty), with a clear error for a verifier that has none."""
    if not isinstance(verifier, ProcessVerifier):
        name = getattr(verifier, "name", type(verifier).__name__)
        raise ValueError(
            f"verifier '{name}' scores whole solutions only; a step-wise search needs a process "
            "verifier (llm-judge, rollout-value, oracle, self-certainty or an hf-reward PRM)"
        )
    if not paths:
        return []
    if "step_logprobs" in inspect.signature(verifier.score_steps).parameters:
        return verifier.score_steps(problem, task, paths, step_logprobs=step_logprobs)  # type: ignore[call-arg]
    return verifier.score_steps(problem, task, paths)


def new_prefixes(steps: Sequence[Sequence[str]], remembered: Any) -> dict[tuple[str, ...], int]:
    """Each prefix (steps 1..i) of the paths that is not remembered yet, with the index of the first
    path that needs it (that path pays for it), in order."""
    new: dict[tuple[str, ...], int] = {}
    for owner, path in enumerate(steps):
        for i in range(len(path)):
            prefix = tuple(path[: i + 1])
            if prefix not in remembered and prefix not in new:
                new[prefix] = owner
    return new


def bounded_prefixes(
    steps: Sequence[Sequence[str]], remembered: Any, extra_tokens: int
) -> Iterator[tuple[tuple[str, ...], bool]]:
    """The prefixes a memoising process verifier's cost bound counts, each with whether it is its
    path's last: a last prefix stands for a step not yet written (it may grow by extra_tokens), so
    it is counted for every path; earlier prefixes once each, and only when not remembered."""
    seen: set[tuple[str, ...]] = set()
    for path in steps:
        for i in range(len(path)):
            prefix, last = tuple(path[: i + 1]), i == len(path) - 1
            known = prefix in remembered or (prefix in seen and not last)
            if known and not (last and extra_tokens > 0):
                continue
            seen.add(prefix)
            yield prefix, last


def prompt_bound(
    runner: object,
    verifier: str,
    steps: Sequence[Sequence[str]],
    remembered: Any,
    extra_tokens: int,
    request_of: Callable[[tuple[str, ...]], GenerationRequest],
    generated_per_prefix: float,
) -> float:
    """The most tokens a memoising verifier that sends one request per new prefix can spend:
    for each prefix its bound counts (bounded_prefixes), the request's prompt tokens as the runner
    counts them without generating, plus what it generates; a last prefix, whose step may still
    grow, extra_tokens + SLACK_TOKENS more."""
    if not isinstance(runner, CountsPromptTokens):
        raise UserError(f"{verifier} cannot bound its cost: its runner cannot count prompt tokens")
    sizes: dict[tuple[str, ...], int] = {}
    tokens = 0.0
    for prefix, last in bounded_prefixes(steps, remembered, extra_tokens):
        if prefix not in sizes:
            sizes[prefix] = int(runner.count_prompt_tokens(request_of(prefix)))
        tokens += sizes[prefix] + generated_per_prefix + (extra_tokens + SLACK_TOKENS if last else 0)
    return tokens


def total_spend(scored: Sequence[Scored]) -> VerifierSpend:
    spent = VerifierSpend()
    for item in scored:
        spent = spent + item.spend
    return spent


def as_bool(value: object) -> bool:
    """An option's truth value; options from the command line arrive as strings."""
    if isinstance(value, str):
        if value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if value.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"'{value}' is not a truth value; use true or false")
    return bool(value)


def refuse_unknown(verifier: str, unknown: dict[str, object], known: str) -> None:
    if unknown:
        raise UserError(
            f"verifier {verifier}: unknown option(s) {', '.join(sorted(unknown))}; it takes: {known}"
        )


def start_fresh(verifier: object) -> None:
    """Make a memoising verifier forget, so that the next search pays for all its own calls.

    llm-judge and rollout-value remember the current problem's step scores, so a search that
    re-scores a path pays only for its new step; they define `reset()`, which each search calls
    when it starts. Without it, a second search of the same problem would score for free.
    """
    reset = getattr(verifier, "reset", None)
    if callable(reset):
        reset()


def score_solutions(
    verifier: object,
    problem: Problem,
    task: Task,
    solutions: Sequence[str],
    mean_logprobs: Sequence[float | None] | None = None,
) -> Scored:
    """Outcome scores of whole solutions, handing the policy's mean logprobs to verifiers that take
    them (self-certainty), with a clear error for a verifier that scores steps only."""
    if not isinstance(verifier, OutcomeVerifier):
        name = getattr(verifier, "name", type(verifier).__name__)
        raise ValueError(
            f"verifier '{name}' scores steps only; best-of-N needs an outcome verifier "
            "(llm-judge, self-certainty, oracle, format-reward, accuracy-reward or hf-reward)"
        )
    if "mean_logprobs" in inspect.signature(verifier.score).parameters:
        return verifier.score(problem, task, solutions, mean_logprobs=mean_logprobs)  # type: ignore[call-arg]
    return verifier.score(problem, task, solutions)


class BoundVerifier:
    """An arm's verifier bound to one problem, with the view its declaration allows: the whole
    problem for a verifier declared oracle, the public view (no reference, no grader) otherwise.
    The scheduler holds one per search, never the search itself.

    What a verifier remembers is this search's own: a verifier that batches (BatchesSteps) keeps
    it in this object's `memo`; any other gets a shallow copy of its own, reset, so that a
    memoising third-party verifier is not shared between concurrent searches either.
    """

    def __init__(self, verifier: Any, problem: Problem, task: Task) -> None:
        self.name: str = getattr(verifier, "name", type(verifier).__name__)
        self.oracle = bool(getattr(verifier, "oracle", False))
        self._problem: AnyProblem = problem if self.oracle else problem.public()
        self._task: Any = task if self.oracle else PublicTask(task)
        self.memo: dict[tuple[str, ...], float] = {}
        self.shared = verifier  # the verifier as built: batched calls are grouped by it
        self.batches = isinstance(verifier, BatchesSteps)
        if not self.batches and callable(getattr(verifier, "reset", None)):
            verifier = copy.copy(verifier)
            verifier.reset()
        self._verifier = verifier

    def job(
        self, steps: Sequence[Sequence[str]], logprobs: Sequence[Sequence[float | None]] | None = None
    ) -> StepJob:
        return StepJob(self._problem, self._task, steps, logprobs, self.memo)

    @property
    def bounded(self) -> bool:
        return callable(getattr(self._verifier, "cost_bound", None))

    def score(self, solutions: Sequence[str], mean_logprobs: Sequence[float | None] | None = None) -> Scored:
        return score_solutions(self._verifier, self._problem, self._task, solutions, mean_logprobs)  # type: ignore[arg-type]

    def score_steps(
        self, steps: Sequence[Sequence[str]], logprobs: Sequence[Sequence[float | None]] | None = None
    ) -> list[Scored]:
        if self.batches and steps:
            return list(self._verifier.score_steps_many([self.job(steps, logprobs)])[0])
        return score_paths(self._verifier, self._problem, self._task, steps, logprobs)  # type: ignore[arg-type]

    def cost_bound(self, steps: Sequence[Sequence[str]], extra_tokens: int) -> VerifierSpend:
        if not steps:
            return VerifierSpend()
        if not self.bounded:
            raise UserError(
                f"verifier {self.name} cannot bound its cost before scoring (no cost_bound method), "
                "so a search cannot keep it within a budget; give it a cost_bound or use another verifier"
            )
        memo = {"memo": self.memo} if self.batches else {}
        bound: VerifierSpend = self._verifier.cost_bound(
            self._problem, self._task, steps, extra_tokens, **memo
        )
        return bound

    def reset(self) -> None:
        self.memo.clear()
        start_fresh(self._verifier)


def score_together(
    needs: Sequence[tuple[BoundVerifier, Sequence[Sequence[str]], Sequence[Sequence[float | None]] | None]],
) -> list[list[Scored]]:
    """Each search's step scores, in order: the searches of one batching verifier in one call."""
    results: list[list[Scored] | None] = [None] * len(needs)
    by_verifier: dict[int, list[int]] = {}
    for i, (bound, paths, logprobs) in enumerate(needs):
        if bound.batches and paths:
            by_verifier.setdefault(id(bound.shared), []).append(i)
        else:
            results[i] = bound.score_steps(paths, logprobs)
    for indices in by_verifier.values():
        shared = needs[indices[0]][0].shared
        jobs = [needs[i][0].job(needs[i][1], needs[i][2]) for i in indices]
        for i, scored in zip(indices, shared.score_steps_many(jobs), strict=True):
            results[i] = list(scored)
    return [r if r is not None else [] for r in results]
