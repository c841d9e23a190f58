"""Running a sweep's cells: one cell on a kept engine, and the local executor (one process, one
cell after another, reusing the loaded engine while consecutive cells share it)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsbench.contracts import Problem, Task
from tsbench.errors import UserError
from tsbench.run import Prepared, load_problems, open_runner, prepare
from tsbench.running import run_into
from tsbench.spec import RunSpec
from tsbench.sweep.progress import SweepProgress
from tsbench.sweep.spec import Cell, Sweep


@dataclass(frozen=True)
class CellResult:
    """What one cell left.

    Args:
        index: the cell's place in the sweep.
        run_id: its run folder's name under the results root.
        generated_tokens: tokens its run folder records as generated (all sessions).
        done_before: problems already done when this attempt started (resumed work).
        problems: the run's problems.
        wall_s: this attempt's wall time, engine loading included.
    """

    index: int
    run_id: str
    generated_tokens: int
    done_before: int
    problems: int
    wall_s: float


class Engines:
    """The loaded runner, kept for the next cell that shares its engine key (Cell.engine)."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.runner: Any = None

    def get(self, cell: Cell) -> Any:
        if cell.engine != self.key:
            self.close()
            self.runner = open_runner(cell.spec)
            self.key = cell.engine
        return self.runner

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
        self.key, self.runner = None, None


def run_cell(
    cell: Cell,
    engines: Engines,
    results_root: Path,
    progress: SweepProgress | None = None,
    prepared: Prepared | None = None,
) -> CellResult:
    """Run (or resume, or only re-score) one cell into results_root/<run-id>.

    Args:
        cell: the cell.
        engines: where its runner is loaded and kept.
        results_root: the sweep's results folder.
        progress: the sweep's bar, moved by the tokens this cell generates.
        prepared: the cell already prepared (the local executor checked every cell first).
    """
    started = time.perf_counter()
    prepared = prepared or prepare(cell.spec)
    runner = engines.get(cell)
    tokens = progress.token_sink() if progress else None
    outcome = run_into(prepared, runner, results_root, progress=tokens)
    generated = int(outcome.performance.get("generated_tokens", 0))
    return CellResult(
        cell.index,
        outcome.path.name,
        generated,
        outcome.done_before,
        outcome.total,
        time.perf_counter() - started,
    )


def check_cells(sweep: Sweep) -> list[Prepared]:
    """Prepare every cell (tasks, problems, strategy options) before any generates: bad input in
    any cell stops the sweep before it writes anything. Cells that differ only in what they run on
    the problems share one load of them."""
    loaded: dict[str, tuple[Task, list[Problem]]] = {}

    def load(spec: RunSpec) -> tuple[Task, list[Problem]]:
        key = repr((spec.task, sorted(spec.task_options.items()), spec.limit, spec.seed, spec.data_dir))
        key += repr(spec.think_tags)
        if key not in loaded:
            loaded[key] = load_problems(spec)
        return loaded[key]

    prepared = []
    for cell in sweep.cells:
        try:
            prepared.append(prepare(cell.spec, load))
        except UserError as exc:
            raise UserError(f"{cell.where}: {exc}") from None
    return prepared


def run_local(sweep: Sweep, show_progress: bool = True) -> list[CellResult]:
    """Every cell in this process, in order; an engine stays loaded across the cells sharing it."""
    prepared = check_cells(sweep)
    root = Path(sweep.results)
    engines = Engines()
    results: list[CellResult] = []
    progress = SweepProgress(len(sweep.cells), "sweep (local)", enabled=show_progress)
    try:
        for cell, ready in zip(sweep.cells, prepared, strict=True):
            result = run_cell(cell, engines, root, progress, ready)
            results.append(result)
            progress.cell_done(result.generated_tokens, counted_live=True)
    finally:
        progress.close()
        engines.close()
    return results
