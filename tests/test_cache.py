"""The generation cache: keys, partial hits, sessions, costs, concurrent processes, real runs."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tsbench.cache import (
    CachedResult,
    CachedRunner,
    CachedSessionRunner,
    GenerationCache,
    cache_path,
    sample_keys,
)
from tsbench.contracts import Completion, GenerationRequest, GenerationResult, RunnerInfo


class CountingRunner:
    """A stand-in engine (the wrapper's logic is under test, not an engine): each sample's text
    is a function of its request and seed, and every request it is sent is recorded."""

    def __init__(self) -> None:
        self.sent: list[GenerationRequest] = []

    def info(self) -> RunnerInfo:
        return RunnerInfo("fake", 10, "fake-engine", "1", "cpu", "ab" * 32, "f32")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.sent += requests
        return [self._result(r) for r in requests]

    @staticmethod
    def _result(request: GenerationRequest) -> GenerationResult:
        completions = [
            Completion(
                f"{request.messages[-1][1]} seed {request.seed_for(i)}", 3 + i, "eos", request.seed_for(i)
            )
            for i in range(request.n)
        ]
        return GenerationResult(completions, 7, 7, 0.5, 0.1, 0.4)

    def close(self) -> None:
        pass


class SessionRunner(CountingRunner):
    """The same behind a continuous-batching session that finishes one request per step."""

    def open_session(self) -> FakeSession:
        return FakeSession(self)


class FakeSession:
    def __init__(self, runner: SessionRunner) -> None:
        self.runner, self.queue, self.next = runner, list[tuple[int, GenerationRequest]](), 0

    def add(self, request: GenerationRequest) -> int:
        self.next += 1
        self.queue.append((self.next, request))
        self.runner.sent.append(request)
        return self.next

    def step(self) -> list[tuple[int, GenerationResult]]:
        if not self.queue:
            return []
        key, request = self.queue.pop(0)
        return [(key, self.runner._result(request))]

    def close(self) -> None:
        pass


def request(n: int, question: str = "2+2?", temperature: float = 0.7) -> GenerationRequest:
    seeds = tuple(100 + i for i in range(n))
    return GenerationRequest((("user", question),), n, temperature, 0.95, 32, (), seeds)


def test_a_larger_pool_reads_the_samples_already_drawn(tmp_path: Path) -> None:
    engine = CountingRunner()
    runner = CachedRunner(engine, GenerationCache(tmp_path / "c.sqlite"), "runner-key")
    first = runner.generate([request(4)])[0]
    assert isinstance(first, CachedResult) and first.cached == 0
    second = runner.generate([request(8)])[0]
    assert isinstance(second, CachedResult) and second.cached == 4
    # Only the four new samples went to the engine, each with its own seed.
    assert engine.sent[-1].n == 4 and engine.sent[-1].seeds == (104, 105, 106, 107)
    assert [c.text for c in second.completions[:4]] == [c.text for c in first.completions]
    assert [c.seed for c in second.completions] == list(range(100, 108))
    # Costs do not depend on the cache: the same prompt and generated tokens as when generated.
    assert second.prompt_tokens == first.prompt_tokens
    assert [c.tokens for c in second.completions[:4]] == [c.tokens for c in first.completions]
    third = runner.generate([request(8)])[0]
    assert third.cached == 8 and len(engine.sent) == 2 and third.prompt_tokens_computed == 0
    assert [c.text for c in third.completions] == [c.text for c in second.completions]
    assert runner.hits == 12 and runner.misses == 8


def test_every_field_that_decides_a_sample_is_in_its_key() -> None:
    base = request(2)
    keys = sample_keys("r", base)
    assert len(set(keys)) == 2
    variants = [
        GenerationRequest((("user", "2+3?"),), 2, 0.7, 0.95, 32, (), base.seeds),
        GenerationRequest(base.messages, 2, 0.8, 0.95, 32, (), base.seeds),
        GenerationRequest(base.messages, 2, 0.7, 0.9, 32, (), base.seeds),
        GenerationRequest(base.messages, 2, 0.7, 0.95, 33, (), base.seeds),
        GenerationRequest(base.messages, 2, 0.7, 0.95, 32, ("\n",), base.seeds),
        GenerationRequest(base.messages, 2, 0.7, 0.95, 32, (), (7, 8)),
        GenerationRequest(base.messages, 2, 0.7, 0.95, 32, (), base.seeds, 0),
        GenerationRequest(base.messages, 2, 0.7, 0.95, 32, (), base.seeds, None, "Step 1:"),
    ]
    for variant in variants:
        assert not set(sample_keys("r", variant)) & set(keys), variant
    assert not set(sample_keys("another runner", base)) & set(keys)
    # A request's n does not decide its samples: sample i of a pool of 2 is sample i of a pool of 8.
    assert sample_keys("r", request(8))[:2] == keys


def test_a_session_serves_stored_requests_and_stores_only_a_finished_group(tmp_path: Path) -> None:
    engine = SessionRunner()
    cache = GenerationCache(tmp_path / "c.sqlite")
    runner = CachedSessionRunner(engine, cache, "k")
    session = runner.open_session()
    keys = [session.add(request(2, q)) for q in ("a", "b")]
    session.step()
    session.close()  # one request still out: the group was cut short, nothing is stored
    assert cache.count() == 0
    session = runner.open_session()
    keys = [session.add(request(2, q)) for q in ("a", "b")]
    found = dict(session.step() + session.step())
    session.close()
    assert sorted(found) == keys and cache.count() == 4
    sent = len(engine.sent)
    session = runner.open_session()
    keys = [session.add(request(2, q)) for q in ("a", "b", "c")]
    found = {}
    while len(found) < 3:
        found.update(session.step())
    session.close()
    assert len(engine.sent) == sent + 1 and engine.sent[-1].messages == (("user", "c"),)
    assert [found[k].cached for k in keys] == [2, 2, 0]  # type: ignore[attr-defined]


def test_the_wrapper_passes_for_the_runner_it_wraps(tmp_path: Path) -> None:
    from tsbench.contracts import OpensSessions

    engine = SessionRunner()
    runner = CachedSessionRunner(engine, GenerationCache(tmp_path / "c.sqlite"), "k")
    assert runner.__module__ == engine.__module__  # the run identity hashes the runner's module
    assert runner.info() == engine.info() and isinstance(runner, OpensSessions)
    assert not isinstance(CachedRunner(CountingRunner(), GenerationCache(tmp_path / "d"), "k"), OpensSessions)


def test_cache_location_and_switch(tmp_path: Path) -> None:
    assert cache_path({"TSBENCH_GENERATION_CACHE": "off"}) is None
    assert cache_path({"TSBENCH_GENERATION_CACHE": str(tmp_path)}) == tmp_path / "generations.sqlite"
    assert cache_path({"TSBENCH_GENERATION_CACHE": str(tmp_path / "x.db")}) == tmp_path / "x.db"
    assert cache_path({"TSBENCH_CACHE": str(tmp_path)}) == tmp_path / "generations.sqlite"


def _hammer(path: str, worker: int, rounds: int) -> None:
    """One process: writes overlapping batches of samples and reads them back at once."""
    cache = GenerationCache(Path(path))
    for r in range(rounds):
        rows = [(f"key-{(worker * 7 + r + i) % 60}", {"value": (worker * 7 + r + i) % 60}) for i in range(10)]
        cache.put(rows)
        got = cache.get([k for k, _ in rows])
        assert cache.broken is None, cache.broken
        assert all(got[k] == v for k, v in rows), (worker, r)
    cache.close()


def test_several_processes_share_one_cache_without_corrupting_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    GenerationCache(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_hammer, args=(str(path), w, 60)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = dict(db.execute("SELECT key, value FROM samples"))
    assert len(rows) == 60 and all(json.loads(v)["value"] == int(k.split("-")[1]) for k, v in rows.items())


def test_an_unopenable_cache_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    from tsbench.errors import UserError

    with pytest.raises(UserError, match="TSBENCH_GENERATION_CACHE=off"):
        GenerationCache(blocker / "c.sqlite")


def _run(output: Path, cache: str, budgets: str) -> dict[str, object]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TSBENCH_GENERATION_CACHE": cache}
    args = ["--task-arg", "levels=1", "--limit", "3", "--budget", budgets, "--max-tokens", "24"]
    args += ["--threads", "1", "--no-progress", "--output", str(output)]
    done = subprocess.run(
        [sys.executable, "-m", "tsbench.cli", "run", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return {
        name: [json.loads(line) for line in (output / name).read_text().splitlines()]
        for name in ("samples.jsonl", "timings.jsonl")
    } | {"metrics": json.loads((output / "metrics.json").read_text())}


@pytest.mark.slow
def test_real_runs_reuse_samples_and_charge_them_in_full(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache.sqlite")
    first = _run(tmp_path / "first", cache, "1,2")
    again = _run(tmp_path / "again", cache, "1,2")
    # The same spec again: every sample read back, the records the same, the spend the same.
    assert again["samples.jsonl"] == first["samples.jsonl"]
    assert [t["cached"] for t in again["timings.jsonl"]] == [{"greedy": 1, "sampled": 2}] * 3  # type: ignore[index]
    assert [t["cached"] for t in first["timings.jsonl"]] == [{"greedy": 0, "sampled": 0}] * 3  # type: ignore[index]

    def spend(run: dict[str, object]) -> list[object]:
        rows = run["metrics"]["rows"]  # type: ignore[index]
        return [
            (r["strategy"], r["k"], r["generated_tokens_per_problem"], r["flops_per_problem"]) for r in rows
        ]

    assert spend(again) == spend(first)
    # A larger pool: the two samples per problem already drawn are read, two more generated.
    larger = _run(tmp_path / "larger", cache, "1,2,4")
    assert [t["cached"] for t in larger["timings.jsonl"]] == [{"greedy": 1, "sampled": 2}] * 3  # type: ignore[index]
    drawn = {(s["problem_id"], s["pool"], s["index"]): s for s in first["samples.jsonl"]}  # type: ignore[attr-defined]
    reused = [s for s in larger["samples.jsonl"] if (s["problem_id"], s["pool"], s["index"]) in drawn]  # type: ignore[attr-defined]
    assert len(reused) == 9 and all(drawn[(s["problem_id"], s["pool"], s["index"])] == s for s in reused)
    # Off means off: every one of those samples is stored, yet all are generated.
    cold = _run(tmp_path / "cold", "off", "1,2")
    assert [t["cached"] for t in cold["timings.jsonl"]] == [{"greedy": 0, "sampled": 0}] * 3  # type: ignore[index]
