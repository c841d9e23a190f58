"""The run loop: spec -> task problems -> runner samples -> strategy scores and spend -> records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tsbench import plugins, provenance
from tsbench.contracts import GenerationRequest, GenerationResult, Problem, Runner, RunnerInfo, Task
from tsbench.errors import UserError
from tsbench.ledger import policy_spend
from tsbench.records import METRICS, PERFORMANCE, PROVENANCE, RunFolder
from tsbench.report import metrics, performance
from tsbench.spec import NOT_IN_RUN_ID, RunSpec
from tsbench.stats import expected_max_of_subset
from tsbench.strategies.base import PoolStrategy, Sample

DEFAULT_MAX_TOKENS = 256
SEQUENCES_PER_GROUP = 32  # problems are generated in fixed groups of about this many sequences


def stable_int(*parts: object) -> int:
    """A 31-bit integer fixed by its parts, the same on every machine and Python run."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def resolve_task(spec: RunSpec) -> Task:
    if spec.task.endswith((".yaml", ".yml")):
        from tsbench.tasks.declared import load_task_file

        if spec.task_options:
            raise UserError(f"task file {spec.task} takes no task options; remove task_options")
        return load_task_file(spec.task)
    factory = plugins.tasks.get(spec.task)
    return factory(**spec.task_options)


@dataclass
class Prepared:
    """A validated run, ready to generate: everything that can fail on bad input has been tried."""

    spec: RunSpec
    task: Task
    problems: list[Problem]
    strategies: list[PoolStrategy]
    data_sha256: str

    @property
    def run_id(self) -> str:
        return self.spec.run_id()


def prepare(spec: RunSpec) -> Prepared:
    """Resolve the task, its problems and the strategies; fill the task's default max_tokens."""
    task = resolve_task(spec)
    strategies = [plugins.strategies.get(name)() for name in spec.strategies]
    problems = task.load(spec.limit, spec.seed, spec.data_dir)
    if not problems:
        raise UserError(f"task {spec.task} has no problems to run; check its data file and --limit")
    task_generation = getattr(task, "generation", None) or {}
    spec = replace(spec, max_tokens=spec.max_tokens or task_generation.get("max_tokens", DEFAULT_MAX_TOKENS))
    canonical = json.dumps([[p.id, p.question, p.reference, p.metadata] for p in problems], sort_keys=True)
    return Prepared(spec, task, problems, strategies, hashlib.sha256(canonical.encode()).hexdigest())


def _requests(prepared: Prepared, problem: Problem, pools: AbstractSet[str]) -> list[GenerationRequest]:
    spec = prepared.spec
    messages = tuple((m["role"], m["content"]) for m in prepared.task.messages(problem))
    requests = []
    if "greedy" in pools:
        seeds: tuple[int, ...] = (stable_int(spec.seed, problem.id, "greedy", 0),)
        requests.append(GenerationRequest(messages, 1, 0.0, 1.0, spec.max_tokens or 0, (), seeds, 0))
    if "sampled" in pools:
        n = max(spec.budgets)
        seeds = tuple(stable_int(spec.seed, problem.id, "sampled", i) for i in range(n))
        requests.append(
            GenerationRequest(messages, n, spec.temperature, spec.top_p, spec.max_tokens or 0, (), seeds, 0)
        )
    return requests


def _graded(task: Task, problem: Problem, result: GenerationResult) -> list[Sample]:
    samples = []
    for index, completion in enumerate(result.completions):
        answer = task.extract(completion.text)
        lp = completion.logprobs
        samples.append(
            Sample(
                index,
                answer,
                task.grade(answer, problem),
                completion.tokens,
                (sum(lp) / len(lp)) if lp else None,
            )
        )
    return samples


def _score_problem(
    prepared: Prepared,
    info: RunnerInfo,
    problem: Problem,
    pools: dict[str, tuple[GenerationResult, list[Sample]]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per strategy x budget: expected accuracy and spend (records), expected latency (timings)."""
    results: dict[str, dict[str, Any]] = {}
    latency: dict[str, dict[str, tuple[float, float]]] = {}
    for strategy in prepared.strategies:
        result, samples = pools[strategy.pool]
        n = len(samples)
        mean_generated = sum(s.generated_tokens for s in samples) / n
        # The engine evaluated the prompt once for the whole pool where it shares prefixes.
        prompt_per_sample = result.prompt_tokens_computed / n
        results[strategy.name], latency[strategy.name] = {}, {}
        for k in strategy.budgets(prepared.spec.budgets):
            rng = np.random.default_rng(stable_int(prepared.spec.seed, problem.id, strategy.name, k))
            prompt = result.prompt_tokens_computed if info.prefix_sharing else prompt_per_sample * k
            spend = policy_spend(info.parameters, k, prompt, mean_generated * k)
            accuracy = strategy.expected_accuracy(samples, k, rng)
            results[strategy.name][str(k)] = {"accuracy": round(accuracy, 6), "spend": spend.as_dict()}
            seconds = expected_max_of_subset([c.latency_s for c in result.completions], k)
            latency[strategy.name][str(k)] = (round(seconds, 4), round(mean_generated * k, 2))
    record = {
        "problem_id": problem.id,
        "reference": problem.reference,
        "metadata": problem.metadata,
        "messages": prepared.task.messages(problem),
        "results": results,
    }
    return record, latency


def _sample_records(
    problem: Problem, pool: str, result: GenerationResult, samples: list[Sample], req: GenerationRequest
) -> list[dict[str, Any]]:
    prompt = req.messages[-1][1]
    return [
        {
            "problem_id": problem.id,
            "pool": pool,
            "index": s.index,
            "seed": c.seed,
            "temperature": req.temperature,
            "prompt": prompt,
            "text": c.text,
            "answer": s.answer,
            "correct": s.correct,
            "prompt_tokens": result.prompt_tokens,
            "generated_tokens": c.tokens,
            "finish_reason": c.finish_reason,
            "mean_logprob": None if s.mean_logprob is None else round(s.mean_logprob, 6),
        }
        for s, c in zip(samples, result.completions, strict=True)
    ]


def groups(problems: Sequence[Problem], sequences_per_problem: int) -> list[list[Problem]]:
    """Fixed groups by position, so a resumed run batches exactly as an uninterrupted one."""
    size = max(1, SEQUENCES_PER_GROUP // sequences_per_problem)
    return [list(problems[i : i + size]) for i in range(0, len(problems), size)]


def generate_all(
    prepared: Prepared,
    runner: Runner,
    folder: RunFolder,
    on_problem_done: Callable[[int], None] = lambda _: None,
) -> int:
    """Generate and record every problem the folder does not hold yet; returns how many."""
    info = runner.info()
    pools = {s.pool for s in prepared.strategies}
    per_problem = (1 if "greedy" in pools else 0) + (max(prepared.spec.budgets) if "sampled" in pools else 0)
    done = folder.done_ids()
    generated = 0
    for group in groups(prepared.problems, per_problem):
        todo = [p for p in group if p.id not in done]
        if not todo:
            continue
        requests = [_requests(prepared, p, pools) for p in todo]
        flat = [r for rs in requests for r in rs]
        results = runner.generate(flat)
        group_wall = max(r.total_s for r in results)
        problem_records, sample_records, timing_records = [], [], []
        cursor = 0
        for problem, reqs in zip(todo, requests, strict=True):
            by_pool: dict[str, tuple[GenerationResult, list[Sample]]] = {}
            for pool, req in zip(sorted(pools), reqs, strict=True):
                result = results[cursor]
                cursor += 1
                samples = _graded(prepared.task, problem, result)
                by_pool[pool] = (result, samples)
                sample_records += _sample_records(problem, pool, result, samples, req)
            record, latency = _score_problem(prepared, info, problem, by_pool)
            problem_records.append(record)
            tokens = sum(c.tokens for r, _ in by_pool.values() for c in r.completions)
            timing_records.append(
                {
                    "problem_id": problem.id,
                    "latency": latency,
                    "generated_tokens": tokens,
                    "group_share_s": round(group_wall / len(todo), 4),
                    "samples_s": {
                        pool: [round(c.latency_s, 4) for c in r.completions]
                        for pool, (r, _) in by_pool.items()
                    },
                }
            )
        folder.commit(problem_records, sample_records, timing_records)
        generated += len(todo)
        on_problem_done(len(todo))
    return generated


def finish(
    prepared: Prepared, runner_info: RunnerInfo, folder: RunFolder
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write metrics, performance and provenance; the metrics file marks the run complete."""
    order = list(prepared.spec.strategies)
    oracles = {s.name for s in prepared.strategies if s.oracle}
    metric_data = metrics(folder.problems(), order, oracles)
    metric_data["run_id"] = prepared.run_id
    perf = performance(folder.timings())
    origin = getattr(prepared.task, "data_sha256", None)
    settings = {name: getattr(prepared.spec, name) for name in NOT_IN_RUN_ID}
    data_origin = f"task file sha256: {origin}" if origin else "procedural"
    prov = provenance.collect(runner_info, prepared.data_sha256, data_origin, settings)
    folder.write_json(PROVENANCE, prov)
    folder.write_json(PERFORMANCE, perf)
    folder.write_json(METRICS, metric_data)
    return metric_data, perf


def output_path(spec: RunSpec, results_root: Path) -> Path:
    return Path(spec.output) if spec.output else results_root / spec.run_id()
