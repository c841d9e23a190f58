"""`tsbench sweep --plan`: what each cell will spend, and for how long, before anything runs.

Spend per problem, by arm:
- the greedy pool: one sample; the sampled pool: pool_size samples; each at most
  prompt + max_tokens tokens (an upper bound: samples that stop early spend less);
- a search at a level in tokens or FLOPs: at most the level (the ledger's promise: every row's
  policy + verifier spend is within it); at a level in samples: about level x (prompt + max_tokens)
  policy tokens, an estimate (a samples budget bounds neither a verifier's spend nor a revision's
  growing prompt);
- outcome verifiers that score the pool with a model (llm-judge) add their own generation on top;
  the oracle and self-certainty add none.
Prompt tokens are estimated at 4 characters a token, loading no engine, or with --count-tokens
counted by each engine (opened once, nothing generated). FLOPs are 2 x
parameters x tokens (tsbench.ledger), with the parameter count from the spec (param_count) or
from a run folder of the same runner and model under the results root. Wall time divides the
generated tokens by a throughput: the figure given (--tokens-per-s, or a `tsbench bench` JSON),
else the median generated tokens/s of this runner and model's run folders under the results root
that ran on this machine (same CPU model, core count and GPUs in their provenance).
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tsbench.contracts import GenerationRequest
from tsbench.ledger import forward_flops
from tsbench.provenance import cpu_model, gpus
from tsbench.run import Prepared, pool_size
from tsbench.sweep.spec import Cell, Sweep

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class CellPrice:
    """Args:
    cell: the cell.
    problems: its problems.
    prompt_tokens, generated_tokens: tokens it will read and write, over all its problems.
    bounded: whether both are upper bounds (False: a samples-budget search or a model-based
        pool verifier makes them an estimate).
    parameters: the model's parameter count, 0 where unknown.
    tokens_per_s: the throughput its wall time assumes, 0 where none is known.
    """

    cell: Cell
    problems: int
    prompt_tokens: float
    generated_tokens: float
    bounded: bool
    parameters: int
    tokens_per_s: float

    @property
    def flops(self) -> float:
        return forward_flops(self.parameters, self.prompt_tokens + self.generated_tokens)

    @property
    def wall_s(self) -> float | None:
        return self.generated_tokens / self.tokens_per_s if self.tokens_per_s else None


def prompt_estimate(prepared: Prepared, runner: Any = None) -> float:
    """Mean prompt tokens of the cell's problems: counted by the runner (its chat template and
    tokenizer) where one is given, else at CHARS_PER_TOKEN characters a token."""
    lengths = []
    for problem in prepared.problems:
        messages = prepared.task.messages(problem.public())
        if runner is None:
            lengths.append(sum(len(m["content"]) for m in messages) / CHARS_PER_TOKEN)
        else:
            request = GenerationRequest(tuple((m["role"], m["content"]) for m in messages))
            lengths.append(runner.count_prompt_tokens(request))
    return statistics.fmean(lengths) if lengths else 0.0


MODEL_FREE_VERIFIERS = ("oracle", "self-certainty")


def price_cell(
    cell: Cell, prepared: Prepared, parameters: int, tokens_per_s: float, prompt: float, drawn: dict[str, int]
) -> CellPrice:
    """The cell's spend over its problems (see the module's docstring for the rules).

    Args:
        prompt: mean prompt tokens of its problems.
        drawn: pool -> samples per problem that earlier cells drew with the same requests and
            seeds, which the generation cache serves; updated here. Empty and never filled for no reuse.
    """
    spec = prepared.spec
    pools = {a.strategy.pool for a in prepared.arms}
    bounded = True
    per_problem_prompt = per_problem_generated = 0.0
    for pool, samples in (("greedy", 1), ("sampled", pool_size(spec))):
        if pool in pools:
            temperature = (0.0, 1.0) if pool == "greedy" else (spec.temperature, spec.top_p)
            key = repr((cell.engine, id(prepared.problems), pool, temperature, spec.max_tokens))
            new = max(0, samples - drawn.get(key, 0))
            if drawn is not NO_REUSE:
                drawn[key] = max(samples, drawn.get(key, 0))
            per_problem_prompt += new * prompt
            per_problem_generated += new * (spec.max_tokens or 0)
    if any(
        a.verifier not in (None, *MODEL_FREE_VERIFIERS) for a in prepared.arms if a.strategy.pool != "search"
    ):
        bounded = False
    for _ in (a for a in prepared.arms if a.strategy.pool == "search"):
        for level in spec.budgets:
            if spec.budget_unit == "tokens":
                per_problem_generated += level
            elif spec.budget_unit == "flops":
                per_problem_generated += level / forward_flops(max(parameters, 1), 1)
            else:
                # A samples budget caps how many chains, not what a verifier or a revision's
                # growing prompt reads: an estimate, not a bound.
                per_problem_prompt += level * prompt
                per_problem_generated += level * (spec.max_tokens or 0)
                bounded = False
    count = len(prepared.problems)
    return CellPrice(
        cell,
        count,
        per_problem_prompt * count,
        per_problem_generated * count,
        bounded,
        parameters,
        tokens_per_s,
    )


NO_REUSE: dict[str, int] = {}


def _engine_of(spec_yaml: dict[str, Any]) -> tuple[Any, ...]:
    return (
        spec_yaml.get("runner"),
        spec_yaml.get("model"),
        repr(sorted((spec_yaml.get("runner_options") or {}).items())),
    )


def measured_here(results_root: Path) -> dict[tuple[Any, ...], tuple[list[float], list[int]]]:
    """(runner, model, runner options) -> generated tokens/s of the run folders under results_root
    that ran on this machine (the same CPU model, core count and GPUs), and the parameter counts of
    all of them."""
    found: dict[tuple[Any, ...], tuple[list[float], list[int]]] = {}
    if not results_root.is_dir():
        return found
    here = (cpu_model(), os.cpu_count(), gpus())
    for folder in sorted(results_root.iterdir()):
        try:
            spec = yaml.safe_load((folder / "spec.yaml").read_text())
            speed = json.loads((folder / "performance.json").read_text()).get("generated_tokens_per_s")
            origin = json.loads((folder / "provenance.json").read_text())
        except (OSError, ValueError, yaml.YAMLError, AttributeError):
            continue
        parameters = origin.get("model_parameters")
        if (origin.get("cpu"), origin.get("cpu_count"), origin.get("gpus")) != here:
            speed = None  # another machine's speed says nothing of this one's; its model size does
        rates, counts = found.setdefault(_engine_of(spec), ([], []))
        if speed:
            rates.append(float(speed))
        if parameters:
            counts.append(int(parameters))
    return found


def price_sweep(
    sweep: Sweep,
    prepared: list[Prepared],
    given: dict[str, float] | None = None,
    count_tokens: bool = False,
    reuse: bool = True,
) -> tuple[list[CellPrice], dict[tuple[Any, ...], str]]:
    """Every cell's price, and where each engine's throughput figure came from.

    Args:
        given: model (or "default" for the runner's own, "*" for every model) -> generated tokens
            per second of one worker, from the user or a `tsbench bench` figure.
        count_tokens: open each engine once (no generation) to count prompt tokens with its
            tokenizer and template and read its parameter count; else estimate, loading nothing.
        reuse: price a pool sample that an earlier cell drew (same engine, problems, sampling
            settings, seed and index) as read from the generation cache, costing nothing.
    """
    from tsbench.sweep.cells import Engines

    drawn: dict[str, int] = {} if reuse else NO_REUSE
    prompts: dict[str, float] = {}
    here = measured_here(Path(sweep.results))
    engines = Engines()
    prices: list[CellPrice] = []
    sources: dict[tuple[Any, ...], str] = {}
    for cell, ready in zip(sweep.cells, prepared, strict=True):
        spec = cell.spec
        key = _engine_of({"runner": spec.runner, "model": spec.model, "runner_options": spec.runner_options})
        rates, counts = here.get(key, ([], []))
        runner = engines.get(cell) if count_tokens else None
        loaded = runner.info().parameters if runner is not None else 0
        parameters = spec.param_count or loaded or (counts[-1] if counts else 0)
        figure = (given or {}).get(spec.model or "default", (given or {}).get("*"))
        if figure:
            rate, sources[key] = figure, f"{figure:g} tok/s given"
        elif rates:
            rate = statistics.median(rates)
            sources[key] = (
                f"{rate:.1f} tok/s, median of {len(rates)} run folders of this machine under {sweep.results}/"
            )
        else:
            rate, sources[key] = 0.0, "no figure: pass --tokens-per-s or --bench FILE"
        try:
            counted = repr((cell.engine if runner is not None else None, id(ready.problems)))
            if counted not in prompts:
                prompts[counted] = prompt_estimate(ready, runner)
            prices.append(price_cell(cell, ready, parameters, rate, prompts[counted], drawn))
        except BaseException:
            engines.close()
            raise
    engines.close()
    return prices, sources
