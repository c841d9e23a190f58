"""kill -9 at ten random moments of a real run: each resume loses and repeats nothing, and the
finished folder's records equal an uninterrupted run's, byte for byte (timings aside).

The killed runs share a generation cache (tsbench.cache), so a group that was generated but not
yet committed when the kill came is read back on resume; the reference run generates everything.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# Six arith problems, a sampled pool of 4 (majority) and a beam search (N = 4, oracle-scored) per
# problem: 8 sequences a problem to batches of 4, so each problem is a group of its own.
SPEC = [
    "--task-arg",
    "levels=1",
    "--limit",
    "6",
    "--strategy",
    "majority,beam-search",
    "--verifier",
    "oracle",
    "--budget",
    "4",
    "--max-tokens",
    "32",
    "--strategy-arg",
    "beam-search.max_step_tokens=16",
    "--strategy-arg",
    "beam-search.max_steps=2",
    "--batch-sequences",
    "4",
    "--threads",
    "1",
    "--no-progress",
]
RECORDS = ("samples.jsonl", "problems.jsonl", "traces.jsonl", "grades.jsonl", "scores.jsonl", "metrics.json")
PROBLEMS = 6
KILLS = 10


def start(output: Path, cache: str) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TSBENCH_GENERATION_CACHE": cache}
    return subprocess.Popen(
        [sys.executable, "-m", "tsbench.cli", "run", *SPEC, "--output", str(output)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def committed(output: Path) -> list[str]:
    """Problem ids whose commit line is whole on disk (a torn last line does not count)."""
    file = output / "problems.jsonl"
    if not file.exists():
        return []
    return [
        json.loads(line)["problem_id"]
        for line in file.read_text().splitlines(keepends=True)
        if line.endswith("\n")
    ]


@pytest.mark.slow
def test_ten_kills_at_random_moments_resume_to_the_uninterrupted_records(tmp_path: Path) -> None:
    reference = tmp_path / "uninterrupted" / "run"  # both named "run": metrics.json names its folder
    proc = start(reference, "off")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err

    output = tmp_path / "killed" / "run"
    cache = str(tmp_path / "cache.sqlite")
    rng = np.random.default_rng(10)
    landed = 0
    for _ in range(KILLS):
        before = committed(output)
        # A moment: once the run holds `target` problems (this attempt's first commit, or none),
        # plus a random delay; some land in the model's loading, some mid-group, some mid-write.
        target = min(len(before) + int(rng.integers(0, 2)), PROBLEMS - 1)
        # Up to about one problem's time on this machine, so that the run outlasts the ten kills.
        delay = float(rng.uniform(0.0, 1.5))
        proc = start(output, cache)
        deadline = time.time() + 120
        while proc.poll() is None and len(committed(output)) < target and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            landed += 1
        proc.communicate(timeout=60)
        done = committed(output)
        assert len(done) == len(set(done)), "a problem was committed twice"
        assert done[: len(before)] == before, "a committed problem was lost"
        if len(done) < PROBLEMS and (output / "status.json").exists():
            assert json.loads((output / "status.json").read_text())["complete"] is False
    assert landed >= KILLS - 2, f"only {landed} kills landed on a live run"

    proc = start(output, cache)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads((output / "status.json").read_text())["complete"] is True
    for name in RECORDS:
        assert (output / name).read_bytes() == (reference / name).read_bytes(), name
    samples = [json.loads(line) for line in (output / "samples.jsonl").read_text().splitlines()]
    keys = [(s["problem_id"], s["pool"], s["index"]) for s in samples]
    assert len(keys) == len(set(keys)) == PROBLEMS * 4
    timings = [json.loads(line)["problem_id"] for line in (output / "timings.jsonl").read_text().splitlines()]
    assert sorted(timings) == sorted(set(timings)) and len(timings) == PROBLEMS
