"""`tsbench gate NEW --baseline OLD`: the gate's table and JUnit XML, and running a spec to gate.

Exit codes: 0 when nothing regressed, 1 on a regression, 2 on bad input (a folder that is not a
finished run, runs that are not comparable, a spec that does not run).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tabulate import tabulate

from tsbench.errors import UserError
from tsbench.gate import GateOptions, GateReport, gate, level_text, row_message, speed_message


def run_spec(spec: Path, output: Path | None = None, extra: tuple[str, ...] = ()) -> Path:
    """Run (or resume) a spec file with `tsbench run` in this process; returns its run folder.

    Args:
        spec: a YAML spec file.
        output: the results folder; None for results/<run-id>.
        extra: further `tsbench run` flags (they override the file's fields).

    Raises:
        UserError: the spec did not run; the message is `tsbench run`'s own line.
    """
    from tsbench.cli import main

    argv = ["run", "-c", str(spec), "--no-progress", *extra]
    if output is not None:
        argv += ["--output", str(output)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    if code != 0:
        last = (err.getvalue().strip().splitlines() or [f"exit code {code}"])[-1]
        raise UserError(f"spec {spec} did not run: {last.removeprefix('tsbench: error: ')}")
    found = [line for line in out.getvalue().splitlines() if line.startswith("results: ")]
    return output if output is not None else Path(found[-1].removeprefix("results: "))


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def table(report: GateReport, verdict: bool = True) -> str:
    """One line per row compared, then the speed line, what was not compared and (with
    `verdict`) "passed" or each regression's message."""
    lines = []
    for row in report.rows:
        r = row.result
        low, high = r.ci95
        lines.append(
            [
                row.strategy + (" (oracle)" if row.oracle else ""),
                row.verifier,
                level_text(row.level),
                _percent(r.accuracy_a),
                _percent(r.accuracy_b),
                f"{100 * r.difference:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]",
                f"{r.p_value:.3g}",
                "REGRESSION" if row.regressed else "ok",
            ]
        )
    headers = ["strategy", "verifier", f"budget ({report.budget_unit})", "baseline %", "candidate %"]
    headers += ["diff pts [95% CI]", "p", "verdict"]
    options = report.options
    text = (
        f"gate: candidate {report.candidate} vs baseline {report.baseline}; paired test per row, alpha "
        f"{options.alpha:g}{' (Holm over the rows)' if options.correction == 'holm' else ' per row'}, "
        f"min effect {100 * options.min_effect:.1f} points\n"
    )
    text += tabulate(lines, headers=headers, disable_numparse=True)
    if report.speed:
        s = report.speed
        said = "REGRESSION" if s.regressed else "ok"
        text += (
            f"\nspeed: generated tok/s {s.baseline:.2f} -> {s.candidate:.2f} ({s.ratio:.2f}x; allowed down to "
            f"{1 - s.max_slowdown:.2f}x): {said}"
        )
    for label, keys in (("baseline", report.only_baseline), ("candidate", report.only_candidate)):
        if keys:
            names = ", ".join(f"{arm}@{level_text(level)}" for arm, level in keys)
            text += f"\nnot compared, only in the {label}: {names}"
    if report.rescored:
        text += "\nboth runs re-scored with the installed tsbench (their scoring code differed)"
    if verdict:
        text += "\n" + ("FAILED:\n" + "\n".join(report.failures()) if report.failed else "passed")
    return text


def junit(report: GateReport) -> str:
    """JUnit XML: one test case per row compared (and one for speed), failures with their message."""
    cases = []
    for row in report.rows:
        case = ET.Element(
            "testcase",
            classname=f"tsbench.gate.{row.strategy}",
            name=f"{row.arm} @ {level_text(row.level)} {report.budget_unit}",
        )
        if row.regressed:
            message = row_message(row, report.options, len(report.rows), report.budget_unit)
            failure = ET.SubElement(case, "failure", message=message, type="AccuracyRegression")
            failure.text = message
        cases.append(case)
    if report.speed:
        case = ET.Element("testcase", classname="tsbench.gate.speed", name="generated tokens/s")
        if report.speed.regressed:
            message = speed_message(report.speed)
            ET.SubElement(case, "failure", message=message, type="SpeedRegression").text = message
        cases.append(case)
    failures = sum(1 for c in cases if c.find("failure") is not None)
    suites = ET.Element("testsuites", name="tsbench gate", tests=str(len(cases)), failures=str(failures))
    suite = ET.SubElement(
        suites, "testsuite", name="tsbench gate", tests=str(len(cases)), failures=str(failures), errors="0"
    )
    properties = ET.SubElement(suite, "properties")
    options = report.options
    for name, value in (
        ("baseline", str(report.baseline)),
        ("candidate", str(report.candidate)),
        ("alpha", f"{options.alpha:g}"),
        ("min_effect", f"{options.min_effect:g}"),
        ("correction", options.correction),
        ("max_slowdown", "none" if options.max_slowdown is None else f"{options.max_slowdown:g}"),
    ):
        ET.SubElement(properties, "property", name=name, value=value)
    suite.extend(cases)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _fraction(value: str, flag: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise UserError(f"{flag}: '{value}' is not a number; write e.g. {flag} 0.05") from None


def cmd_gate(args: argparse.Namespace) -> int:
    """Gate NEW (a run folder, or a spec file to run first) against --baseline OLD."""
    options = GateOptions(
        alpha=_fraction(args.alpha, "--alpha"),
        min_effect=_fraction(args.min_effect, "--min-effect"),
        max_slowdown=None if args.max_slowdown is None else _fraction(args.max_slowdown, "--max-slowdown"),
        correction=args.correction,
    )
    candidate = Path(args.new)
    if candidate.is_file() and candidate.suffix in (".yaml", ".yml"):
        print(
            f"gate: running the candidate spec {candidate} (tsbench run; resumes a finished run)",
            file=sys.stderr,
        )
        candidate = run_spec(candidate)
    elif not candidate.is_dir():
        raise UserError(
            f"gate: {args.new} is neither a run folder nor a spec file (.yaml); give results/<run-id>"
        )
    report = gate(candidate, Path(args.baseline), options)
    text = junit(report) if args.format == "junit" else table(report) + "\n"
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UserError(
                f"-o {args.output}: cannot write ({exc.strerror}); give a writable path"
            ) from None
    print(table(report) if args.output or args.format == "text" else text.rstrip("\n"))
    return 1 if report.failed else 0


def add_gate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `gate` subcommand's flags."""
    command = sub.add_parser(
        "gate", help="compare a run with a baseline run: exit 1 if accuracy fell beyond chance or speed fell"
    )
    command.add_argument("new", help="candidate: a run folder (results/<run-id>) or a spec file to run")
    command.add_argument("--baseline", required=True, help="baseline run folder")
    command.add_argument(
        "--alpha", default="0.05", help="significance level of the paired test (default 0.05)"
    )
    command.add_argument(
        "--min-effect", default="0", help="smallest accuracy drop that fails, as a fraction (0.05 = 5 points)"
    )
    command.add_argument(
        "--max-slowdown",
        help="fail if generated tokens/s fell by more than this fraction (same machine only)",
    )
    command.add_argument(
        "--correction", choices=["holm", "none"], default="holm", help="multiple rows: Holm (default) or none"
    )
    command.add_argument("--format", choices=["text", "junit"], default="text", help="output format")
    command.add_argument("-o", "--output", help="write the table or JUnit XML here")
    command.set_defaults(func=cmd_gate)
