"""tsbench gates itself: the reference run committed in results/ci-reference/ is run again from
its own spec.yaml on the default model, through the pytest plugin, and a change to tsbench that
costs accuracy fails CI here.

The reference was made by
    tsbench run --task-arg levels=1 --limit 20 --strategy greedy,majority --budget 1,4 \
        --max-tokens 48 --output results/ci-reference/arith-l1
On llama.cpp on the CPU the same spec and code give the same bytes, so an unchanged tsbench passes
with every difference 0. On 20 problems the paired test is coarse: the greedy row fails when it
loses 7 problems and wins none back (McNemar's exact p = 0.016, under Holm's 0.05 / 3 rows);
smaller losses need a bigger spec.
After an intended change of what the model is asked or how it samples, make the reference again
with the command above (delete the folder first) and commit it (`git add -f`: results/ is ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "ci-reference" / "arith-l1"


@pytest.mark.slow
@pytest.mark.tsbench(spec=REFERENCE / "spec.yaml", baseline=REFERENCE, alpha=0.05)
def test_this_tsbench_costs_no_accuracy_against_the_committed_reference(tsbench_gate: Any) -> None:
    report = tsbench_gate.check()
    assert [(r.arm, r.level) for r in report.rows] == [("greedy", 1), ("majority", 1), ("majority", 4)]
    assert report.rows[0].result.problems == 20
