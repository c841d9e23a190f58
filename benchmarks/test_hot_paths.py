"""pytest-benchmark benchmarks of tsbench's own hot paths (not the model's): how long the harness
takes around generation. Run them with

    python -m pytest benchmarks/ --benchmark-only          # figures in docs/GATES.md

They are outside `testpaths`, so the normal test run does not collect them.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import sample_record, texts_for

from tsbench import plugins
from tsbench.contracts import Problem
from tsbench.gate import gate
from tsbench.ledger import Spend, policy_spend
from tsbench.records import RunFolder
from tsbench.report import table
from tsbench.rescoring import rescore
from tsbench.scoring import Grader, affordable, expected_accuracy
from tsbench.strategies.base import Sample

N = 256


def problems_and_texts(count: int = 10_000, per_problem: int = 16) -> list[tuple[Problem, list[str]]]:
    rng = random.Random(0)
    task = plugins.tasks.get("arith")(levels="1,2,3")
    problems = task.load(count // per_problem, 0, None)
    return [(p, texts_for(p.question, p.reference, per_problem, rng)) for p in problems]


def test_extract_10k(benchmark: Any) -> None:
    task = plugins.tasks.get("arith")(levels="1,2,3")
    texts = [t for _, found in problems_and_texts() for t in found]
    answers = benchmark(lambda: [task.extract(t) for t in texts])
    assert len(answers) == 10_000 and sum(a is not None for a in answers) > 9_000


def test_extract_and_grade_10k(benchmark: Any) -> None:
    """What re-scoring does per sample: extract, canonical form, grade (a fresh grader each round)."""
    task = plugins.tasks.get("arith")(levels="1,2,3")
    work = problems_and_texts()

    def grade_all() -> int:
        grader = Grader(task)
        return sum(g["correct"] for p, texts in work for g in grader.grade_all(texts, p))

    correct = benchmark(grade_all)
    assert 2_000 < correct < 6_000


@pytest.fixture(scope="module")
def pool_256() -> list[Sample]:
    rng = random.Random(1)
    return [Sample(i, str(rng.choice([7, 7, 7, 8, 9, 10, 11])), False, 100) for i in range(N)]


@pytest.mark.parametrize("name", ["pass@k", "majority", "best-of-n"])
def test_estimator_curve_n256(benchmark: Any, pool_256: list[Sample], name: str) -> None:
    """Expected accuracy at every k = 1..256 from one pool of 256 samples (200 k-subsets where
    there are more, as scoring draws them)."""
    strategy = plugins.strategies.get(name)()
    samples = [
        Sample(s.index, s.answer, s.answer == "7", s.generated_tokens, score=(s.index % 13) / 13)
        for s in pool_256
    ]

    def curve() -> list[float]:
        rng = np.random.default_rng(0)
        return [expected_accuracy(strategy, samples, k, rng) for k in range(1, N + 1)]

    values = benchmark(curve)
    assert len(values) == N and all(-1e-9 <= v <= 1 + 1e-9 for v in values)  # sums of float weights


def test_ledger_accounting_10k(benchmark: Any) -> None:
    """10,000 spends summed, each budget level fitted by `affordable`, as scoring does per row."""
    spends = [policy_spend(135_000_000, 1, 50, 40 + i % 100) for i in range(10_000)]

    def account() -> tuple[Spend, int]:
        total = Spend()
        for spend in spends:
            total = total + spend
        fitted = sum(affordable(level, lambda k: 90.0 * k, 64) for level in range(0, 10_000, 10))
        return total, fitted

    total, _ = benchmark(account)
    assert total.samples == 10_000


def test_write_10k_sample_records(benchmark: Any, tmp_path: Path) -> None:
    """Commit 10,000 sample records in 25 groups (each append is fsynced, as in a run)."""
    rng = random.Random(0)
    records = [
        sample_record(f"p{i // 16}", "sampled", i % 16, "x " * rng.randint(5, 200), rng)
        for i in range(10_000)
    ]
    rounds = iter(range(10_000))

    def write() -> None:
        path = tmp_path / f"run{next(rounds)}"
        folder = RunFolder.open(path, "spec: benchmark\n", {"benchmark": True})
        for start in range(0, 10_000, 400):
            folder.commit([], records[start : start + 400], [])

    benchmark.pedantic(write, rounds=5, iterations=1)


def test_read_10k_sample_records(benchmark: Any, run_10k: tuple[RunFolder, Any]) -> None:
    folder, _ = run_10k
    samples = benchmark(folder.samples)
    assert len(samples) == 10_000


def test_report_10k_run(benchmark: Any, run_10k: tuple[RunFolder, Any], tmp_path: Path) -> None:
    """`tsbench report` on a 10,000-sample run: grade, score every arm x budget, metrics,
    performance, the table."""
    folder, task = run_10k
    copy = RunFolder(tmp_path / "run")
    shutil.copytree(folder.path, copy.path)

    def report() -> str:
        metric_data, perf = rescore(copy, task)
        return table(metric_data, perf)

    text = benchmark.pedantic(report, rounds=3, iterations=1)
    assert "majority" in text and "pass@k (oracle)" in text


def test_gate_10k_run(benchmark: Any, run_10k: tuple[RunFolder, Any], tmp_path: Path) -> None:
    """`tsbench gate` of the 10,000-sample run against a copy with every 7th problem's scores
    flipped (9 rows of 625 problems; McNemar, permutation tests and bootstrap intervals run)."""
    folder, task = run_10k
    if not (folder.path / "metrics.json").exists():
        rescore(folder, task)
    other = RunFolder(tmp_path / "other")
    shutil.copytree(folder.path, other.path)
    scores = other.read_jsonl("scores.jsonl")
    for record in scores:
        if int(record["problem_id"].rsplit("-", 1)[1]) % 7 == 0:
            record["accuracy"] = round(1 - record["accuracy"], 6)
    other.rewrite_jsonl("scores.jsonl", scores)
    report = benchmark.pedantic(lambda: gate(other.path, folder.path), rounds=5, iterations=1)
    assert len(report.rows) == 9 and all(r.result.difference != 0 for r in report.rows)
