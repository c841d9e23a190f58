"""One scheduler for every live search of a group of problems: their needs, batched.

A search is a generator (strategies.base): it yields a Generate or ScoreSteps need and is sent
the results. Pools are jobs too (one Generate need each), so a group's pool samples and its
searches' steps share the engine. Verifier needs pending together are answered together: those
of one batching verifier in one call (verifiers.base.score_together).

Two ways to feed the engine:
- A runner that batches continuously (contracts.OpensSessions: llama.cpp here) gets each job's
  requests as soon as the job asks, in one session per group; a job is sent its results when its
  last request finishes, so no search waits for another's slowest sample, and slots freed by
  short steps are refilled at once.
- Any other runner gets lockstep rounds: every pending generation need's requests concatenated
  in job order, cut into chunks of at most `batch_sequences` sequences, one generate call each
  (a beam step of 50 problems is one call).

Determinism. Jobs are admitted in the order given (the spec's: problem, arm, budget level), and
requests are added at fixed points of the loop in job order, so what the engine batches depends
on the spec and on what it returned, never on timing: a group runs the same batches on every run,
resumed or not. At most `max_live` jobs are live at once, so that the prefixes of live searches
stay in an engine's prefix cache (vLLM's beam search needed such a cap: its PR #23599).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tsbench.contracts import (
    GenerationRequest,
    GenerationResult,
    OpensSessions,
    PublicProblem,
    PublicTask,
    Runner,
)
from tsbench.errors import UserError
from tsbench.strategies.base import Estimates, Generate, Need, ScoreSteps, SearchBudget
from tsbench.verifiers.base import BoundVerifier, VerifierSpend, score_together

DEFAULT_MAX_LIVE = 256
DEFAULT_BATCH_SEQUENCES = 32  # sequences per generate call, for a runner that states no preference


@dataclass
class Job:
    """A search (or a pool's generation) driven by the scheduler.

    Args:
        search: the generator.
        verifier: the search's own bound verifier, for its ScoreSteps needs.
        label: what the job is, for error messages and timings.
        units: how much of the run's progress it is (tsbench.progress).
    """

    search: Generator[Need, Any, Any]
    verifier: BoundVerifier | None = None
    label: str = ""
    units: float = 0.0
    need: Need | None = None
    result: Any = None
    done: bool = False
    started_s: float = 0.0
    latency_s: float = 0.0  # from admission to its result
    engine_s: float = 0.0  # its share of generate calls' wall time, by generated tokens
    generated_tokens: int = 0

    def send(self, value: Any) -> None:
        try:
            need = self.search.send(value)
        except StopIteration as stop:
            self.result, self.done, self.need = stop.value, True, None
            self.latency_s = time.perf_counter() - self.started_s
            return
        if not isinstance(need, (Generate, ScoreSteps)):
            raise TypeError(
                f"search {self.label} yielded {type(need).__name__}; yield Generate or ScoreSteps"
            )
        if isinstance(need, ScoreSteps) and self.verifier is None:
            raise TypeError(f"search {self.label} asked for step scores but has no verifier")
        self.need = need

    def start(self) -> None:
        self.started_s = time.perf_counter()
        self.send(None)


def generation(requests: Sequence[GenerationRequest]) -> Generator[Need, Any, list[GenerationResult]]:
    """A job that needs one batch of generations and returns their results (a pool)."""
    results: list[GenerationResult] = yield Generate(tuple(requests))
    return results


def chunks(requests: Sequence[GenerationRequest], batch_sequences: int) -> list[tuple[int, int]]:
    """(start, end) ranges of requests with at most batch_sequences sequences each (a larger request
    alone), in order: the cut depends on the requests only."""
    ranges, start, sequences = [], 0, 0
    for i, request in enumerate(requests):
        if i > start and sequences + request.n > batch_sequences:
            ranges.append((start, i))
            start, sequences = i, 0
        sequences += request.n
    if start < len(requests):
        ranges.append((start, len(requests)))
    return ranges


class Scheduler:
    """Drives jobs to completion through one runner.

    Args:
        runner: the policy runner; only the scheduler calls its generate.
        batch_sequences: most sequences per generate call.
        max_live: most jobs live at once.
        on_tokens: called with the tokens each generate call produced (progress).
        on_done: called with each job as it ends (progress).
    """

    def __init__(
        self,
        runner: Runner,
        batch_sequences: int,
        max_live: int = DEFAULT_MAX_LIVE,
        on_tokens: Callable[[int], None] = lambda _: None,
        on_done: Callable[[Job], None] = lambda _: None,
    ) -> None:
        self.runner, self.batch_sequences = runner, max(1, batch_sequences)
        self.max_live, self.on_tokens, self.on_done = max(1, max_live), on_tokens, on_done
        self.calls = 0
        self.engine_s = 0.0

    def run(self, jobs: Sequence[Job]) -> None:
        if isinstance(self.runner, OpensSessions):
            self._run_continuous(jobs, self.runner)
            return
        waiting, live = deque(jobs), list[Job]()
        while waiting or live:
            self._admit(waiting, live)
            scoring = [job for job in live if isinstance(job.need, ScoreSteps)]
            if scoring:
                self._score(scoring)
            else:
                self._generate([job for job in live if isinstance(job.need, Generate)])
            for job in live:
                if job.done:
                    self.on_done(job)
            live = [job for job in live if not job.done]

    def _admit(self, waiting: deque[Job], live: list[Job]) -> None:
        while waiting and len(live) < self.max_live:
            job = waiting.popleft()
            job.start()
            if job.done:
                self.on_done(job)
            else:
                live.append(job)

    def _run_continuous(self, jobs: Sequence[Job], runner: OpensSessions) -> None:
        """With a runner that batches continuously: a job's requests join the running batch as
        soon as it asks, and it is sent their results as soon as the last one finishes, so no
        job waits for another's slowest sample. Verifier needs pending together are scored
        together. Adds happen in job order at fixed points, so the batches repeat exactly."""
        session = runner.open_session()
        try:
            waiting, live = deque(jobs), list[Job]()
            owner: dict[int, tuple[Job, int]] = {}  # session key -> (job, position in its need)
            answers: dict[int, list[GenerationResult | None]] = {}  # id(job) -> its results so far
            while waiting or live:
                self._admit(waiting, live)
                while scoring := [job for job in live if isinstance(job.need, ScoreSteps)]:
                    self._score(scoring)
                for job in live:
                    if isinstance(job.need, Generate) and id(job) not in answers:
                        requests = job.need.requests
                        answers[id(job)] = [None] * len(requests)
                        for position, request in enumerate(requests):
                            owner[session.add(request)] = (job, position)
                        if not requests:
                            self._deliver(job, answers.pop(id(job)))
                ended = [job for job in live if job.done]
                live = [job for job in live if not job.done]
                for job in ended:
                    self.on_done(job)
                if not owner:
                    continue
                started = time.perf_counter()
                finished = session.step()
                self.calls += 1
                if not finished:
                    raise RuntimeError("the runner's session finished nothing while requests were queued")
                for key, result in finished:
                    job, position = owner.pop(key)
                    found = answers[id(job)]
                    found[position] = result
                    tokens = sum(c.tokens for c in result.completions)
                    job.generated_tokens += tokens
                    share = result.engine_s if result.engine_s is not None else time.perf_counter() - started
                    job.engine_s += share
                    self.engine_s += share
                    self.on_tokens(tokens)
                    if all(r is not None for r in found):
                        self._deliver(job, answers.pop(id(job)))
        finally:
            session.close()

    @staticmethod
    def _deliver(job: Job, results: list[GenerationResult | None]) -> None:
        job.send([r for r in results if r is not None])

    def _score(self, jobs: list[Job]) -> None:
        needs = [(job.verifier, job.need) for job in jobs]
        scored = score_together(
            [(verifier, need.paths, need.logprobs) for verifier, need in needs]  # type: ignore[union-attr, misc]
        )
        for job, result in zip(jobs, scored, strict=True):
            job.send(result)

    def _generate(self, jobs: list[Job]) -> None:
        owners = [j for j, job in enumerate(jobs) for _ in job.need.requests]  # type: ignore[union-attr]
        requests = [r for job in jobs for r in job.need.requests]  # type: ignore[union-attr]
        results: list[GenerationResult] = []
        for start, end in chunks(requests, self.batch_sequences):
            started = time.perf_counter()
            found = self.runner.generate(requests[start:end])
            wall = time.perf_counter() - started
            self.calls, self.engine_s = self.calls + 1, self.engine_s + wall
            tokens = [sum(c.tokens for c in result.completions) for result in found]
            for owner, count in zip(owners[start:end], tokens, strict=True):
                job = jobs[owner]
                job.generated_tokens += count
                job.engine_s += wall * count / max(1, sum(tokens)) if sum(tokens) else wall / (end - start)
            self.on_tokens(sum(tokens))
            results += found
        answers: list[list[GenerationResult]] = [[] for _ in jobs]
        for owner, result in zip(owners, results, strict=True):
            answers[owner].append(result)
        for job, answer in zip(jobs, answers, strict=True):
            job.send(answer)


def no_verifier_cost(paths: Sequence[Sequence[str]], extra_tokens: int) -> VerifierSpend:
    """The cost bound of a search without a verifier (a proposal strategy): nothing."""
    return VerifierSpend()


def estimates(runner: Any, verifier: BoundVerifier | None) -> Estimates:
    """What a search on this runner, scored by this verifier (None: a proposal strategy, which
    never asks for scores), may ask before it spends."""
    count = getattr(runner, "count_prompt_tokens", None)

    def cannot_count(request: GenerationRequest) -> int:
        raise UserError(
            "this runner cannot count prompt tokens before generating, which a search needs to keep "
            "each step within its budget"
        )

    return Estimates(
        runner.info().parameters,
        count if callable(count) else cannot_count,
        no_verifier_cost if verifier is None else verifier.cost_bound,
    )


def solve_alone(
    strategy: Any,
    problem: PublicProblem,
    task: PublicTask,
    runner: Runner,
    verifier: BoundVerifier | None,
    budget: SearchBudget,
    rng: np.random.Generator,
) -> Any:
    """One search on its own, through a scheduler as in a run (tests, benchmarks): its Attempt."""
    job = Job(
        strategy.search(problem, task, estimates(runner, verifier), budget, rng), verifier, strategy.name
    )
    Scheduler(runner, DEFAULT_BATCH_SEQUENCES, 1).run([job])
    return job.result
