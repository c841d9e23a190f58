"""One prepared run on an open runner, into its folder under a results root: the part of
`tsbench run` that a sweep's cells share (tsbench.sweep), without printing."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tsbench import provenance
from tsbench.generation import batch_sequences, generate_all
from tsbench.identity import run_id, sample_identity
from tsbench.progress import Progress
from tsbench.records import ARMS, METRICS, PERFORMANCE, PROVENANCE, SESSIONS, RunFolder
from tsbench.rescoring import arms_record, rescore, scored_with_current_code
from tsbench.run import Prepared, build_verifiers, check_budgets

RESULTS_ROOT = Path("results")


@dataclass
class Outcome:
    """What a run left: its folder, its scores and speed, and how much was there before.

    Args:
        path: the run folder.
        metrics, performance: metrics.json and performance.json as written.
        done_before: problems already done when this session started (a resumed run).
        total: the run's problems.
        rescored: whether a finished run was re-scored because the scoring code changed.
    """

    path: Path
    metrics: dict[str, Any]
    performance: dict[str, Any]
    done_before: int
    total: int
    rescored: bool


def run_into(
    prepared: Prepared,
    runner: Any,
    results_root: Path = RESULTS_ROOT,
    show_progress: bool = False,
    progress: Progress | None = None,
) -> Outcome:
    """Generate what the run's folder lacks, then score it.

    Args:
        prepared: the validated run; its spec.output, when set, names the folder, else
            results_root/<run-id>.
        runner: the open runner (closed by the caller).
        results_root: where run folders named by their run id go.
        show_progress: draw this run's own bar (problems x arms) on stderr.
        progress: a bar of the caller's to move instead (a sweep's), or None.
    """
    # Recorded before the run's identity is taken: batches decide an engine's last bits.
    prepared.spec = replace(prepared.spec, batch_sequences=batch_sequences(prepared.spec, runner))
    info = runner.info()
    verifiers = build_verifiers(prepared, runner)
    check_budgets(prepared, runner, info.parameters, verifiers)
    generating = [a.strategy for a in prepared.arms if a.strategy.pool == "search"] + list(verifiers.values())
    identity = sample_identity(
        prepared.spec.identity(), prepared.task, prepared.problems, info, runner, generating
    )
    path = Path(prepared.spec.output) if prepared.spec.output else results_root / run_id(identity)
    folder = RunFolder.open(path, prepared.spec.to_yaml(), identity, total=len(prepared.problems))
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
        own = Progress(total * arms, done * arms, f"run {path.name}", enabled=show_progress)
        try:
            generate_all(prepared, runner, info.parameters, verifiers, folder, progress or own)
        except BaseException:
            folder.remove_if_empty()
            raise
        finally:
            own.close()
    if done == total and scored_with_current_code(folder, prepared.task):
        return Outcome(path, folder.read_json(METRICS), folder.read_json(PERFORMANCE), done, total, False)
    metric_data, perf = rescore(folder, prepared.task)
    return Outcome(path, metric_data, perf, done, total, done == total and folder.complete)
