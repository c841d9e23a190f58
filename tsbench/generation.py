"""The generation loop: groups of problems -> scheduler (pools and searches) -> verifier scores -> records.

What is recorded here is kept as generated. Grades and scores are derived from the records by
tsbench.scoring, at the end of a run and whenever `tsbench report` re-scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from tsbench.contracts import GenerationRequest, GenerationResult, Problem, PublicTask, Runner, task_stop
from tsbench.ledger import forward_flops
from tsbench.progress import Progress
from tsbench.records import RunFolder
from tsbench.run import DEFAULT_MAX_TOKENS, Prepared, pool_size
from tsbench.scheduler import DEFAULT_BATCH_SEQUENCES, DEFAULT_MAX_LIVE, Job, Scheduler, estimates, generation
from tsbench.scoring import Arm, stable_int
from tsbench.spec import RunSpec
from tsbench.strategies.base import SearchBudget
from tsbench.verifiers.base import BoundVerifier

GROUP_BATCHES = 2  # a group of problems holds about this many engine batches of sequences


def _requests(prepared: Prepared, problem: Problem) -> list[GenerationRequest]:
    spec = prepared.spec
    messages = tuple((m["role"], m["content"]) for m in prepared.task.messages(problem.public()))
    stop = task_stop(prepared.task)
    requests = []
    for pool in prepared.pools:
        n = 1 if pool == "greedy" else pool_size(spec)
        temperature, top_p = (0.0, 1.0) if pool == "greedy" else (spec.temperature, spec.top_p)
        seeds = tuple(stable_int(spec.seed, problem.id, pool, i) for i in range(n))
        requests.append(
            GenerationRequest(messages, n, temperature, top_p, spec.max_tokens or 0, stop, seeds, 0)
        )
    return requests


def _mean_logprob(logprobs: list[float] | None) -> float | None:
    return sum(logprobs) / len(logprobs) if logprobs else None


def _verifier_scores(
    prepared: Prepared, problem: Problem, result: GenerationResult, verifiers: dict[str, Any]
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float]]:
    """Each outcome verifier's scores of a sampled pool, its spend per sample ([tokens, flops])
    and its scoring time per sample. Each sees the problem in the view its declaration allows."""
    texts = [c.text for c in result.completions]
    mean_logprobs = [_mean_logprob(c.logprobs) for c in result.completions]
    n = len(texts)
    scores: dict[str, list[float]] = {}
    spend: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    for name, verifier in verifiers.items():
        if not hasattr(verifier, "score"):  # process-only: consulted by searches, not pools
            continue
        started = time.perf_counter()
        scored = BoundVerifier(verifier, problem, prepared.task).score(texts, mean_logprobs)
        seconds[name] = round((time.perf_counter() - started) / n, 6)
        scores[name] = [round(float(s), 6) for s in scored.scores]
        spend[name] = [round(scored.spend.tokens / n, 3), round(scored.spend.flops / n, 3)]
    return scores, spend, seconds


def search_budgets(
    spec: RunSpec, strategy: Any, prompt_tokens: int, parameters: int
) -> list[tuple[int, SearchBudget]]:
    """(level, budget) of a search on one problem, whatever other arms the run has.

    N (the search's width) is the number of whole samples at the token cap that fit the level;
    with budgets in samples it is the level itself, and only policy tokens are bounded (by that
    many samples at the cap).
    """
    cap = spec.max_tokens or DEFAULT_MAX_TOKENS
    one = prompt_tokens + cap
    if spec.budget_unit == "samples":
        return [
            (k, SearchBudget(samples=k, tokens=float(k * one), policy_only=True, max_tokens=cap))
            for k in strategy.budgets(spec.budgets)
        ]
    found = []
    # A strategy may report fewer levels than asked (budget forcing at a fixed cap: one).
    for level in strategy.budgets(spec.budgets):
        if spec.budget_unit == "tokens":
            budget = SearchBudget(samples=max(1, level // one), tokens=float(level), max_tokens=cap)
        else:
            n = max(1, int(level // forward_flops(parameters, one)))
            budget = SearchBudget(samples=n, flops=float(level), max_tokens=cap)
        found.append((level, budget))
    return found


@dataclass
class SearchRun:
    """One search of one problem at one budget level, as a scheduler job."""

    problem: Problem
    arm: Arm
    level: int
    budget: SearchBudget
    job: Job


def search_jobs(
    prepared: Prepared, runner: Runner, parameters: int, verifiers: dict[str, Any], problem: Problem, arm: Arm
) -> list[SearchRun]:
    """The arm's searches of a problem, one per budget level, each with its own bound verifier
    (what a verifier remembers is one search's) and a seed of its own."""
    spec = prepared.spec
    public, view = problem.public(), PublicTask(prepared.task)
    messages = tuple((m["role"], m["content"]) for m in view.messages(public))
    prompt_tokens = runner.count_prompt_tokens(GenerationRequest(messages))  # type: ignore[attr-defined]
    runs = []
    for level, budget in search_budgets(spec, arm.strategy, prompt_tokens, parameters):
        rng = np.random.default_rng(stable_int(spec.seed, problem.id, arm.key, level))
        verifier = (
            None if arm.verifier is None else BoundVerifier(verifiers[arm.verifier], problem, prepared.task)
        )
        search = arm.strategy.search(public, view, estimates(runner, verifier), budget, rng)
        runs.append(SearchRun(problem, arm, level, budget, Job(search, verifier, f"{arm.key} at {level}")))
    for run in runs:
        run.job.units = 1 / len(runs)
    return runs


def search_record(run: SearchRun) -> dict[str, Any]:
    attempt = run.job.result
    return {
        "text": attempt.text,
        "answer": attempt.answer,
        "k": attempt.trace.get("width", run.budget.samples),
        "spend": attempt.spend.as_dict(),
        "fallback": attempt.fallback,
    }


def _sample_records(
    problem: Problem,
    pool: str,
    request: GenerationRequest,
    result: GenerationResult,
    scored: tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float]] | None,
) -> list[dict[str, Any]]:
    scores, spend, _ = scored or ({}, {}, {})
    records = []
    for index, c in enumerate(result.completions):
        mean_lp = _mean_logprob(c.logprobs)
        records.append(
            {
                "problem_id": problem.id,
                "pool": pool,
                "index": index,
                "seed": c.seed,
                "temperature": request.temperature,
                "prompt": request.messages[-1][1],
                "text": c.text,
                "prompt_tokens": result.prompt_tokens,
                "generated_tokens": c.tokens,
                "stop_reason": c.stop_reason,
                "stop_string": c.stop_string,
                "mean_logprob": None if mean_lp is None else round(mean_lp, 6),
                "scores": {name: values[index] for name, values in scores.items()},
                "verifier_spend": {name: values for name, values in spend.items()},
            }
        )
    return records


def batch_sequences(spec: RunSpec, runner: Runner) -> int:
    """Sequences per generate call: the spec's, else the runner's preference."""
    return spec.batch_sequences or int(getattr(runner, "batch_sequences", DEFAULT_BATCH_SEQUENCES))


def sequences_per_problem(prepared: Prepared) -> int:
    """About how many sequences a problem keeps busy at once: its pools' samples, and each
    search's width (N, at most the level's whole samples at the token cap)."""
    spec = prepared.spec
    cap = spec.max_tokens or DEFAULT_MAX_TOKENS
    sequences = sum(1 if pool == "greedy" else pool_size(spec) for pool in prepared.pools)
    for arm in prepared.arms:
        if arm.strategy.pool == "search":
            levels = arm.strategy.budgets(spec.budgets) if spec.budget_unit == "samples" else spec.budgets
            sequences += sum(k if spec.budget_unit == "samples" else max(1, k // cap) for k in levels)
    return max(1, sequences)


def groups(prepared: Prepared, batch: int) -> list[list[Problem]]:
    """Fixed groups by position, each about GROUP_BATCHES engine batches of sequences, so that a
    resumed run batches exactly as an uninterrupted one (a group is generated and committed whole)."""
    size = max(1, round(GROUP_BATCHES * batch / sequences_per_problem(prepared)))
    problems = prepared.problems
    return [list(problems[i : i + size]) for i in range(0, len(problems), size)]


def generate_all(
    prepared: Prepared,
    runner: Runner,
    parameters: int,
    verifiers: dict[str, Any],
    folder: RunFolder,
    progress: Progress | None = None,
) -> int:
    """Generate and record every problem the folder does not hold yet; returns how many.

    Each group's pools and searches run as jobs of one scheduler, so every batch of the group's
    work goes to the engine together; pool verifiers then score the sampled pools."""
    spec = prepared.spec
    batch = batch_sequences(spec, runner)
    progress = progress or Progress(0, 0, "", enabled=False)
    scheduler = Scheduler(
        runner,
        batch,
        spec.max_live or DEFAULT_MAX_LIVE,
        progress.tokens,
        lambda job: progress.advance(job.units),
    )
    pool_arms = sum(1 for a in prepared.arms if a.strategy.pool != "search")
    # Only verifiers that a pool arm consults score the pool (llm-judge may serve searches only).
    pool_verifiers = {
        name: verifier
        for name, verifier in verifiers.items()
        if any(a.verifier == name and a.strategy.pool != "search" for a in prepared.arms)
    }
    done = folder.done_ids()
    generated = 0
    for group in groups(prepared, batch):
        todo = [p for p in group if p.id not in done]
        if not todo:
            continue
        engine_before = scheduler.engine_s
        pools: list[tuple[list[GenerationRequest], Job]] = []
        searches: list[list[SearchRun]] = []
        for problem in todo:
            requests = _requests(prepared, problem)
            pools.append((requests, Job(generation(requests), None, f"pools of {problem.id}", pool_arms)))
            searches.append(
                [
                    run
                    for arm in prepared.arms
                    if arm.strategy.pool == "search"
                    for run in search_jobs(prepared, runner, parameters, verifiers, problem, arm)
                ]
            )
        jobs: list[Job] = []
        for (requests, pool_job), runs in zip(pools, searches, strict=True):
            jobs += ([pool_job] if requests else []) + [run.job for run in runs]
        scheduler.run(jobs)
        share_s = (scheduler.engine_s - engine_before) / len(todo)
        problem_records, sample_records, timing_records, traces = [], [], [], []
        for problem, (requests, pool_job), runs in zip(todo, pools, searches, strict=True):
            results = pool_job.result or []
            outcomes = {
                pool: (req, res) for pool, req, res in zip(prepared.pools, requests, results, strict=True)
            }
            verifier_s: dict[str, float] = {}
            for pool, (req, result) in outcomes.items():
                # Verifiers rank the sampled pool; greedy has one sample to pick.
                scored = (
                    _verifier_scores(prepared, problem, result, pool_verifiers) if pool == "sampled" else None
                )
                verifier_s.update(scored[2] if scored else {})
                sample_records += _sample_records(problem, pool, req, result, scored)
            attempts: dict[str, dict[str, Any]] = {}
            search_s: dict[str, dict[str, float]] = {}
            search_engine_s: dict[str, dict[str, float]] = {}
            for run in runs:
                key, level = run.arm.key, str(run.level)
                attempts.setdefault(key, {})[level] = search_record(run)
                search_s.setdefault(key, {})[level] = round(run.job.latency_s, 4)
                search_engine_s.setdefault(key, {})[level] = round(run.job.engine_s, 4)
                traces.append(
                    {"problem_id": problem.id, "arm": key, "k": run.level, "trace": run.job.result.trace}
                )
            problem_records.append(
                {
                    "problem_id": problem.id,
                    "question": problem.question,
                    "reference": problem.reference,
                    "metadata": problem.metadata,
                    "messages": prepared.task.messages(problem.public()),
                    "searches": attempts,
                }
            )
            completions = [c for _, o in outcomes.values() for c in o.completions]
            timing_records.append(
                {
                    "problem_id": problem.id,
                    "generated_tokens": sum(c.tokens for c in completions)
                    + sum(run.job.generated_tokens for run in runs),
                    "group_share_s": round(share_s, 4),
                    "prompt_tokens_computed": {p: o.prompt_tokens_computed for p, (_, o) in outcomes.items()},
                    "samples_s": {
                        p: [round(c.latency_s, 4) for c in o.completions] for p, (_, o) in outcomes.items()
                    },
                    "sample_tokens": {p: [c.tokens for c in o.completions] for p, (_, o) in outcomes.items()},
                    # Samples read back from the generation cache (tsbench.cache), not generated now.
                    "cached": {p: getattr(o, "cached", 0) for p, (_, o) in outcomes.items()},
                    "ttft_s": {
                        p: None if o.ttft_s is None else round(o.ttft_s, 4) for p, (_, o) in outcomes.items()
                    },
                    "verifier_s": verifier_s,
                    "search_s": search_s,
                    "search_engine_s": search_engine_s,
                }
            )
        folder.commit(problem_records, sample_records, timing_records, traces)
        generated += len(todo)
    return generated
