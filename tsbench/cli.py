"""`tsbench` command line: run, list, report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tsbench import plugins
from tsbench.errors import UserError
from tsbench.records import METRICS, PERFORMANCE, RunFolder
from tsbench.registry import Registry
from tsbench.report import table
from tsbench.run import finish, generate_all, output_path, prepare
from tsbench.spec import build_spec, read_spec_file

RESULTS_ROOT = Path("results")


def _task_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--task-arg: '{pair}' is not KEY=VALUE; write e.g. --task-arg levels=1,2")
        options[key] = value
    return options


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
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.task_arg:
        values["task_options"] = {**values.get("task_options", {}), **_task_options(args.task_arg)}
    return values


def cmd_run(args: argparse.Namespace) -> int:
    spec = build_spec(_spec_values(args), args.config or "command line")
    prepared = prepare(spec)
    runner = plugins.runners.get(prepared.spec.runner)(
        model=prepared.spec.model, threads=prepared.spec.threads
    )
    info = runner.info()
    path = output_path(prepared.spec, RESULTS_ROOT)
    folder = RunFolder.open(path, prepared.spec.to_yaml())
    done = len(folder.done_ids())
    total = len(prepared.problems)
    progress: Any = None
    if not args.no_progress:
        from tqdm import tqdm

        progress = tqdm(
            total=total, initial=done, unit="problem", desc=f"run {prepared.run_id}", file=sys.stderr
        )
    try:
        generate_all(prepared, runner, folder, progress.update if progress else (lambda _: None))
    except BaseException:
        folder.remove_if_empty()
        raise
    finally:
        if progress:
            progress.close()
        runner.close()
    metric_data, perf = finish(prepared, info, folder)
    print(table(metric_data, perf))
    if done:
        print(f"resumed: {done} of {total} problems were already done")
    print(f"results: {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    registries: dict[str, Registry[Any]] = {
        "tasks": plugins.tasks,
        "runners": plugins.runners,
        "strategies": plugins.strategies,
    }
    registry = registries[args.what]
    width = max(len(e.name) for e in registry.entries())
    for entry in registry.entries():
        print(f"{entry.name:<{width}}  {entry.summary}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    folder = RunFolder(Path(args.run))
    if not folder.complete:
        raise UserError(
            f"{args.run} is not a finished run (no {METRICS}); run `tsbench run` with its spec to finish it"
        )
    perf = folder.read_json(PERFORMANCE) if (folder.path / PERFORMANCE).exists() else None
    print(table(folder.read_json(METRICS), perf))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="tsbench", description="Benchmark LLM test-time scaling at matched compute."
    )
    sub = top.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run a spec (defaults: embedded SmolLM2-135M on arith)")
    run.add_argument("-c", "--config", help="YAML spec file; flags override its fields")
    run.add_argument("--task", help="task name or path to a task YAML (default arith)")
    run.add_argument("--task-arg", action="append", metavar="KEY=VALUE", help="task option, e.g. levels=1,2")
    run.add_argument("--strategy", help="comma-separated strategies (default greedy,majority,pass@k)")
    run.add_argument("--budget", help="comma-separated sample budgets (default 1,2,4,8,16)")
    run.add_argument("--limit", help="number of problems")
    run.add_argument("--seed", help="seed for problems and samples")
    run.add_argument("--runner", help="runner name (default llamacpp)")
    run.add_argument("--model", help="model path or id (default: the runner's embedded default)")
    run.add_argument("--temperature", help="sampling temperature of the sampled pool")
    run.add_argument("--top-p", dest="top_p", help="nucleus mass of the sampled pool")
    run.add_argument("--max-tokens", dest="max_tokens", help="generation cap per sample")
    run.add_argument(
        "--data-dir", dest="data_dir", help="local data folder (else $TSBENCH_DATA_DIR, else the hub)"
    )
    run.add_argument("--output", help="results folder (default results/<run-id>)")
    run.add_argument("--threads", help="CPU threads for CPU runners")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)
    lst = sub.add_parser("list", help="list tasks, runners or strategies")
    lst.add_argument("what", choices=["tasks", "runners", "strategies"])
    lst.set_defaults(func=cmd_list)
    rep = sub.add_parser("report", help="print the table of a finished run folder")
    rep.add_argument("run", help="run folder, e.g. results/<run-id>")
    rep.set_defaults(func=cmd_report)
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
