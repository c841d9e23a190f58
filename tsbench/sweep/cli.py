"""`tsbench sweep SPEC.yaml [--plan] [--executor local|ray]`: docs/SCALE.md."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tabulate import tabulate

from tsbench.cache import ENV as CACHE_ENV
from tsbench.cache import OFF as CACHE_OFF
from tsbench.errors import UserError
from tsbench.sweep.plan import CellPrice, price_sweep

EVERY_CELL_UP_TO = 40  # larger plans print a row per runner/model x task unless --cells


def _si(value: float) -> str:
    for unit, size in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def _row(name: str, group: list[CellPrice]) -> list[Any]:
    mark = "<=" if all(p.bounded for p in group) else "~"
    walls = [p.wall_s for p in group]
    return [
        name,
        sum(p.problems for p in group),
        f"{mark}{_si(sum(p.prompt_tokens for p in group))}",
        f"{mark}{_si(sum(p.generated_tokens for p in group))}",
        f"{mark}{_si(sum(p.flops for p in group))}"
        if all(p.parameters for p in group)
        else "? (param_count)",
        _hours(sum(w for w in walls if w is not None)) if None not in walls else "?",
    ]


def _group_key(price: CellPrice) -> str:
    spec = price.cell.spec
    options = ",".join(f"{k}={v}" for k, v in sorted(spec.task_options.items()))
    return f"{spec.runner}/{spec.model or 'default'} {spec.task}" + (f" ({options})" if options else "")


def plan_text(
    prices: list[CellPrice],
    sources: dict[Any, str],
    workers: int,
    counted: bool,
    every_cell: bool = True,
    reuse: bool = True,
    cache_on: bool = True,
) -> str:
    """The plan's table (a row per cell, or per runner/model x task for a large sweep), its
    totals, and the assumptions behind them."""
    if every_cell:
        rows = [_row(f"{p.cell.index + 1}: {p.cell.label}", [p]) for p in prices]
        headers = ["cell", "problems"]
    else:
        groups: dict[str, list[CellPrice]] = {}
        for price in prices:
            groups.setdefault(_group_key(price), []).append(price)
        rows = [[name, len(group), *_row(name, group)[1:]] for name, group in groups.items()]
        headers = ["runner/model task", "cells", "problems"]
    headers += ["prompt tok", "gen tok", "FLOPs", "wall"]
    walls = [p.wall_s for p in prices]
    known = [w for w in walls if w is not None]
    total_wall: float | None = sum(known) if known else None
    lines = [
        tabulate(rows, headers=headers, disable_numparse=True),
        "",
        f"cells: {len(prices)}; prompt tokens {_si(sum(p.prompt_tokens for p in prices))}, generated tokens "
        f"{_si(sum(p.generated_tokens for p in prices))}, FLOPs {_si(sum(p.flops for p in prices))}"
        + ("" if all(p.parameters for p in prices) else " (cells without a parameter count left out)"),
        f"wall: {_hours(total_wall)} on one worker, "
        f"{_hours(total_wall / workers if total_wall is not None else None)} on {workers} "
        "(cells spread evenly; no loading or queueing counted)"
        + (
            "" if len(known) == len(walls) else f"; {len(walls) - len(known)} cells have no throughput figure"
        ),
        "<= an upper bound (samples may stop early; a search's level bounds its prompt, generated and "
        "verifier tokens, all counted as generated); ~ an estimate (a samples budget does not bound a "
        "search's verifier, nor a model-based verifier's scoring of the pool)",
        (
            "pool samples an earlier cell drew (same engine, problems, sampling settings and seeds) are "
            "priced once: the local executor runs cells in order and the generation cache serves them; "
            "the ledger still charges each cell a cached sample's tokens"
            if reuse
            else "every cell priced whole: "
            + (
                "the generation cache is off"
                if not cache_on
                else "on Ray, cells that share samples may run at once on different actors"
            )
        ),
        "prompt tokens "
        + (
            "counted by each engine"
            if counted
            else "estimated at 4 characters a token (--count-tokens counts them)"
        )
        + "; wall = generated tokens / throughput",
    ]
    for engine, source in sources.items():
        lines.append(f"throughput {engine[0]}/{engine[1] or 'default'}: {source}")
    return "\n".join(lines)


def given_rates(rates: list[str], benches: list[str]) -> dict[str, float]:
    """Throughput per model from --tokens-per-s RATE or MODEL=RATE, and from `tsbench bench`
    JSON files (their model's figure)."""
    found: dict[str, float] = {}
    for item in rates:
        model, _, figure = item.rpartition("=")
        try:
            value = float(figure)
        except ValueError:
            value = 0.0
        if value <= 0:
            raise UserError(f"--tokens-per-s {item}: give a positive rate, or MODEL=RATE, e.g. 150")
        found[model or "*"] = value
    for path in benches:
        try:
            report = json.loads(Path(path).read_text())
            found[str(report["runner"]["model_id"])] = float(report["bench"]["tokens_per_s"])
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(
                f"--bench {path}: not a `tsbench bench` JSON with runner.model_id and bench.tokens_per_s; "
                "write one with `tsbench bench -- --runner NAME --model MODEL --out FILE`"
            ) from None
    return found


def cmd_sweep(args: argparse.Namespace) -> int:
    from tsbench.sweep.cells import check_cells, run_local
    from tsbench.sweep.spec import load_sweep

    sweep = load_sweep(args.spec)
    if args.results:
        sweep = replace(sweep, results=args.results)
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: give at least 1")
        # Where a cell runs, never what it produces: threads are not in the run id.
        sweep = replace(
            sweep, cells=[replace(c, spec=replace(c.spec, threads=args.threads)) for c in sweep.cells]
        )
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: give at least 1")
    if args.plan:
        rate = given_rates(args.tokens_per_s or [], args.bench or [])
        cache_on = os.environ.get(CACHE_ENV, "on").strip().lower() not in CACHE_OFF
        # Reuse is certain only when cells run one after another (the local executor).
        reuse = cache_on and args.executor == "local"
        prices, sources = price_sweep(sweep, check_cells(sweep), rate, args.count_tokens, reuse)
        every_cell = args.cells or len(prices) <= EVERY_CELL_UP_TO
        print(plan_text(prices, sources, args.workers, args.count_tokens, every_cell, reuse, cache_on))
        return 0
    started = time.perf_counter()
    if args.executor == "ray":
        from tsbench.sweep.ray_executor import Placement, run_on_ray

        placement = Placement(args.workers, args.cpus_per_worker, args.gpus_per_worker, args.attempts)
        results = run_on_ray(sweep, placement, args.address, not args.no_progress)
    else:
        if args.workers != 1:
            raise UserError("--workers N needs --executor ray; the local executor runs one cell at a time")
        results = run_local(sweep, not args.no_progress)
    wall = time.perf_counter() - started
    resumed = sum(1 for r in results if r.done_before)
    tokens = sum(r.generated_tokens for r in results)
    for result, cell in zip(results, sweep.cells, strict=True):
        print(f"cell {cell.index + 1}: {cell.label} -> {Path(sweep.results) / result.run_id}")
    print(
        f"sweep: {len(results)} cells done ({resumed} resumed) in {wall:.1f} s, "
        f"{tokens:,} generated tokens on the cells' ledgers (samples read from the generation cache "
        f"included); tsbench report {sweep.results}/<run-id> ... for tables"
    )
    return 0


def add_sweep_parser(sub: Any) -> None:
    sweep = sub.add_parser(
        "sweep", help="a cross product of runs, priced with --plan, run locally or on Ray (docs/SCALE.md)"
    )
    sweep.add_argument(
        "spec", help="sweep YAML: run fields plus axes runners, models, tasks, strategies, ..."
    )
    sweep.add_argument(
        "--plan", action="store_true", help="print each cell's spend and wall time; run nothing"
    )
    sweep.add_argument("--executor", choices=["local", "ray"], default="local")
    sweep.add_argument("--address", help="Ray cluster address (default $RAY_ADDRESS, else a new local one)")
    sweep.add_argument(
        "--workers", type=int, default=1, help="engine replicas (Ray actors); --plan divides by it"
    )
    sweep.add_argument("--cpus-per-worker", type=float, default=1.0, help="each actor's CPU request")
    sweep.add_argument("--gpus-per-worker", type=float, default=0.0, help="each actor's GPU request")
    sweep.add_argument("--threads", type=int, help="CPU threads of each engine (CPU runners)")
    sweep.add_argument("--attempts", type=int, default=3, help="tries per cell when actors die")
    sweep.add_argument("--results", help="results folder (default: the spec's results:, else results/)")
    sweep.add_argument(
        "--tokens-per-s",
        action="append",
        metavar="[MODEL=]RATE",
        help="one worker's generated tokens/s for --plan's wall time, for every model or for MODEL",
    )
    sweep.add_argument(
        "--bench",
        action="append",
        metavar="FILE",
        help="a `tsbench bench` JSON: its model's tokens/s for --plan",
    )
    sweep.add_argument(
        "--count-tokens",
        action="store_true",
        help="--plan opens each engine once (generating nothing) to count prompt tokens and parameters",
    )
    sweep.add_argument("--cells", action="store_true", help="--plan prints every cell, however many")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.set_defaults(func=cmd_sweep)
