"""`tsbench processbench`: a process verifier scored on ProcessBench (its first wrong step)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsbench import plugins
from tsbench.cli_args import pairs, pct, positive_int, scalar
from tsbench.errors import UserError


def add_processbench_parser(sub: argparse._SubParsersAction) -> None:
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
    limit = positive_int(args.limit, "--limit") if args.limit else None
    items = load_processbench(folder, subsets, limit)
    runner = plugins.runners.get(args.runner)(
        model=args.model,
        threads=args.threads,
        **{k: scalar(v) for k, v in pairs(args.runner_arg or [], "--runner-arg").items()},
    )
    options = {k: scalar(v) for k, v in pairs(args.verifier_arg or [], "--verifier-arg").items()}
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
            pct(m["error_accuracy"]),
            pct(m["correct_accuracy"]),
            pct(m["f1"]),
        ]
        for name, m in result["subsets"].items()
    ]
    from tabulate import tabulate

    print(
        f"ProcessBench from {folder}: verifier {args.verifier} on {args.runner}, threshold {args.threshold}"
    )
    print(tabulate(rows, headers=["subset", "erroneous", "correct", "error acc", "correct acc", "F1"]))
    print(f"average F1: {pct(result['average_f1'])}; verifier tokens {result['verifier_tokens']}")
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
        print(f"predictions: {args.output}")
    return 0
