"""The run loop: spec -> task problems -> runner samples -> strategies (with verifiers) -> records."""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tsbench import plugins, provenance
from tsbench.contracts import GenerationRequest, GenerationResult, Problem, Runner, RunnerInfo, Task
from tsbench.errors import UserError
from tsbench.ledger import Spend, policy_spend
from tsbench.records import METRICS, PERFORMANCE, PROVENANCE, RunFolder
from tsbench.report import metrics, performance, rule_rewards
from tsbench.spec import DEFAULT_POOL_SIZE, NOT_IN_RUN_ID, RunSpec
from tsbench.stats import expected_max_of_subset
from tsbench.strategies.base import Sample, SearchBudget

DEFAULT_MAX_TOKENS = 256
SEQUENCES_PER_GROUP = 32  # problems are generated in fixed groups of about this many sequences
POOLS = ("greedy", "sampled")


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


def pool_size(spec: RunSpec) -> int:
    """Samples per problem in the sampled pool."""
    if spec.pool_size:
        return spec.pool_size
    return max(spec.budgets) if spec.budget_unit == "samples" else DEFAULT_POOL_SIZE


def affordable(budget: float, cost: Callable[[int], float], most: int) -> int:
    """The largest k <= most whose cost fits the budget; at least 1, the smallest step there is."""
    k = 1
    while k < most and cost(k + 1) <= budget:
        k += 1
    return k


def needs_verifier(strategy: Any) -> bool:
    return strategy.pool == "search" or bool(getattr(strategy, "needs_verifier", False))


@dataclass(frozen=True)
class Arm:
    """One row family of the table: a strategy, with the verifier it consults if any."""

    strategy: Any
    verifier: str | None

    @property
    def key(self) -> str:
        return self.strategy.name if self.verifier is None else f"{self.strategy.name}/{self.verifier}"


@dataclass
class Prepared:
    """A validated run, ready to generate: everything that can fail on bad input has been tried."""

    spec: RunSpec
    task: Task
    problems: list[Problem]
    arms: list[Arm]
    data_sha256: str

    @property
    def run_id(self) -> str:
        return self.spec.run_id()

    @property
    def pools(self) -> list[str]:
        return [pool for pool in POOLS if any(a.strategy.pool == pool for a in self.arms)]


def _build_strategy(spec: RunSpec, name: str) -> Any:
    factory = plugins.strategies.get(name)
    options = spec.strategy_options.get(name, {})
    try:
        return factory(**options)
    except TypeError as exc:
        raise UserError(
            f"strategy_options.{name}: {exc}; see the strategy's docstring for its options"
        ) from None


def prepare(spec: RunSpec) -> Prepared:
    """Resolve task, problems, strategies and verifier names; fill the task's default max_tokens."""
    task = resolve_task(spec)
    for name in spec.verifiers:
        plugins.verifiers.get(name)
    arms: list[Arm] = []
    for name in spec.strategies:
        strategy = _build_strategy(spec, name)
        if not needs_verifier(strategy):
            arms.append(Arm(strategy, None))
        elif not spec.verifiers:
            raise UserError(
                f"strategy {name} needs a verifier; pass --verifier NAME (see `tsbench list verifiers`)"
            )
        else:
            arms += [Arm(strategy, verifier) for verifier in spec.verifiers]
    if spec.budget_unit == "samples" and spec.pool_size and spec.pool_size < max(spec.budgets):
        raise UserError(
            f"pool_size {spec.pool_size} is below the largest budget {max(spec.budgets)}; "
            "raise pool_size or drop it (it defaults to the largest budget)"
        )
    problems = task.load(spec.limit, spec.seed, spec.data_dir)
    if not problems:
        raise UserError(f"task {spec.task} has no problems to run; check its data file and --limit")
    task_generation = getattr(task, "generation", None) or {}
    spec = replace(spec, max_tokens=spec.max_tokens or task_generation.get("max_tokens", DEFAULT_MAX_TOKENS))
    canonical = json.dumps([[p.id, p.question, p.reference, p.metadata] for p in problems], sort_keys=True)
    return Prepared(spec, task, problems, arms, hashlib.sha256(canonical.encode()).hexdigest())


def build_verifiers(prepared: Prepared, runner: Runner) -> dict[str, Any]:
    """Build the verifiers the arms consult, on the policy runner (llm-judge and rollouts use it).

    Step-wise searches need a process verifier and pool strategies an outcome verifier: pairings
    of the wrong shape are dropped, and a strategy left with no verifier is an input error.
    """
    names = sorted({a.verifier for a in prepared.arms if a.verifier is not None})
    built = {
        name: plugins.verifiers.get(name)(runner, **prepared.spec.verifier_options.get(name, {}))
        for name in names
    }

    def fits(arm: Arm) -> bool:
        if arm.verifier is None:
            return True
        shape = "score_steps" if arm.strategy.pool == "search" else "score"
        return hasattr(built[arm.verifier], shape)

    kept = [a for a in prepared.arms if fits(a)]
    for name in prepared.spec.strategies:
        if any(a.strategy.name == name for a in prepared.arms) and not any(
            a.strategy.name == name for a in kept
        ):
            search = any(a.strategy.name == name and a.strategy.pool == "search" for a in prepared.arms)
            need, example = (
                ("a process verifier", "llm-judge") if search else ("an outcome verifier", "self-certainty")
            )
            raise UserError(
                f"strategy {name} needs {need}, but none of {', '.join(names)} is one; "
                f"add e.g. --verifier {example}"
            )
    prepared.arms = kept
    return built


def _requests(prepared: Prepared, problem: Problem) -> list[GenerationRequest]:
    spec = prepared.spec
    messages = tuple((m["role"], m["content"]) for m in prepared.task.messages(problem))
    requests = []
    for pool in prepared.pools:
        n = 1 if pool == "greedy" else pool_size(spec)
        temperature, top_p = (0.0, 1.0) if pool == "greedy" else (spec.temperature, spec.top_p)
        seeds = tuple(stable_int(spec.seed, problem.id, pool, i) for i in range(n))
        requests.append(
            GenerationRequest(messages, n, temperature, top_p, spec.max_tokens or 0, (), seeds, 0)
        )
    return requests


@dataclass
class PoolOutcome:
    """A problem's pool of samples, graded, with each verifier's scores and spend per sample."""

    request: GenerationRequest
    result: GenerationResult
    samples: list[Sample]
    scores: dict[str, list[float]]
    verifier_spend: dict[str, Spend]  # per sample
    verifier_s: dict[str, float]  # wall time per sample

    @property
    def mean_generated(self) -> float:
        return sum(s.generated_tokens for s in self.samples) / len(self.samples)


def _graded(task: Task, problem: Problem, result: GenerationResult) -> list[Sample]:
    samples = []
    for index, completion in enumerate(result.completions):
        answer = task.extract(completion.text)
        lp = completion.logprobs
        mean_lp = (sum(lp) / len(lp)) if lp else None
        samples.append(Sample(index, answer, task.grade(answer, problem), completion.tokens, mean_lp))
    return samples


def _verify(verifier: Any, problem: Problem, task: Task, texts: list[str], samples: list[Sample]) -> Any:
    """Score a pool; verifiers that read the policy's own logprobs get them alongside the text."""
    if "mean_logprobs" in inspect.signature(verifier.score).parameters:
        return verifier.score(problem, task, texts, mean_logprobs=[s.mean_logprob for s in samples])
    return verifier.score(problem, task, texts)


def _pool_outcome(
    prepared: Prepared,
    problem: Problem,
    request: GenerationRequest,
    result: GenerationResult,
    verifiers: dict[str, Any],
) -> PoolOutcome:
    samples = _graded(prepared.task, problem, result)
    scores: dict[str, list[float]] = {}
    spend: dict[str, Spend] = {}
    seconds: dict[str, float] = {}
    if request.temperature > 0:  # verifiers rank the sampled pool; greedy has one sample to pick
        texts = [c.text for c in result.completions]
        n = len(texts)
        for name, verifier in verifiers.items():
            if not hasattr(verifier, "score"):  # process-only: consulted by searches, not pools
                continue
            started = time.perf_counter()
            scored = _verify(verifier, problem, prepared.task, texts, samples)
            seconds[name] = (time.perf_counter() - started) / n
            scores[name] = [round(float(s), 6) for s in scored.scores]
            spend[name] = Spend(verifier_tokens=scored.spend.tokens / n, flops=scored.spend.flops / n)
    return PoolOutcome(request, result, samples, scores, spend, seconds)


def _score_pool_arm(
    prepared: Prepared, info: RunnerInfo, problem: Problem, arm: Arm, pool: PoolOutcome
) -> tuple[dict[str, Any], dict[str, tuple[float, float]]]:
    """Expected accuracy and spend at every budget level, from the problem's one pool."""
    strategy, n = arm.strategy, len(pool.samples)
    samples = pool.samples
    if arm.verifier is not None:
        samples = [replace(s, score=v) for s, v in zip(samples, pool.scores[arm.verifier], strict=True)]
    computed = pool.result.prompt_tokens_computed

    def spend_at(k: int) -> Spend:
        # The engine evaluated the prompt once for the whole pool where it shares prefixes.
        prompt = computed if info.prefix_sharing else computed / n * k
        spend = policy_spend(info.parameters, k, prompt, pool.mean_generated * k)
        if arm.verifier is not None:
            per_sample = pool.verifier_spend[arm.verifier]
            spend = spend + Spend(verifier_tokens=per_sample.verifier_tokens * k, flops=per_sample.flops * k)
        return spend

    results, latency = {}, {}
    for level, k in _levels(prepared.spec, strategy, spend_at, n):
        rng = np.random.default_rng(stable_int(prepared.spec.seed, problem.id, arm.key, level))
        accuracy = strategy.expected_accuracy(samples, k, rng)
        results[str(level)] = {"accuracy": round(accuracy, 6), "k": k, "spend": spend_at(k).as_dict()}
        seconds = expected_max_of_subset([c.latency_s for c in pool.result.completions], k)
        if arm.verifier is not None:  # scoring k samples takes k/n of the pool's scoring time
            seconds += pool.verifier_s[arm.verifier] * k
        latency[str(level)] = (round(seconds, 4), round(pool.mean_generated * k, 2))
    return results, latency


def _levels(
    spec: RunSpec, strategy: Any, spend_at: Callable[[int], Spend], most: int
) -> list[tuple[int, int]]:
    """(budget level, samples k) pairs a strategy reports on one problem.

    With samples the level is k. With tokens or FLOPs, k is the most samples whose spend on this
    problem fits the level, so every strategy spends within one sample of it.
    """
    if spec.budget_unit == "samples":
        return [(k, k) for k in strategy.budgets(spec.budgets)]
    field = "generated_tokens" if spec.budget_unit == "tokens" else "flops"
    pairs = []
    for level in spec.budgets:
        k = affordable(level, lambda j: float(getattr(spend_at(j), field)), most)
        allowed = strategy.budgets([k])
        if allowed:
            pairs.append((level, allowed[0]))
    return pairs


def _run_search_arm(
    prepared: Prepared,
    runner: Runner,
    verifiers: dict[str, Any],
    problem: Problem,
    arm: Arm,
    sampled: PoolOutcome | None,
) -> tuple[dict[str, Any], dict[str, tuple[float, float]], list[dict[str, Any]]]:
    """Run a search once per budget level, matched to what the sampled pool spent at that level.

    With samples, a search at k may generate as many tokens as k pool samples did on this
    problem; with tokens, the level itself; with FLOPs, it stops at the step whose policy and
    verifier FLOPs reach the level. k (beams or paths) is the samples that fit the level.
    """
    spec = prepared.spec
    per_sample = sampled.mean_generated if sampled else float(spec.max_tokens or DEFAULT_MAX_TOKENS)
    parameters = runner.info().parameters
    verifier = verifiers[arm.verifier or ""]
    prompt = float(sampled.result.prompt_tokens) if sampled else 0.0

    def pool_spend(k: int) -> Spend:
        return policy_spend(parameters, k, prompt * k, per_sample * k)

    results, latency, traces = {}, {}, []
    for level, k in _levels(spec, arm.strategy, pool_spend, pool_size(spec)):
        rng = np.random.default_rng(stable_int(spec.seed, problem.id, arm.key, level))
        if spec.budget_unit == "flops":
            budget = SearchBudget(samples=k, generated_tokens=float("inf"), flops=float(level))
        else:
            tokens = float(level) if spec.budget_unit == "tokens" else per_sample * k
            budget = SearchBudget(samples=k, generated_tokens=tokens)
        started = time.perf_counter()
        attempt = arm.strategy.solve(problem, prepared.task, runner, verifier, budget, rng)
        seconds = time.perf_counter() - started
        correct = prepared.task.grade(attempt.answer, problem)
        results[str(level)] = {
            "accuracy": float(correct),
            "answer": attempt.answer,
            "k": k,
            "spend": attempt.spend.as_dict(),
        }
        latency[str(level)] = (round(seconds, 4), round(attempt.spend.generated_tokens, 2))
        traces.append({"problem_id": problem.id, "arm": arm.key, "k": level, "trace": attempt.trace})
    return results, latency, traces


def _sample_records(problem: Problem, pool: str, outcome: PoolOutcome) -> list[dict[str, Any]]:
    req, result = outcome.request, outcome.result
    return [
        {
            "problem_id": problem.id,
            "pool": pool,
            "index": s.index,
            "seed": c.seed,
            "temperature": req.temperature,
            "prompt": req.messages[-1][1],
            "text": c.text,
            "answer": s.answer,
            "correct": s.correct,
            "prompt_tokens": result.prompt_tokens,
            "generated_tokens": c.tokens,
            "finish_reason": c.finish_reason,
            "mean_logprob": None if s.mean_logprob is None else round(s.mean_logprob, 6),
            "scores": {name: scores[s.index] for name, scores in outcome.scores.items()},
        }
        for s, c in zip(outcome.samples, result.completions, strict=True)
    ]


def groups(problems: Sequence[Problem], sequences_per_problem: int) -> list[list[Problem]]:
    """Fixed groups by position, so a resumed run batches exactly as an uninterrupted one."""
    size = max(1, SEQUENCES_PER_GROUP // max(1, sequences_per_problem))
    return [list(problems[i : i + size]) for i in range(0, len(problems), size)]


def generate_all(
    prepared: Prepared,
    runner: Runner,
    verifiers: dict[str, Any],
    folder: RunFolder,
    on_problem_done: Callable[[int], None] = lambda _: None,
) -> int:
    """Generate and record every problem the folder does not hold yet; returns how many."""
    info = runner.info()
    pools = prepared.pools
    per_problem = sum(1 if pool == "greedy" else pool_size(prepared.spec) for pool in pools)
    done = folder.done_ids()
    generated = 0
    for group in groups(prepared.problems, per_problem):
        todo = [p for p in group if p.id not in done]
        if not todo:
            continue
        requests = [_requests(prepared, p) for p in todo]
        flat = [r for rs in requests for r in rs]
        generated_results = runner.generate(flat) if flat else []
        # The engine's wall time for the group's pools: what tokens/s is measured over.
        engine_s = max((r.total_s for r in generated_results), default=0.0)
        results = iter(generated_results)
        problem_records, sample_records, timing_records, traces = [], [], [], []
        for problem, reqs in zip(todo, requests, strict=True):
            outcomes = {
                pool: _pool_outcome(prepared, problem, req, next(results), verifiers)
                for pool, req in zip(pools, reqs, strict=True)
            }
            for pool, outcome in outcomes.items():
                sample_records += _sample_records(problem, pool, outcome)
            scored: dict[str, Any] = {}
            latency: dict[str, Any] = {}
            for arm in prepared.arms:
                if arm.strategy.pool == "search":
                    found = _run_search_arm(
                        prepared, runner, verifiers, problem, arm, outcomes.get("sampled")
                    )
                    scored[arm.key], latency[arm.key], arm_traces = found
                    traces += arm_traces
                else:
                    outcome = outcomes[arm.strategy.pool]
                    scored[arm.key], latency[arm.key] = _score_pool_arm(prepared, info, problem, arm, outcome)
            problem_records.append(
                {
                    "problem_id": problem.id,
                    "reference": problem.reference,
                    "metadata": problem.metadata,
                    "messages": prepared.task.messages(problem),
                    "results": scored,
                }
            )
            pool_tokens = sum(c.tokens for o in outcomes.values() for c in o.result.completions)
            timing_records.append(
                {
                    "problem_id": problem.id,
                    "latency": latency,
                    "generated_tokens": pool_tokens,
                    "group_share_s": round(engine_s / len(todo), 4),
                    "samples_s": {
                        pool: [round(c.latency_s, 4) for c in o.result.completions]
                        for pool, o in outcomes.items()
                    },
                    "sample_tokens": {
                        pool: [c.tokens for c in o.result.completions] for pool, o in outcomes.items()
                    },
                    "ttft_s": {
                        pool: None if o.result.ttft_s is None else round(o.result.ttft_s, 4)
                        for pool, o in outcomes.items()
                    },
                }
            )
        folder.commit(problem_records, sample_records, timing_records, traces)
        generated += len(todo)
        on_problem_done(len(todo))
    return generated


def finish(
    prepared: Prepared, runner_info: RunnerInfo, verifiers: dict[str, Any], folder: RunFolder
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write metrics, performance and provenance; the metrics file marks the run complete."""
    order = [arm.key for arm in prepared.arms]
    # An arm is an oracle if its strategy or its verifier reads the reference answer.
    oracles = {
        a.key for a in prepared.arms if a.strategy.oracle or (a.verifier and verifiers[a.verifier].oracle)
    }
    metric_data = metrics(folder.problems(), order, oracles)
    metric_data["run_id"] = prepared.run_id
    metric_data["budget_unit"] = prepared.spec.budget_unit
    metric_data["rewards"] = rule_rewards(folder.samples())
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
