"""`tsbench star`: STaR rounds on a task's train split, each round's model evaluated on its test split."""

from __future__ import annotations

import argparse
from typing import Any

from tabulate import tabulate

from tsbench.cli_args import pairs, pct, positive_int
from tsbench.errors import UserError
from tsbench.star.loop import StarConfig
from tsbench.star.lora import LoraSettings


def add_star_parser(sub: argparse._SubParsersAction) -> None:
    star = sub.add_parser(
        "star",
        help="STaR: fine-tune the model on its own correct rationales, round by round; each round's "
        "model evaluated beside its train compute (docs/STAR.md)",
    )
    defaults = StarConfig()
    lora = LoraSettings()
    star.add_argument("--task", default=defaults.task, help="task with a train split (default arith)")
    star.add_argument("--task-arg", action="append", metavar="KEY=VALUE", help="task option, e.g. levels=1")
    star.add_argument("--rounds", default=str(defaults.rounds), help="STaR rounds (default 2)")
    star.add_argument(
        "--train-problems",
        dest="train_problems",
        default=str(defaults.train_problems),
        help=f"train problems drawn (default {defaults.train_problems}; test questions among them are dropped)",
    )
    star.add_argument(
        "--samples",
        default=str(defaults.samples),
        help=f"rationales sampled per train problem, at T=0.7 (default {defaults.samples})",
    )
    star.add_argument(
        "--train-max-tokens",
        dest="train_max_tokens",
        default=str(defaults.train_max_tokens),
        help=f"token cap of a sampled rationale (default {defaults.train_max_tokens})",
    )
    star.add_argument("--limit", default=str(defaults.limit), help="test problems (default 20)")
    star.add_argument("--seed", default=str(defaults.seed), help="seed of problems, samples and training")
    star.add_argument(
        "--strategy", default="greedy,majority", help="test strategies (default greedy,majority)"
    )
    star.add_argument("--budget", default="1,4", help="test sample budgets (default 1,4)")
    star.add_argument("--max-tokens", dest="max_tokens", help="test generation cap (default: the task's)")
    star.add_argument("--temperature", help="sampling temperature of the test runs' sampled pool")
    star.add_argument(
        "--data-dir", dest="data_dir", help="local data folder (else $TSBENCH_DATA_DIR, else the hub)"
    )
    star.add_argument(
        "--model", help="base model: a .gguf or model folder (default: the hf runner's embedded GGUF)"
    )
    star.add_argument("-o", "--output", help="STaR folder (default results/star-<config hash>)")
    star.add_argument("--threads", help="CPU threads (default: the cores other processes leave idle)")
    star.add_argument(
        "--lora-rank", dest="lora_rank", default=str(lora.rank), help=f"LoRA rank (default {lora.rank})"
    )
    star.add_argument(
        "--lora-alpha", dest="lora_alpha", default=str(lora.alpha), help=f"LoRA alpha (default {lora.alpha})"
    )
    star.add_argument(
        "--lr", default=str(lora.learning_rate), help=f"AdamW learning rate (default {lora.learning_rate})"
    )
    star.add_argument("--epochs", default=str(lora.epochs), help=f"epochs per round (default {lora.epochs})")
    star.add_argument(
        "--batch-size", dest="batch_size", default=str(lora.batch_size),
        help=f"sequences per training step (default {lora.batch_size})",
    )  # fmt: skip
    star.add_argument("--no-progress", action="store_true", help="no progress bars")
    star.set_defaults(func=cmd_star)


def config_of(args: argparse.Namespace) -> StarConfig:
    """Validate the flags into a StarConfig; the test runs' fields are checked again by build_spec."""
    budgets = tuple(positive_int(b.strip(), "--budget") for b in str(args.budget).split(",") if b.strip())
    strategies = tuple(s.strip() for s in str(args.strategy).split(",") if s.strip())
    if not strategies or not budgets:
        raise UserError(
            "--strategy and --budget need at least one value each, e.g. --strategy greedy --budget 1"
        )
    return StarConfig(
        task=args.task,
        task_options=pairs(args.task_arg or [], "--task-arg"),
        rounds=positive_int(args.rounds, "--rounds"),
        train_problems=positive_int(args.train_problems, "--train-problems"),
        samples=positive_int(args.samples, "--samples"),
        train_max_tokens=positive_int(args.train_max_tokens, "--train-max-tokens"),
        limit=positive_int(args.limit, "--limit"),
        seed=_integer(args.seed, "--seed"),
        strategies=strategies,
        budgets=tuple(sorted(set(budgets))),
        max_tokens=positive_int(args.max_tokens, "--max-tokens") if args.max_tokens else None,
        temperature=_number(args.temperature, "--temperature", 0.0, 5.0) if args.temperature else None,
        data_dir=args.data_dir,
        model=args.model,
        lora=LoraSettings(
            rank=positive_int(args.lora_rank, "--lora-rank"),
            alpha=positive_int(args.lora_alpha, "--lora-alpha"),
            learning_rate=_number(args.lr, "--lr", 1e-7, 1.0),
            epochs=positive_int(args.epochs, "--epochs"),
            batch_size=positive_int(args.batch_size, "--batch-size"),
        ),
        output=args.output,
        threads=positive_int(args.threads, "--threads") if args.threads else None,
        show_progress=not args.no_progress,
    )


def _integer(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{flag}: '{value}' is not a whole number; write e.g. {flag} 0") from None


def _number(value: str, flag: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not low <= number <= high:
        raise UserError(
            f"{flag}: '{value}' is not a number from {low:g} to {high:g}; write e.g. {flag} {high / 2:g}"
        )
    return number


def cmd_star(args: argparse.Namespace) -> int:
    from tsbench.star.loop import run_star

    summary = run_star(config_of(args))
    print(summary_table(summary))
    folders = " ".join(r["eval_folder"] for r in summary["rounds"])
    print(f"star: {summary['output']}/star.json; one table of every round: tsbench report {folders}")
    return 0


def _flops(value: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def summary_table(summary: dict[str, Any]) -> str:
    """Round, model, train FLOPs (cumulative), kept rationales, test accuracy per arm and budget
    (% with 95% CI), wall time of the round (sampling + training + merging + evaluation)."""
    arms = [
        (a["strategy"], a["k"], a["oracle"])
        for a in (summary["rounds"][0]["accuracy"] if summary["rounds"] else [])
    ]
    headers = ["round", "model", "train FLOPs", "kept (rationalised)"]
    headers += [f"{s}@{k}{' (oracle)' if o else ''} %" for s, k, o in arms]
    headers.append("wall s")
    rows = []
    for entry in summary["rounds"]:
        record = entry["record"]
        kept = f"{record['examples_kept']} ({record['examples_rationalised']})" if record else "-"
        found = {(a["strategy"], a["k"]): a for a in entry["accuracy"]}
        cells = []
        for strategy, k, _ in arms:
            a = found.get((strategy, k))
            cells.append(f"{pct(a['accuracy'])} [{pct(a['ci95'][0])}, {pct(a['ci95'][1])}]" if a else "-")
        rows.append(
            [entry["round"], entry["model"], _flops(entry["train_flops"]), kept, *cells, entry["wall_s"]]
        )
    note = (
        f"STaR on {summary['train_problems']} train problems, evaluated on {summary['test_problems']} test "
        "problems; train FLOPs = 6 x parameters x tokens trained + sampling, cumulative over rounds"
    )
    return note + "\n" + tabulate(rows, headers=headers)
