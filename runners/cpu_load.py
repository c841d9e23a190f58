"""How many CPU threads llama.cpp should use: the cores other processes leave idle.

llama.cpp's threads wait for each other at spinning barriers, so a thread on a core that another
process keeps busy stalls them all: on this project's 2-core machine, with another process busy
on one core, two threads decoded about 10x slower than one. So the runner starts with the cores
idle over a short look, then follows the load between generate calls (OtherLoad).
"""

from __future__ import annotations

import os
import time


def default_threads() -> int:
    """One thread per core that other processes leave idle right now (at least 1).

    llama.cpp's threads wait for each other at spinning barriers: on 2 cores with another process
    busy on one of them, two threads decoded about 10x slower than one (measured here).
    """
    cores = available_cores()
    return max(1, cores - busy_cores(cores))


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def busy_cores(cores: int, window_s: float = 0.3) -> int:
    """Cores kept busy by other processes over a short window (we sleep through it), from /proc/stat."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    try:
        total_a, idle_a = sample()
        time.sleep(window_s)
        total_b, idle_b = sample()
    except (OSError, ValueError, IndexError):
        return 0
    elapsed = total_b - total_a
    if elapsed <= 0:
        return 0
    busy_share = 1 - (idle_b - idle_a) / elapsed
    return min(cores - 1, int(busy_share * cores + 0.25))


class OtherLoad:
    """Cores that other processes kept busy between two looks, measured without sleeping: the
    machine's busy time (/proc/stat) less this process's own CPU time, over the wall time between.

    A look after each generate call covers the whole call, so a load shorter than a moment (a
    shell command, a compile step) barely moves it, while one that lasts shows in full.
    """

    def __init__(self) -> None:
        self.last = self._look()

    @staticmethod
    def _look() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as stat:
                values = [int(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        ticks = os.sysconf("SC_CLK_TCK")
        own = os.times()
        return time.monotonic(), (sum(values) - idle) / ticks, own.user + own.system

    def cores(self, min_window_s: float = 1.0) -> float | None:
        """Mean cores busy with other processes since the last look; None when it is too recent."""
        now = self._look()
        if now is None or self.last is None or now[0] - self.last[0] < min_window_s:
            return None
        (wall_a, busy_a, own_a), (wall_b, busy_b, own_b) = self.last, now
        self.last = now
        return max(0.0, ((busy_b - busy_a) - (own_b - own_a)) / (wall_b - wall_a))
