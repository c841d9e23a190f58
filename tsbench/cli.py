"""`tsbench` command line: run, speed, list, report, processbench, bench."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from tsbench import plugins, provenance
from tsbench.errors import UserError
from tsbench.generation import batch_sequences, generate_all
from tsbench.identity import run_id, sample_identity
from tsbench.progress import Progress
from tsbench.records import ARMS, METRICS, PERFORMANCE, PROBLEMS, PROVENANCE, SESSIONS, RunFolder
from tsbench.registry import Registry
from tsbench.report import table
from tsbench.rescoring import arms_record, rescore, scored_with_current_code
from tsbench.run import (
    Prepared,
    build_verifiers,
    check_budgets,
    open_runner,
    prepare,
)
from tsbench.spec import build_spec, read_spec_file

RESULTS_ROOT = Path("results")


def _pairs(pairs: list[str], flag: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{flag}: '{pair}' is not KEY=VALUE; write e.g. --task-arg levels=1,2")
        options[key] = value
    return options


def _scalar(value: str) -> Any:
    """'4' -> 4, '0.5' -> 0.5, 'true' -> True; anything else stays text."""
    loaded = yaml.safe_load(value)
    return loaded if isinstance(loaded, int | float | bool) else value


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
        values["task_options"] = {**values.get("task_options", {}), **_pairs(args.task_arg, "--task-arg")}
    if args.runner_arg:
        values["runner_options"] = {
            **values.get("runner_options", {}),
            **{k: _scalar(v) for k, v in _pairs(args.runner_arg, "--runner-arg").items()},
        }
    for flag, field in (("strategy_arg", "strategy_options"), ("verifier_arg", "verifier_options")):
        for key, value in _pairs(getattr(args, flag) or [], "--" + flag.replace("_", "-")).items():
            owner, dot, option = key.partition(".")
            if not dot:
                raise UserError(
                    f"--{flag.replace('_', '-')}: '{key}' must be NAME.OPTION=VALUE, e.g. beam-search.beam_width=4"
                )
            values.setdefault(field, {}).setdefault(owner, {})[option] = _scalar(value)
    return values


def cmd_run(args: argparse.Namespace) -> int:
    spec = build_spec(_spec_values(args), args.config or "command line")
    prepared = prepare(spec)
    runner = open_runner(prepared.spec)
    try:
        return _run_with(prepared, runner, args.no_progress)
    finally:
        runner.close()


def _run_with(prepared: Prepared, runner: Any, no_progress: bool) -> int:
    # Recorded before the run's identity is taken: batches decide an engine's last bits.
    prepared.spec = replace(prepared.spec, batch_sequences=batch_sequences(prepared.spec, runner))
    info = runner.info()
    verifiers = build_verifiers(prepared, runner)
    check_budgets(prepared, runner, info.parameters, verifiers)
    generating = [a.strategy for a in prepared.arms if a.strategy.pool == "search"] + list(verifiers.values())
    identity = sample_identity(
        prepared.spec.identity(), prepared.task, prepared.problems, info, runner, generating
    )
    path = Path(prepared.spec.output) if prepared.spec.output else RESULTS_ROOT / run_id(identity)
    folder = RunFolder.open(path, prepared.spec.to_yaml(), identity)
    if not (path / PROVENANCE).exists():
        origin = getattr(prepared.task, "data_sha256", None)
        data_origin = f"task file sha256: {origin}" if origin else "procedural"
        folder.write_json(PROVENANCE, provenance.collect(info, identity["data_sha256"], data_origin))
        folder.write_json(ARMS, arms_record(prepared.arms, verifiers))
    done = len(folder.done_ids())
    total = len(prepared.problems)
    if done < total:
        folder.append(SESSIONS, [provenance.session(info, prepared.spec, done)])
        arms = len(prepared.arms)
        progress = Progress(total * arms, done * arms, f"run {path.name}", enabled=not no_progress)
        try:
            generate_all(prepared, runner, info.parameters, verifiers, folder, progress)
        except BaseException:
            folder.remove_if_empty()
            raise
        finally:
            progress.close()
    if done == total and scored_with_current_code(folder, prepared.task):
        metric_data, perf = folder.read_json(METRICS), folder.read_json(PERFORMANCE)
    else:
        if done == total and folder.complete:
            print("re-scored: the scoring code changed since this run was scored; no sample was generated")
        metric_data, perf = rescore(folder, prepared.task)
    print(table(metric_data, perf))
    if done:
        print(f"resumed: {done} of {total} problems were already done")
    print(f"results: {path}")
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
    """Re-score a finished run with the installed code and print its table."""
    folder = RunFolder(Path(args.run))
    if not (folder.path / ARMS).exists():
        raise UserError(f"{args.run} is not a tsbench run folder; give a folder like results/<run-id>")
    ids = folder.done_ids()
    total = len(folder.read_jsonl(PROBLEMS))
    if not folder.complete and not ids:
        raise UserError(
            f"{args.run} has no finished problem yet; run `tsbench run` with its spec to generate them"
        )
    metric_data, perf = rescore(folder)
    print(table(metric_data, perf))
    if not folder.complete or total != len(ids):
        print(f"note: {len(ids)} problems are done in this folder")
    return 0


def cmd_processbench(args: argparse.Namespace) -> int:
    import json

    from tsbench.data import resolve_data_dir
    from tsbench.processbench import FIXTURE_DIR, SUBSETS, evaluate_process_verifier, load_processbench

    subsets = [s.strip() for s in args.subsets.split(",")] if args.subsets else list(SUBSETS)
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown:
        raise UserError(f"--subsets: unknown subset {unknown[0]}; choose from {', '.join(SUBSETS)}")
    if args.data_dir:
        folder = Path(args.data_dir)
    else:
        root = resolve_data_dir(None)
        shared = Path(root) / "processbench" if root else None
        folder = shared if shared and shared.is_dir() else FIXTURE_DIR
        if folder == FIXTURE_DIR:
            subsets = [s for s in subsets if (FIXTURE_DIR / f"{s}.json").is_file()]
    limit = _positive_int(args.limit, "--limit") if args.limit else None
    items = load_processbench(folder, subsets, limit)
    runner = plugins.runners.get(args.runner)(
        model=args.model,
        threads=args.threads,
        **{k: _scalar(v) for k, v in _pairs(args.runner_arg or [], "--runner-arg").items()},
    )
    options = {k: _scalar(v) for k, v in _pairs(args.verifier_arg or [], "--verifier-arg").items()}
    verifier = plugins.verifiers.get(args.verifier)(runner, **options)
    if not hasattr(verifier, "score_steps"):
        raise UserError(
            f"--verifier {args.verifier} scores whole solutions only; ProcessBench needs a process verifier such as llm-judge"
        )
    try:
        result = evaluate_process_verifier(verifier, None, items, args.threshold)
    finally:
        runner.close()
    rows = [
        [
            name,
            m["erroneous"],
            m["correct"],
            _pct(m["error_accuracy"]),
            _pct(m["correct_accuracy"]),
            _pct(m["f1"]),
        ]
        for name, m in result["subsets"].items()
    ]
    from tabulate import tabulate

    print(
        f"ProcessBench from {folder}: verifier {args.verifier} on {args.runner}, threshold {args.threshold}"
    )
    print(tabulate(rows, headers=["subset", "erroneous", "correct", "error acc", "correct acc", "F1"]))
    print(f"average F1: {_pct(result['average_f1'])}; verifier tokens {result['verifier_tokens']}")
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
        print(f"predictions: {args.output}")
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _positive_int(value: str, flag: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise UserError(f"{flag}: '{value}' is not a positive whole number; write e.g. {flag} 20")
    return number


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
    rep = sub.add_parser("report", help="re-score a run folder with the installed code and print its table")
    rep.add_argument("run", help="run folder, e.g. results/<run-id>")
    rep.set_defaults(func=cmd_report)
    pb = sub.add_parser("processbench", help="score a process verifier on ProcessBench (first wrong step)")
    pb.add_argument("--verifier", default="llm-judge", help="a process verifier (default llm-judge)")
    pb.add_argument("--verifier-arg", action="append", metavar="KEY=VALUE", help="verifier option")
    pb.add_argument("--runner", default="llamacpp", help="runner that hosts the verifier's model")
    pb.add_argument("--runner-arg", action="append", metavar="KEY=VALUE", help="runner option")
    pb.add_argument("--model", help="model path or id (default: the runner's embedded default)")
    pb.add_argument("--threads", type=int, help="CPU threads for CPU runners")
    pb.add_argument(
        "--data-dir",
        dest="data_dir",
        help="folder with ProcessBench's <subset>.json (default $TSBENCH_DATA_DIR/processbench, else the shipped 6-item fixture)",
    )
    pb.add_argument("--subsets", help="comma-separated subsets (default all four)")
    pb.add_argument("--limit", help="first N items per subset")
    pb.add_argument("--threshold", type=float, default=0.5, help="a step scored below it is predicted wrong")
    pb.add_argument("--output", help="write metrics and per-item predictions as JSON here")
    pb.set_defaults(func=cmd_processbench)
    bench = sub.add_parser(
        "bench",
        help="throughput and latency of a runner under a sampling workload (see `tsbench bench -- --help`)",
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="flags of python -m tsbench.bench")
    bench.set_defaults(func=cmd_bench)
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
