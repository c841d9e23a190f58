"""The real embedded model end to end: reproducible records, crash-safe resume, honest table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SPEC = [
    "--task-arg",
    "levels=1",
    "--limit",
    "6",
    "--budget",
    "1,2,4,8",
    "--max-tokens",
    "32",
    # 4 problems of 9 sequences to a group of about 2 batches of 16: two groups, so a kill can land between.
    "--batch-sequences",
    "16",
    "--no-progress",
]


# Searches only: 4 problems, beam search and particle filtering (N = 4 each) scored by the free
# oracle; 8 sequences per problem to a group of about 2 batches of 8: two groups of two problems,
# each group's four searches live together in one scheduler.
SEARCH_SPEC = [
    "--task-arg",
    "levels=1",
    "--limit",
    "4",
    "--strategy",
    "beam-search,particle-filtering",
    "--verifier",
    "oracle",
    "--budget",
    "4",
    "--max-tokens",
    "48",
    "--strategy-arg",
    "beam-search.max_step_tokens=16",
    "--strategy-arg",
    "beam-search.max_steps=3",
    "--strategy-arg",
    "particle-filtering.max_step_tokens=16",
    "--strategy-arg",
    "particle-filtering.max_steps=3",
    "--batch-sequences",
    "8",
    "--no-progress",
]


def tsbench_run(output: Path, *extra: str, spec: list[str] = SPEC) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tsbench.cli", "run", *spec, "--output", str(output), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(output: Path, spec: list[str] = SPEC) -> subprocess.CompletedProcess[str]:
    proc = tsbench_run(output, spec=spec)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return subprocess.CompletedProcess(proc.args, 0, out, err)


def kill_after_first_commit(output: Path, spec: list[str] = SPEC) -> int:
    """Start a run, SIGKILL it once its first group is committed; returns the problems it holds."""
    proc = tsbench_run(output, spec=spec)
    problems = output / "problems.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (problems.exists() and problems.read_text().count("\n") >= 1):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return problems.read_text().count("\n")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    output = tmp_path_factory.mktemp("reference") / "run"
    return output, finished(output).stdout


def test_the_same_spec_gives_byte_identical_records(reference: tuple[Path, str], tmp_path: Path) -> None:
    first, _ = reference
    second = tmp_path / "run"
    finished(second)
    for name in (
        "samples.jsonl",
        "problems.jsonl",
        "grades.jsonl",
        "scores.jsonl",
        "metrics.json",
        "spec.yaml",
    ):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_the_table_shows_every_strategy_and_budget(reference: tuple[Path, str]) -> None:
    output, stdout = reference
    assert "pass@k (oracle)" in stdout and "majority" in stdout and "greedy" in stdout
    assert f"results: {output}" in stdout
    rows = json.loads((output / "metrics.json").read_text())["rows"]
    assert {(r["strategy"], r["k"]) for r in rows} == (
        {("greedy", 1)} | {(s, k) for s in ("majority", "pass@k") for k in (1, 2, 4, 8)}
    )
    passk = {r["k"]: r["accuracy"] for r in rows if r["strategy"] == "pass@k"}
    majority = {r["k"]: r["accuracy"] for r in rows if r["strategy"] == "majority"}
    assert [passk[k] for k in (1, 2, 4, 8)] == sorted(passk[k] for k in (1, 2, 4, 8))
    assert all(passk[k] >= majority[k] for k in passk)
    # The ledger: k samples cost k times the generated tokens of one, and FLOPs follow tokens.
    spend = {r["k"]: r for r in rows if r["strategy"] == "majority"}
    assert spend[8]["generated_tokens_per_problem"] == pytest.approx(
        8 * spend[1]["generated_tokens_per_problem"], rel=1e-3
    )
    assert spend[8]["flops_per_problem"] > spend[1]["flops_per_problem"]
    samples = [json.loads(line) for line in (output / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 * (1 + 8)
    # Samples are kept as generated; grades live apart, derived from them.
    assert {"prompt", "text", "generated_tokens", "seed", "stop_reason"} <= set(samples[0])
    assert not {"answer", "correct"} & set(samples[0])
    grades = [json.loads(line) for line in (output / "grades.jsonl").read_text().splitlines()]
    assert len(grades) == len(samples) and {"answer", "canonical", "correct", "status"} <= set(grades[0])


def test_sigkill_mid_run_loses_and_repeats_nothing(reference: tuple[Path, str], tmp_path: Path) -> None:
    output = tmp_path / "run"
    problems = output / "problems.jsonl"
    done_before = kill_after_first_commit(output)
    assert 1 <= done_before < 6, "kill should land between the two groups of problems"
    assert not (output / "metrics.json").exists()
    rerun = finished(output)
    assert f"resumed: {done_before} of 6 problems were already done" in rerun.stdout
    ids = [json.loads(line)["problem_id"] for line in problems.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 6
    first, _ = reference
    # Fixed batches: the resumed run's records equal the uninterrupted run's, byte for byte.
    assert (output / "samples.jsonl").read_bytes() == (first / "samples.jsonl").read_bytes()
    assert (output / "metrics.json").read_bytes() == (first / "metrics.json").read_bytes()


def test_searches_killed_mid_group_resume_to_the_same_bytes(tmp_path: Path) -> None:
    # Both folders are named "run": metrics.json names its folder.
    reference = tmp_path / "uninterrupted" / "run"
    finished(reference, SEARCH_SPEC)
    output = tmp_path / "killed" / "run"
    # Killed once the first group is committed, while the second group's four searches are live.
    assert kill_after_first_commit(output, SEARCH_SPEC) == 2, (
        "kill should land while the second group searches"
    )
    rerun = finished(output, SEARCH_SPEC)
    assert "resumed: 2 of 4 problems were already done" in rerun.stdout
    for name in ("problems.jsonl", "traces.jsonl", "grades.jsonl", "scores.jsonl", "metrics.json"):
        assert (output / name).read_bytes() == (reference / name).read_bytes(), name
    traces = [json.loads(line) for line in (reference / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == 8 and all(t["trace"]["rounds"] for t in traces)


def test_a_finished_run_reports_without_generating_again(reference: tuple[Path, str]) -> None:
    output, stdout = reference
    before = (output / "samples.jsonl").read_bytes()
    again = finished(output)
    assert "resumed: 6 of 6" in again.stdout
    assert (output / "samples.jsonl").read_bytes() == before
    report = subprocess.run(
        [sys.executable, "-m", "tsbench.cli", "report", str(output)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "pass@k (oracle)" in report.stdout
