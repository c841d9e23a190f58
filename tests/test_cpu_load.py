"""How the llama.cpp runner picks its threads: the cores other processes leave idle."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from tsbench.runners.cpu_load import OtherLoad, available_cores
from tsbench.runners.llamacpp import LlamaCppRunner


def test_other_load_waits_for_a_window_then_does_not_count_this_process() -> None:
    load = OtherLoad()
    assert load.cores(min_window_s=60) is None  # too recent a look says nothing
    load.last = (load.last[0] - 2.0, load.last[1], load.last[2])  # type: ignore[index]
    deadline = time.perf_counter() + 0.3
    while time.perf_counter() < deadline:  # this process busy: not "another process"
        pass
    others = load.cores(min_window_s=1.0)
    assert others is not None and 0.0 <= others <= available_cores()


def follower(threads: int, fixed: bool, others: float | None) -> Any:
    calls: list[tuple[int, int]] = []
    runner = SimpleNamespace(
        fixed_threads=fixed,
        threads=threads,
        cores=2,
        load=SimpleNamespace(cores=lambda: others),
        ctx=SimpleNamespace(ctx="ctx"),
        _lib=SimpleNamespace(llama_set_n_threads=lambda ctx, a, b: calls.append((a, b))),
    )
    LlamaCppRunner.follow_load(runner)  # type: ignore[arg-type]
    return runner.threads, calls


def test_threads_follow_a_lasting_load_unless_pinned() -> None:
    assert follower(2, False, 0.9) == (1, [(1, 1)])  # another process held a core: one thread
    assert follower(1, False, 0.1) == (2, [(2, 2)])  # it left: both cores again
    assert follower(2, False, 0.3) == (2, [])  # under half a core on average over the window: ignored
    assert follower(2, False, None) == (2, [])  # no window yet: unchanged
    assert follower(2, True, 1.0) == (2, [])  # --threads pins it
