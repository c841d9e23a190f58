"""`tsbench exec`: grade one candidate program in the sandbox and print what happened.

For debugging a grader, and for trying a hostile program by hand:
`tsbench exec --task humaneval --problem HumanEval/0 --candidate prog.py [--json]`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tsbench import plugins
from tsbench.errors import UserError
from tsbench.tasks.declared import load_task_file


def add_exec_parser(sub: Any) -> None:
    command = sub.add_parser("exec", help="grade one candidate program of a code task in the sandbox")
    command.add_argument("--task", required=True, help="a code task: humaneval, mbpp, or a task YAML")
    command.add_argument("--problem", required=True, help="the problem's id, e.g. HumanEval/0 or 11")
    command.add_argument(
        "--candidate", required=True, help="file with the program (or a model's whole answer)"
    )
    command.add_argument(
        "--data-dir", dest="data_dir", help="data folder (else $TSBENCH_DATA_DIR, else the hub)"
    )
    command.add_argument("--json", action="store_true", help="print one JSON object (with `passed`)")
    command.set_defaults(func=cmd_exec)


def cmd_exec(args: argparse.Namespace) -> int:
    """Prints the structured result; exit status 0 whether or not it passed (2 on bad input)."""
    task: Any = (
        load_task_file(args.task) if args.task.endswith((".yaml", ".yml")) else plugins.tasks.get(args.task)()
    )
    if not callable(getattr(task, "run", None)):
        raise UserError(f"task {args.task} is not a code task (it has no sandbox run); use humaneval or mbpp")
    path = Path(args.candidate)
    if not path.is_file():
        raise UserError(f"--candidate {path}: no such file; give the path of a file holding the program")
    text = path.read_text(encoding="utf-8", errors="replace")
    problems = {p.id: p for p in task.load(None, 0, args.data_dir)}
    if args.problem not in problems:
        shown = ", ".join(list(problems)[:5])
        raise UserError(f"--problem {args.problem}: not in task {task.name} (ids look like: {shown}, ...)")
    code = task.extract(text)
    if code is None:
        raise UserError(f"--candidate {path}: holds no program (empty, or an empty code block)")
    result = task.run(code, problems[args.problem])
    if args.json:
        print(json.dumps({"task": task.name, "problem": args.problem, **result.as_dict()}))
        return 0
    print(f"{task.name} {args.problem}: {result.status.upper()}  (containment: {result.containment})")
    if result.limit:
        print(f"limit hit: {result.limit}")
    if result.detail:
        print(f"detail: {result.detail}")
    print(f"calls: {result.calls}   wall: {result.wall_s:.2f} s")
    for name in ("stdout", "stderr"):
        if getattr(result, name):
            print(f"--- candidate {name} ---\n{getattr(result, name).rstrip()}")
    return 0
