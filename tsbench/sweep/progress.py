"""The sweep's progress bar: cells done, and tokens generated with their rate."""

from __future__ import annotations

import sys
import time
from typing import Any


class _TokenSink:
    """Stands in for a run's Progress inside a cell: tokens go to the sweep's bar, units do not."""

    def __init__(self, owner: SweepProgress) -> None:
        self.owner = owner

    def tokens(self, count: int) -> None:
        self.owner.add_tokens(count)

    def advance(self, units: float) -> None:
        pass

    def close(self) -> None:
        pass


class SweepProgress:
    """Args:
    cells: cells in the sweep.
    label: what the bar says it runs.
    enabled: False for no bar (the counts are still kept).
    """

    def __init__(self, cells: int, label: str, enabled: bool = True) -> None:
        self.tokens = 0
        self.started = time.perf_counter()
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=cells, unit="cell", desc=label, file=sys.stderr)

    def token_sink(self) -> Any:
        return _TokenSink(self)

    def add_tokens(self, count: int) -> None:
        self.tokens += count
        self._show()

    def cell_done(self, generated_tokens: int, counted_live: bool = False) -> None:
        """A cell finished; its tokens count here unless they were counted as generated."""
        if not counted_live:
            self.tokens += generated_tokens
        if self.bar is not None:
            self.bar.update(1)
        self._show()

    def _show(self) -> None:
        if self.bar is None:
            return
        rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.tokens:,} tok, {rate:.0f} tok/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
