"""The Ray executor: one actor per engine replica, each with its CPU/GPU request; cells go to
actors that already hold their engine; a cell whose actor died is sent again to a fresh actor and
resumes from its run folder (problems committed before are kept, nothing is generated twice).

Run folders are written by the actors under the sweep's results root, so on several machines that
root must be a shared filesystem (NFS, a mounted bucket); otherwise give each machine its own root
and join them with `tsbench merge`.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsbench.errors import UserError
from tsbench.sweep.cells import CellResult, Engines, check_cells, run_cell
from tsbench.sweep.progress import SweepProgress
from tsbench.sweep.spec import Cell, Sweep

# Settings of this process that decide what a cell does; Ray workers on other nodes get them too.
FORWARDED_ENV = ("TSBENCH_", "HF_", "TRANSFORMERS_", "OMP_NUM_THREADS")


class CellWorker:
    """A Ray actor: one engine replica, kept loaded across the cells sent to it.

    Args:
        results_root: absolute path of the sweep's results folder.
    """

    def __init__(self, results_root: str) -> None:
        self.root = Path(results_root)
        self.engines = Engines()

    def pid(self) -> int:
        return os.getpid()

    def run(self, cell: Cell) -> CellResult:
        return run_cell(cell, self.engines, self.root)


@dataclass
class Placement:
    """Args:
    workers: actors (engine replicas) at once.
    cpus, gpus: each actor's Ray resource request.
    attempts: tries per cell before the sweep gives it up (an actor that died counts one).
    """

    workers: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    attempts: int = 3


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("the Ray executor needs Ray: pip install 'tsbench[ray]'") from None
    return ray


def _connect(ray: Any, address: str | None) -> bool:
    """Join the cluster at `address` (or $RAY_ADDRESS, or a new local one); True if this call
    started Ray, which is then shut down at the end."""
    if ray.is_initialized():
        return False
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    try:
        ray.init(
            address=address,
            runtime_env={"env_vars": env},
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except ConnectionError as exc:
        raise UserError(
            f"no Ray cluster answers at {address}: {exc}; start one with `ray start --head` or drop --address"
        ) from None
    return True


def _check_resources(ray: Any, placement: Placement, started_here: bool) -> None:
    """Refuse an actor the cluster could never place (Ray would wait for it forever)."""
    cluster = ray.cluster_resources()
    for name, each in (("CPU", placement.cpus), ("GPU", placement.gpus)):
        if each > cluster.get(name, 0):
            if started_here:
                ray.shutdown()
            flag = f"--{name.lower()}s-per-worker"
            raise UserError(
                f"{flag} {each:g}: the Ray cluster has {cluster.get(name, 0):g} {name}s in all; "
                f"lower {flag} or add nodes that have them"
            )


def _next_cell(pending: deque[Cell], held: tuple[Any, ...] | None, others: set[Any]) -> Cell:
    """The first pending cell on the engine this actor holds, else one on an engine no other actor
    holds (so two actors do not load the same model while another waits), else the first."""
    for wanted in (lambda c: c.engine == held, lambda c: c.engine not in others, lambda c: True):
        for cell in pending:
            if wanted(cell):
                pending.remove(cell)
                return cell
    raise IndexError("no pending cell")


def run_on_ray(
    sweep: Sweep, placement: Placement, address: str | None = None, show_progress: bool = True
) -> list[CellResult]:
    """Every cell on Ray actors; returns the cells' results in sweep order.

    Raises:
        UserError: a cell failed with bad input, or failed `placement.attempts` times.
    """
    check_cells(sweep)
    ray = _ray()
    started_here = _connect(ray, address)
    _check_resources(ray, placement, started_here)
    root = str(Path(sweep.results).resolve())
    remote = ray.remote(CellWorker).options(num_cpus=placement.cpus, num_gpus=placement.gpus, max_restarts=0)
    pending: deque[Cell] = deque(sweep.cells)
    tries = {cell.index: 0 for cell in sweep.cells}
    holds: dict[Any, tuple[Any, ...] | None] = {}
    running: dict[Any, tuple[Any, Cell]] = {}
    done: dict[int, CellResult] = {}
    progress = SweepProgress(len(sweep.cells), f"sweep (ray, {placement.workers} actors)", show_progress)

    def send(actor: Any) -> None:
        others = {engine for other, engine in holds.items() if other is not actor}
        cell = _next_cell(pending, holds[actor], others)
        tries[cell.index] += 1
        holds[actor] = cell.engine
        running[actor.run.remote(cell)] = (actor, cell)

    try:
        for _ in range(min(placement.workers, len(pending))):
            actor = remote.remote(root)
            holds[actor] = None
            send(actor)
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor, cell = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError:
                # The actor (its process, or its node) is gone: a fresh one resumes the cell.
                holds.pop(actor, None)
                if tries[cell.index] >= placement.attempts:
                    raise UserError(
                        f"{cell.where}: its actor died {tries[cell.index]} times; check the workers' "
                        "memory and logs, then run the same sweep again to resume"
                    ) from None
                pending.appendleft(cell)
                actor = remote.remote(root)
                holds[actor] = None
                send(actor)
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)  # the exception the actor raised
                if isinstance(cause, UserError):
                    raise UserError(f"{cell.where}: {cause}") from None
                raise
            done[cell.index] = result
            progress.cell_done(result.generated_tokens if result.done_before < result.problems else 0)
            if pending:
                send(actor)
            else:
                ray.kill(actor)
                holds.pop(actor, None)
    finally:
        progress.close()
        for actor in list(holds):
            ray.kill(actor)
        if started_here:
            ray.shutdown()
    return [done[i] for i in sorted(done)]
