"""The openai runner over several servers: the endpoint pool's choices (a fake clock and probe),
and two real llama.cpp servers on loopback, one killed mid-run, one restarted and taken back."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tsbench.runners.endpoint_pool import EndpointPool, NoLiveEndpoint, parse_base_urls

from tsbench.errors import UserError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pool_of(
    n: int, answers: dict[str, bool] | None = None, revive_s: float = 5.0
) -> tuple[EndpointPool, Clock]:
    clock = Clock()
    urls = [f"http://s{i}/v1" for i in range(n)]
    return EndpointPool(urls, lambda url: (answers or {}).get(url, False), revive_s, clock), clock


def test_each_request_goes_to_the_live_endpoint_with_the_fewest_in_flight() -> None:
    pool, _ = pool_of(3)
    first, second, third = pool.acquire(), pool.acquire(), pool.acquire()
    assert [first.url, second.url, third.url] == ["http://s0/v1", "http://s1/v1", "http://s2/v1"]
    pool.release(second, completed=True)
    assert pool.acquire() is second  # now the least loaded
    assert pool.acquire() is first  # a tie between all three: the first listed
    assert pool.stats()["http://s1/v1"] == {"sent": 2, "completed": 1, "failures": 0, "live": True}


def test_a_down_endpoint_is_skipped_then_probed_after_its_wait_and_put_back_if_it_answers() -> None:
    answers = {"http://s0/v1": False}
    pool, clock = pool_of(2, answers, revive_s=5.0)
    down = pool.acquire()
    pool.release(down, completed=False)
    pool.mark_down(down)
    assert [pool.acquire().url for _ in range(3)] == ["http://s1/v1"] * 3
    clock.now += 6  # due for a probe, which fails: it stays out, for another wait
    assert pool.acquire().url == "http://s1/v1" and pool.live() == ["http://s1/v1"]
    answers["http://s0/v1"] = True
    clock.now += 3  # not yet due since the failed probe
    assert pool.live() == ["http://s1/v1"] and pool.acquire().url == "http://s1/v1"
    clock.now += 3
    assert pool.acquire().url == "http://s0/v1"  # probed, answered, least loaded
    assert pool.stats()["http://s0/v1"]["failures"] == 1


def test_no_live_endpoint_is_an_error_only_when_every_one_is_down() -> None:
    pool, clock = pool_of(2)
    for endpoint in list(pool.endpoints):
        pool.mark_down(endpoint)
    with pytest.raises(NoLiveEndpoint):
        pool.acquire()
    clock.now += 10  # probes are due, and fail
    with pytest.raises(NoLiveEndpoint):
        pool.acquire()


def test_base_url_takes_one_address_a_comma_separated_string_or_a_list() -> None:
    assert parse_base_urls("http://a:1/v1/") == ["http://a:1/v1"]
    assert parse_base_urls("http://a:1/v1, http://b:2/v1") == ["http://a:1/v1", "http://b:2/v1"]
    assert parse_base_urls(["http://a:1/v1", "http://b:2/v1"]) == ["http://a:1/v1", "http://b:2/v1"]
    with pytest.raises(UserError, match="names an address twice"):
        parse_base_urls("http://a:1/v1,http://a:1/v1")
    with pytest.raises(UserError, match="holds no address"):
        parse_base_urls(" , ")


# The real servers: llama-cpp-python's OpenAI-compatible server on the embedded model.
pytest.importorskip("llama_cpp.server", reason="llama-cpp-python's server extra is not installed")
from test_server_killed import free_port, lines, serve, start_run  # noqa: E402  (after the skip above)

PROBLEMS = 6


def run(output: Path, urls: list[str]) -> subprocess.Popen[str]:
    args = ["--runner", "openai", "--runner-arg", "base_url=" + ",".join(urls)]
    for option in ("continuation=false", "retries=1", "backoff_s=0.2", "revive_s=60"):
        args += ["--runner-arg", option]
    args += ["--task-arg", "levels=1", "--limit", str(PROBLEMS), "--strategy", "greedy,majority"]
    args += ["--budget", "1,2", "--max-tokens", "8", "--batch-sequences", "2", "--no-progress"]
    return start_run(args, output, "off")


@pytest.mark.slow
def test_a_run_over_two_servers_finishes_on_one_when_the_other_is_killed(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    servers = [serve(port, tmp_path / f"server{i}.log") for i, port in enumerate(ports)]
    urls = [f"http://127.0.0.1:{port}/v1" for port in ports]
    try:
        reference = tmp_path / "one-server"
        proc = run(reference, urls[1:])
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err

        output = tmp_path / "two-servers"
        proc = run(output, urls)
        deadline = time.time() + 120
        while time.time() < deadline and len(lines(output / "problems.jsonl")) < 1:
            time.sleep(0.01)
        servers[0].send_signal(signal.SIGKILL)  # mid-run: some problems committed, the rest not
        servers[0].wait()
        committed = len(lines(output / "problems.jsonl"))
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert 1 <= committed < PROBLEMS, "the server died after the run ended: nothing was tested"
        samples = lines(output / "samples.jsonl")
        keys = [(s["problem_id"], s["pool"], s["index"]) for s in samples]
        assert len(keys) == len(set(keys)) == PROBLEMS * 3  # greedy 1 + sampled 2 each, none twice
        # Both servers serve one model file with one thread and a seed per sample: a sample is the
        # same bytes wherever it was drawn, so the records equal the one-server run's.
        for name in ("samples.jsonl", "problems.jsonl", "grades.jsonl", "scores.jsonl"):
            assert (output / name).read_bytes() == (reference / name).read_bytes(), name
        session = json.loads((output / "sessions.jsonl").read_text().splitlines()[0])
        assert session  # the run recorded its session as usual
    finally:
        for server in servers:
            server.kill()
            server.wait()


@pytest.mark.slow
def test_a_restarted_server_is_probed_and_taken_back_into_rotation(tmp_path: Path) -> None:
    from tsbench.runners.openai_compat import OpenAIRunner

    from tsbench.contracts import GenerationRequest

    ports = [free_port(), free_port()]
    servers = [serve(port, tmp_path / f"server{i}.log") for i, port in enumerate(ports)]
    urls = [f"http://127.0.0.1:{port}/v1" for port in ports]
    request = GenerationRequest(
        (("user", "Say hi."),), n=4, temperature=0.7, max_tokens=4, seeds=(1, 2, 3, 4)
    )
    runner = OpenAIRunner(base_url=urls, retries=0, revive_s=0.5, continuation=False, concurrency=2)
    try:
        runner.generate([request])
        assert all(s["completed"] >= 1 for s in runner.endpoint_stats().values())
        servers[0].kill()
        servers[0].wait()
        runner.generate([request])  # every sample lands on the second server
        stats = runner.endpoint_stats()
        assert stats[urls[0]]["live"] is False and stats[urls[0]]["failures"] >= 1
        done_before = stats[urls[0]]["completed"]
        servers[0] = serve(ports[0], tmp_path / "server0-again.log")
        time.sleep(0.6)
        results = runner.generate([request, request])
        stats = runner.endpoint_stats()
        assert stats[urls[0]]["live"] is True and stats[urls[0]]["completed"] > done_before
        assert sum(len(r.completions) for r in results) == 8
    finally:
        runner.close()
        for server in servers:
            server.kill()
            server.wait()
