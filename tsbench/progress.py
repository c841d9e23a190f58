"""The run's progress bar: problems x arms, with the engine's live generated tokens per second.

A unit is one arm on one problem. The scheduler reports each job as it ends (a problem's pools
end every pool arm of it at once; a search ends its share of its arm, one budget level), so the
bar moves within a group and its estimate of the time left, taken from the rate of finished
units, counts what searches cost as they run.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

WINDOW_S = 10.0  # tokens/s is measured over about this much recent time


class Progress:
    """Args:
    total: units in the run (problems x arms).
    done: units already done (a resumed run).
    label: what the bar says it runs.
    enabled: False for no bar (every method then does nothing).
    """

    def __init__(self, total: float, done: float, label: str, enabled: bool = True) -> None:
        self.bar: Any = None
        self.recent: deque[tuple[float, int]] = deque()
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=done,
                unit="arm x problem",
                desc=label,
                file=sys.stderr,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}{postfix}]",
            )

    def tokens(self, count: int) -> None:
        """Tokens one generate call produced, just now."""
        if self.bar is None:
            return
        now = time.perf_counter()
        self.recent.append((now, count))
        while len(self.recent) > 2 and now - self.recent[1][0] > WINDOW_S:
            self.recent.popleft()
        span = now - self.recent[0][0]
        if span > 0:
            # The oldest entry marks the window's start; its own tokens came before it.
            rate = sum(c for _, c in list(self.recent)[1:]) / span
            self.bar.set_postfix_str(f"{rate:.0f} tok/s", refresh=False)

    def advance(self, units: float) -> None:
        if self.bar is not None and units:
            self.bar.update(units)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
