"""`tsbench` command line: run, speed, list, report, compare, leaderboard, gate, exec, processbench,
bench, star, sweep, merge."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tsbench import plugins
from tsbench.cli_args import pairs, scalar
from tsbench.errors import UserError
from tsbench.processbench_cli import add_processbench_parser
from tsbench.records import PROBLEMS
from tsbench.registry import Registry
from tsbench.report import table
from tsbench.rescoring import rescore
from tsbench.run import Prepared, open_runner, prepare
from tsbench.running import RESULTS_ROOT, run_into
from tsbench.spec import build_spec, read_spec_file


def _spec_values(args: argparse.Namespace) -> dict[str, Any]:
    values = read_spec_file(args.config) if args.config else {}
    flags = {
        "task": args.task,
        "limit": args.limit,
        "seed": args.seed,
        "runner": args.runner,
        "model": args.model,
        "strategies": args.strategy,
        "budgets": args.budget,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_tokens": args.max_tokens,
        "data_dir": args.data_dir,
        "output": args.output,
        "threads": args.threads,
        "verifiers": args.verifier,
        "budget_unit": args.budget_unit,
        "pool_size": args.pool_size,
        "param_count": args.param_count,
        "batch_sequences": args.batch_sequences,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.task_arg:
        values["task_options"] = {**values.get("task_options", {}), **pairs(args.task_arg, "--task-arg")}
    if args.runner_arg:
        values["runner_options"] = {
            **values.get("runner_options", {}),
            **{k: scalar(v) for k, v in pairs(args.runner_arg, "--runner-arg").items()},
        }
    for flag, field in (("strategy_arg", "strategy_options"), ("verifier_arg", "verifier_options")):
        for key, value in pairs(getattr(args, flag) or [], "--" + flag.replace("_", "-")).items():
            owner, dot, option = key.partition(".")
            if not dot:
                raise UserError(
                    f"--{flag.replace('_', '-')}: '{key}' must be NAME.OPTION=VALUE, e.g. beam-search.beam_width=4"
                )
            values.setdefault(field, {}).setdefault(owner, {})[option] = scalar(value)
    return values


def cmd_run(args: argparse.Namespace) -> int:
    spec = build_spec(_spec_values(args), args.config or "command line")
    prepared = prepare(spec)
    runner = open_runner(prepared.spec)
    try:
        return run_prepared(prepared, runner, args.no_progress)
    finally:
        runner.close()


def run_prepared(prepared: Prepared, runner: Any, no_progress: bool) -> int:
    """Generate, score and print a prepared run on an open runner, as `tsbench run` does (STaR's
    evaluations use it too); returns the exit code."""
    outcome = run_into(prepared, runner, RESULTS_ROOT, show_progress=not no_progress)
    if outcome.rescored:
        print("re-scored: the scoring code changed since this run was scored; no sample was generated")
    print(table(outcome.metrics, outcome.performance))
    if outcome.done_before:
        print(f"resumed: {outcome.done_before} of {outcome.total} problems were already done")
    print(f"results: {outcome.path}")
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    """Each arm alone over the spec's problems, in one process: tokens/s side by side."""
    from tsbench.speed import speed_command

    spec = build_spec(_spec_values(args), args.config or "command line")
    return speed_command(spec, max(1, args.repeats), args.json)


def cmd_list(args: argparse.Namespace) -> int:
    registries: dict[str, Registry[Any]] = {
        "tasks": plugins.tasks,
        "runners": plugins.runners,
        "strategies": plugins.strategies,
        "verifiers": plugins.verifiers,
    }
    registry = registries[args.what]
    width = max(len(e.name) for e in registry.entries())
    for entry in registry.entries():
        print(f"{entry.name:<{width}}  {entry.summary}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Re-score finished runs with the installed code; print their table, write plots if asked."""
    from tsbench.report import render
    from tsbench.tables import check_run_folder, report_table

    if args.format is None and len(args.run) == 1:
        folder = check_run_folder(Path(args.run[0]))
        ids = folder.done_ids()
        total = len(folder.read_jsonl(PROBLEMS))
        metric_data, perf = rescore(folder)
        print(table(metric_data, perf))
        if not folder.complete or total != len(ids):
            print(f"note: {len(ids)} problems are done in this folder")
        frame = report_table(args.run, rescore=False) if args.plots else None
    else:
        frame = report_table(args.run)
        print(render(frame, args.format or "md"), end="")
    if args.compute_optimal:
        from tsbench.report import compute_optimal_text

        for run in dict.fromkeys(args.run):
            print("\n" + compute_optimal_text(Path(run)))
    if args.plots and frame is not None:
        from tsbench.plots import write_plots

        written = write_plots(frame, Path(args.plots))
        print(f"plots: {len(written)} files in {args.plots}", file=sys.stderr if args.format else sys.stdout)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tsbench.compare import compare_command

    return compare_command(args.run, args.a, args.b, args.json, args.resamples, args.seed)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Build the static leaderboard site from a folder of run folders."""
    from tsbench.leaderboard import build_site

    summary = build_site(Path(args.results), Path(args.output), rescore=args.rescore)
    skipped = f", {summary['skipped']} unfinished skipped" if summary["skipped"] else ""
    print(
        f"leaderboard: {summary['runs']} runs{skipped}, {summary['tasks']} tasks, {summary['pages']} pages "
        f"in {summary['seconds']} s; open {Path(args.output) / 'index.html'}"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from tsbench.bench import main as bench_main

    return bench_main(args.bench_args)


def _spec_arguments(command: argparse.ArgumentParser) -> None:
    """The flags that make a spec (run and speed take the same)."""
    command.add_argument("-c", "--config", help="YAML spec file; flags override its fields")
    command.add_argument("--task", help="task name or path to a task YAML (default arith)")
    command.add_argument(
        "--task-arg", action="append", metavar="KEY=VALUE", help="task option, e.g. levels=1,2"
    )
    command.add_argument("--strategy", help="comma-separated strategies (default greedy,majority,pass@k)")
    command.add_argument("--budget", help="comma-separated sample budgets (default 1,2,4,8,16)")
    command.add_argument(
        "--budget-unit",
        dest="budget_unit",
        choices=["samples", "tokens", "flops"],
        help="what --budget counts: samples k (default), or total tokens or FLOPs per problem (prompt + generated + verifier)",
    )
    command.add_argument("--pool-size", dest="pool_size", help="samples per problem in the sampled pool")
    command.add_argument("--verifier", help="comma-separated verifiers for strategies that need one")
    command.add_argument(
        "--strategy-arg", action="append", metavar="S.KEY=VALUE", help="e.g. beam-search.beam_width=2"
    )
    command.add_argument(
        "--verifier-arg", action="append", metavar="V.KEY=VALUE", help="e.g. rollout-value.rollouts=4"
    )
    command.add_argument(
        "--runner-arg", action="append", metavar="KEY=VALUE", help="e.g. base_url=http://127.0.0.1:8000/v1"
    )
    command.add_argument("--limit", help="number of problems")
    command.add_argument("--seed", help="seed for problems and samples")
    command.add_argument("--runner", help="runner name (default llamacpp)")
    command.add_argument("--model", help="model path or id (default: the runner's embedded default)")
    command.add_argument("--temperature", help="sampling temperature of the sampled pool")
    command.add_argument("--top-p", dest="top_p", help="nucleus mass of the sampled pool")
    command.add_argument("--max-tokens", dest="max_tokens", help="generation cap per sample")
    command.add_argument(
        "--data-dir", dest="data_dir", help="local data folder (else $TSBENCH_DATA_DIR, else the hub)"
    )
    command.add_argument("--output", help="results folder (default results/<run-id>)")
    command.add_argument("--threads", help="CPU threads for CPU runners")
    command.add_argument(
        "--param-count",
        dest="param_count",
        help="the model's parameter count, for FLOPs, where the runner cannot know it (e.g. 1.5e9)",
    )
    command.add_argument(
        "--batch-sequences",
        dest="batch_sequences",
        help="most sequences per generate call (default: the runner's preference, recorded in the spec)",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="tsbench", description="Benchmark LLM test-time scaling at matched compute."
    )
    sub = top.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run a spec (defaults: embedded SmolLM2-135M on arith)")
    _spec_arguments(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)
    speed = sub.add_parser(
        "speed", help="generated tokens/s of each arm of a spec, each alone, side by side (the run's flags)"
    )
    _spec_arguments(speed)
    speed.add_argument(
        "--repeats", type=int, default=1, help="passes over the arms, every other one reversed"
    )
    speed.add_argument("--json", help="also write every run's figures here as JSON")
    speed.set_defaults(func=cmd_speed, no_progress=True)
    lst = sub.add_parser("list", help="list tasks, runners or strategies")
    lst.add_argument("what", choices=["tasks", "runners", "strategies", "verifiers"])
    lst.set_defaults(func=cmd_list)
    rep = sub.add_parser("report", help="re-score run folders with the installed code and print their table")
    rep.add_argument(
        "run", nargs="+", help="run folders, e.g. results/<run-id>; several combine into one table"
    )
    rep.add_argument(
        "--format", choices=["md", "csv", "latex", "html", "json"],
        help="one table of every run in this format (default: the terminal table of one run, md for several)",
    )  # fmt: skip
    rep.add_argument("--plots", metavar="DIR", help="also write PNG and SVG plots into DIR")
    rep.add_argument(
        "--compute-optimal",
        dest="compute_optimal",
        action="store_true",
        help="also print each run's compute-optimal policy (Snell et al. 2024) against the best single arm",
    )
    rep.set_defaults(func=cmd_report)
    board = sub.add_parser("leaderboard", help="the static leaderboard site (see docs/LEADERBOARD.md)")
    board_sub = board.add_subparsers(dest="leaderboard_command", required=True)
    build = board_sub.add_parser("build", help="build the static site from finished run folders")
    build.add_argument(
        "results", nargs="?", default="results", help="folder of run folders (default results/)"
    )
    build.add_argument("-o", "--output", default="site", help="the site's folder (default site/)")
    build.add_argument(
        "--rescore",
        action="store_true",
        help="re-score every run with the installed code first (needs task data)",
    )
    build.set_defaults(func=cmd_leaderboard)
    cmp = sub.add_parser(
        "compare", help="paired test of two rows on the same problems (McNemar / permutation)"
    )
    cmp.add_argument("run", nargs="+", help="run folder; a second one holds row B")
    cmp.add_argument("--a", required=True, metavar="ROW", help="row A as ARM@LEVEL, e.g. majority@16")
    cmp.add_argument("--b", required=True, metavar="ROW", help="row B, e.g. beam-search/llm-judge@16")
    cmp.add_argument("--json", action="store_true", help="print the result as JSON")
    cmp.add_argument("--resamples", type=int, default=2000, help="bootstrap / permutation resamples")
    cmp.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    cmp.set_defaults(func=cmd_compare)
    add_processbench_parser(sub)
    bench = sub.add_parser(
        "bench",
        help="throughput and latency of a runner under a sampling workload (see `tsbench bench -- --help`)",
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="flags of python -m tsbench.bench")
    bench.set_defaults(func=cmd_bench)
    from tsbench.gate_cli import add_gate_parser  # the regression gate: tsbench/gate.py

    add_gate_parser(sub)
    from tsbench.exec_command import add_exec_parser  # code tasks' sandbox: docs/CODE_TASKS.md

    add_exec_parser(sub)
    from tsbench.star.cli import add_star_parser  # STaR, compute spent training: docs/STAR.md

    add_star_parser(sub)
    from tsbench.sweep.cli import add_sweep_parser  # sweeps, priced and scaled out: docs/SCALE.md

    add_sweep_parser(sub)
    from tsbench.merging import add_merge_parser  # results from several machines, joined

    add_merge_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return 0
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"tsbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tsbench: interrupted; run the same command again to resume where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
