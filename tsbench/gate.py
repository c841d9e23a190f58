"""Regression gate: is a candidate run worse than a baseline run beyond chance, or slower?

Rows are paired by strategy x verifier x budget level and compared on the same problems with
tsbench.paired (McNemar's exact test for 0/1 scores, a paired permutation test otherwise, a paired
bootstrap interval of the difference). A row regresses when its drop is significant at `alpha`
(two-sided, Holm-adjusted over the rows compared unless told otherwise) AND at least
`min_effect`. Speed regresses when the run's generated tokens/s fell by more than `max_slowdown`
(a fraction of the baseline's), which only means something for runs measured on one machine.

Two runs are comparable only over the same problems, task data and grader: anything else is
refused with one line saying which. Runs scored by different scoring code are re-scored from
their stored samples, in a scratch copy, with the code installed now.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsbench.errors import UserError
from tsbench.identity import changes
from tsbench.paired import PairedResult, compare_scores
from tsbench.records import (
    ARMS,
    IDENTITY,
    METRICS,
    PERFORMANCE,
    PROBLEMS,
    SCORES,
    SESSIONS,
    RunFolder,
    read_jsonl,
)

Key = tuple[str, float]


@dataclass(frozen=True)
class GateOptions:
    """What counts as a regression.

    Args:
        alpha: significance level of the paired test (family-wise over rows with Holm).
        min_effect: smallest accuracy drop (a fraction, 0.05 = 5 points) that may fail the gate.
        max_slowdown: largest allowed fall of generated tokens/s, as a fraction of the baseline's
            (0.25: fail below 75% of it); None checks no speed.
        correction: "holm" (family-wise over the rows compared) or "none" (alpha per row).
    """

    alpha: float = 0.05
    min_effect: float = 0.0
    max_slowdown: float | None = None
    correction: str = "holm"

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise UserError(f"gate: alpha {self.alpha} must lie between 0 and 1, e.g. 0.05")
        if not 0 <= self.min_effect < 1:
            raise UserError(f"gate: min effect {self.min_effect} must be a fraction in [0, 1), e.g. 0.05")
        if self.max_slowdown is not None and not 0 <= self.max_slowdown < 1:
            raise UserError(
                f"gate: max slowdown {self.max_slowdown} must be a fraction in [0, 1), e.g. 0.25 for 25%"
            )
        if self.correction not in ("holm", "none"):
            raise UserError(f"gate: correction '{self.correction}' is not holm or none")


@dataclass
class LoadedRun:
    """What the gate reads of a finished run folder."""

    path: Path
    identity: dict[str, Any]
    scored_with: dict[str, Any]
    budget_unit: str
    oracles: set[str]
    scores: dict[Key, dict[str, float]]
    problem_ids: set[str]
    tokens_per_s: float | None
    cached_samples: int
    machines: set[str]


def load_run(path: Path, label: str) -> LoadedRun:
    """Read a finished run folder; a folder that is not one is refused in one line."""
    for name in (IDENTITY, ARMS, METRICS, SCORES):
        if not (path / name).is_file():
            what = "is not a finished tsbench run" if name in (METRICS, SCORES) else "is not a tsbench run"
            raise UserError(
                f"{label} {path} {what} (no {name}); give a results/<run-id> folder that "
                "`tsbench run` finished"
            )
    folder = RunFolder(path)
    if not folder.complete:
        raise UserError(
            f"{label} {path} is not a finished run (status.json: not every problem is done); finish it "
            "by running `tsbench run` with its spec again"
        )
    try:
        metric_data = folder.read_json(METRICS)
        scores: dict[Key, dict[str, float]] = defaultdict(dict)
        for record in read_jsonl(path / SCORES):
            scores[(record["arm"], float(record["level"]))][record["problem_id"]] = float(record["accuracy"])
        perf = folder.read_json(PERFORMANCE) if (path / PERFORMANCE).is_file() else {}
        identity = folder.read_json(IDENTITY)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{label} {path}: a record is malformed ({exc!r}); re-run `tsbench report {path}`"
        ) from None
    sessions = read_jsonl(path / SESSIONS)
    return LoadedRun(
        path=path,
        identity=identity,
        scored_with=metric_data.get("scored_with") or {},
        budget_unit=metric_data.get("budget_unit", "samples"),
        oracles={row["strategy"] for row in metric_data.get("rows", []) if row.get("oracle")},
        scores=dict(scores),
        problem_ids={r["problem_id"] for r in read_jsonl(path / PROBLEMS)},
        tokens_per_s=perf.get("generated_tokens_per_s"),
        cached_samples=int(perf.get("cached_samples") or 0),
        machines={
            json.dumps([s.get("cpu"), s.get("device"), s.get("gpus")], sort_keys=True) for s in sessions
        },
    )


@dataclass(frozen=True)
class RowCheck:
    """One strategy x verifier x budget row, baseline (A) against candidate (B)."""

    arm: str
    level: float
    oracle: bool
    result: PairedResult
    threshold: float
    regressed: bool

    @property
    def strategy(self) -> str:
        return self.arm.partition("/")[0]

    @property
    def verifier(self) -> str:
        return self.arm.partition("/")[2] or "-"


@dataclass(frozen=True)
class SpeedCheck:
    """Generated tokens/s of the whole run, baseline against candidate."""

    baseline: float
    candidate: float
    max_slowdown: float

    @property
    def ratio(self) -> float:
        return self.candidate / self.baseline if self.baseline else float("inf")

    @property
    def regressed(self) -> bool:
        return self.ratio < 1 - self.max_slowdown


@dataclass
class GateReport:
    """The gate's verdict on every row it compared, and on speed."""

    baseline: Path
    candidate: Path
    options: GateOptions
    budget_unit: str
    rows: list[RowCheck]
    speed: SpeedCheck | None = None
    only_baseline: list[Key] = field(default_factory=list)
    only_candidate: list[Key] = field(default_factory=list)
    rescored: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r.regressed for r in self.rows) or bool(self.speed and self.speed.regressed)

    def failures(self) -> list[str]:
        """One message per regression, naming everything needed to judge it."""
        found = [
            row_message(r, self.options, len(self.rows), self.budget_unit) for r in self.rows if r.regressed
        ]
        if self.speed and self.speed.regressed:
            found.append(speed_message(self.speed))
        return found


def level_text(level: float) -> str:
    return str(int(level)) if float(level).is_integer() and abs(level) < 1e6 else f"{level:.3g}"


def row_message(row: RowCheck, options: GateOptions, rows: int, unit: str) -> str:
    r = row.result
    low, high = r.ci95
    adjusted = (
        f"Holm threshold {row.threshold:.3g} over {rows} rows" if options.correction == "holm" else "per row"
    )
    return (
        f"accuracy regression: strategy {row.strategy}, verifier {row.verifier}, budget "
        f"{level_text(row.level)} {unit}{' (oracle row)' if row.oracle else ''}: baseline "
        f"{100 * r.accuracy_a:.1f}%, candidate {100 * r.accuracy_b:.1f}%, difference "
        f"{100 * r.difference:+.1f} points [95% CI {100 * low:+.1f}, {100 * high:+.1f}], "
        f"p = {r.p_value:.3g} ({r.test}, {r.problems} problems; alpha {options.alpha:g}, {adjusted}; "
        f"minimum effect {100 * options.min_effect:.1f} points)"
    )


def speed_message(speed: SpeedCheck) -> str:
    return (
        f"speed regression: generated tokens/s fell from {speed.baseline:.2f} (baseline) to "
        f"{speed.candidate:.2f} (candidate), {speed.ratio:.2f}x, below the allowed "
        f"{1 - speed.max_slowdown:.2f}x (max slowdown {100 * speed.max_slowdown:.0f}%)"
    )


def check_comparable(baseline: LoadedRun, candidate: LoadedRun) -> None:
    """Refuse, in one line, a baseline that does not share problems or task data with the candidate."""
    if baseline.problem_ids != candidate.problem_ids:
        only_b = sorted(baseline.problem_ids - candidate.problem_ids)
        only_c = sorted(candidate.problem_ids - baseline.problem_ids)
        raise UserError(
            f"baseline {baseline.path} and candidate {candidate.path} cover different problems "
            f"({len(baseline.problem_ids)} vs {len(candidate.problem_ids)}; baseline only: {only_b[:3]}, "
            f"candidate only: {only_c[:3]}); run both with the same task, limit and seed"
        )
    held, new = baseline.identity.get("data_sha256"), candidate.identity.get("data_sha256")
    if held != new:
        raise UserError(
            f"baseline {baseline.path} and candidate {candidate.path} hold different task data "
            f"(identity.json data_sha256 {str(held)[:12]}... vs {str(new)[:12]}...): the same problem ids "
            "carry other questions, references or metadata; compare runs over the same data file"
        )
    if baseline.budget_unit != candidate.budget_unit:
        raise UserError(
            f"baseline {baseline.path} counts budgets in {baseline.budget_unit}, candidate "
            f"{candidate.path} in {candidate.budget_unit}; compare runs with the same budget unit"
        )


def _rescored(run: LoadedRun, scratch: Path, label: str) -> LoadedRun:
    from tsbench.rescoring import rescore

    copy = scratch / label
    shutil.copytree(run.path, copy)
    try:
        rescore(RunFolder(copy))
    except UserError as exc:
        raise UserError(
            f"baseline and candidate were scored by different grader code and the {label} {run.path} "
            f"could not be re-scored here ({exc}); re-score both with `tsbench report` where they can be"
        ) from None
    loaded = load_run(copy, label)
    loaded.path = run.path
    return loaded


def same_grader(baseline: LoadedRun, candidate: LoadedRun) -> tuple[LoadedRun, LoadedRun, list[str]]:
    """Both runs scored by one grader: as they are when their scoring identities match, else
    re-scored with the installed code; a grader that still differs (a declared task's extractor
    or grader, say) is refused naming the fields."""
    if baseline.scored_with == candidate.scored_with:
        return baseline, candidate, []
    with tempfile.TemporaryDirectory(prefix="tsbench-gate-") as scratch:
        baseline = _rescored(baseline, Path(scratch), "baseline")
        candidate = _rescored(candidate, Path(scratch), "candidate")
    if baseline.scored_with != candidate.scored_with:
        changed = changes(baseline.scored_with, candidate.scored_with)
        raise UserError(
            f"baseline {baseline.path} and candidate {candidate.path} are graded differently "
            f"({'; '.join(changed[:3])}), even re-scored with this tsbench; compare runs of tasks "
            "with the same extractor and grader"
        )
    return baseline, candidate, ["baseline", "candidate"]


def holm_thresholds(p_values: list[float], alpha: float) -> list[tuple[float, bool]]:
    """(threshold, rejected) per p-value by Holm's step-down procedure, in the input order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    out: list[tuple[float, bool]] = [(alpha, False)] * len(p_values)
    stopped = False
    for rank, index in enumerate(order):
        threshold = alpha / (len(p_values) - rank)
        stopped = stopped or p_values[index] > threshold
        out[index] = (threshold, not stopped)
    return out


def speed_check(
    baseline: LoadedRun, candidate: LoadedRun, max_slowdown: float, same_session: bool
) -> SpeedCheck:
    """Tokens/s of two runs, compared only where they were measured on one machine."""
    if not same_session and (len(baseline.machines) != 1 or baseline.machines != candidate.machines):
        raise UserError(
            f"--max-slowdown: tokens/s of {baseline.path} and {candidate.path} were not measured on one "
            f"machine (sessions.jsonl: {sorted(baseline.machines)} vs {sorted(candidate.machines)}); "
            "run both here, e.g. in one pytest session through the tsbench plugin"
        )
    for label, run in (("baseline", baseline), ("candidate", candidate)):
        if run.cached_samples:
            raise UserError(
                f"--max-slowdown: {label} {run.path} read {run.cached_samples} samples from the generation "
                "cache, so its tokens/s is not a measurement; run it again with TSBENCH_GENERATION_CACHE=off"
            )
        if not run.tokens_per_s:
            raise UserError(
                f"--max-slowdown: {label} {run.path} records no generated tokens/s (performance.json)"
            )
    return SpeedCheck(float(baseline.tokens_per_s or 0), float(candidate.tokens_per_s or 0), max_slowdown)


def gate(
    candidate: Path,
    baseline: Path,
    options: GateOptions | None = None,
    *,
    same_session: bool = False,
    speed_baseline: Path | None = None,
) -> GateReport:
    """Compare a candidate run folder with a baseline run folder, row by row.

    Args:
        candidate: the new run's folder.
        baseline: the reference run's folder.
        options: alpha, minimum effect, max slowdown, correction.
        same_session: both runs' tokens/s were measured in this session (the pytest plugin).
        speed_baseline: a folder whose tokens/s stands for the baseline's (the baseline's spec
            run again in this session); accuracy still comes from `baseline`.

    Returns:
        The report; `report.failed` says whether anything regressed.

    Raises:
        UserError: a folder is not a finished run, or the two runs are not comparable.
    """
    options = options or GateOptions()
    base, cand = load_run(Path(baseline), "baseline"), load_run(Path(candidate), "candidate")
    check_comparable(base, cand)
    base, cand, rescored = same_grader(base, cand)
    common = [key for key in base.scores if key in cand.scores]
    if not common:
        raise UserError(
            f"baseline {base.path} and candidate {cand.path} share no strategy x verifier x budget row; "
            "run the candidate with the baseline's strategies and budgets"
        )
    results = [compare_scores(base.scores[key], cand.scores[key]) for key in common]
    if options.correction == "holm":
        decided = holm_thresholds([r.p_value for r in results], options.alpha)
    else:
        decided = [(options.alpha, r.p_value <= options.alpha) for r in results]
    rows = [
        RowCheck(
            arm=key[0],
            level=key[1],
            oracle=key[0] in base.oracles or key[0] in cand.oracles,
            result=result,
            threshold=threshold,
            regressed=rejected and result.difference < 0 and -result.difference >= options.min_effect - 1e-12,
        )
        for key, result, (threshold, rejected) in zip(common, results, decided, strict=True)
    ]
    speed = None
    if options.max_slowdown is not None:
        measured = load_run(Path(speed_baseline), "baseline (speed)") if speed_baseline else base
        speed = speed_check(measured, cand, options.max_slowdown, same_session)
    return GateReport(
        baseline=base.path,
        candidate=cand.path,
        options=options,
        budget_unit=base.budget_unit,
        rows=rows,
        speed=speed,
        only_baseline=[k for k in base.scores if k not in cand.scores],
        only_candidate=[k for k in cand.scores if k not in base.scores],
        rescored=rescored,
    )
