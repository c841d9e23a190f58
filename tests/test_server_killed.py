"""An engine server killed mid-run: the openai runner against llama.cpp's server on loopback.

The run fails with one line saying the server stopped answering (exit code 2); the folder keeps
every problem committed before; once the server is back, the same command resumes and the
records equal an uninterrupted run's, no problem or sample missing or twice.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python's server extra is not installed")

PROBLEMS = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(port: int, log: Path) -> subprocess.Popen[bytes]:
    """llama-cpp-python's OpenAI-compatible server on the embedded model, once it answers."""
    from tsbench.runners.embedded import embedded_gguf

    launcher = Path(__file__).parent / "llamacpp_server.py"
    args = [sys.executable, str(launcher), "--model", str(embedded_gguf()), "--host", "127.0.0.1"]
    args += ["--port", str(port), "--n_ctx", "2048", "--model_alias", "smollm2", "--verbose", "False"]
    args += ["--interrupt_requests", "False", "--n_threads", "1"]
    with log.open("ab") as sink:
        server = subprocess.Popen(args, stdout=sink, stderr=sink)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
            return server
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"llama.cpp server exited: {log.read_text()[-2000:]}")
            time.sleep(0.3)
    server.kill()
    pytest.fail("llama.cpp server did not answer within 120 s")


def run(output: Path, port: int, cache: str) -> subprocess.Popen[str]:
    args = ["--runner", "openai", "--runner-arg", f"base_url=http://127.0.0.1:{port}/v1"]
    args += [
        "--runner-arg",
        "continuation=false",
        "--runner-arg",
        "retries=1",
        "--runner-arg",
        "backoff_s=0.2",
    ]
    args += ["--task-arg", "levels=1", "--limit", str(PROBLEMS), "--strategy", "greedy,majority"]
    args += ["--budget", "1,2", "--max-tokens", "8", "--batch-sequences", "2", "--no-progress"]
    return start_run(args, output, cache)


def start_run(args: list[str], output: Path, cache: str) -> subprocess.Popen[str]:
    """`tsbench run ARGS --output OUTPUT` in a process of its own, offline, with this cache."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TSBENCH_GENERATION_CACHE": cache}
    return subprocess.Popen(
        [sys.executable, "-m", "tsbench.cli", "run", *args, "--output", str(output)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines(file: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []


@pytest.mark.slow
def test_a_run_resumes_against_a_restarted_server_with_nothing_lost_or_repeated(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "server.log"
    server = serve(port, log)
    try:
        reference = tmp_path / "uninterrupted" / "run"
        proc = run(reference, port, "off")
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err

        output, cache = tmp_path / "killed" / "run", str(tmp_path / "cache.sqlite")
        proc = run(output, port, cache)
        deadline = time.time() + 120
        while time.time() < deadline and len(lines(output / "problems.jsonl")) < 1:
            time.sleep(0.02)
        server.send_signal(signal.SIGKILL)  # mid-run: the first problem is committed, the rest are not
        server.wait()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        said = [line for line in err.splitlines() if line.strip()]
        assert len(said) == 1 and f"the server at http://127.0.0.1:{port}/v1 stopped answering" in said[0], (
            err
        )
        assert "run the same command again to resume" in said[0]
        kept = (output / "problems.jsonl").read_text()
        done = len(kept.splitlines())
        assert 1 <= done < PROBLEMS and not (output / "metrics.json").exists()
        assert json.loads((output / "status.json").read_text())["complete"] is False

        server = serve(port, log)
        proc = run(output, port, cache)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert f"resumed: {done} of {PROBLEMS} problems were already done" in out
        assert (output / "problems.jsonl").read_text().startswith(kept)  # nothing lost, nothing rewritten
        samples = lines(output / "samples.jsonl")
        keys = [(s["problem_id"], s["pool"], s["index"]) for s in samples]
        assert len(keys) == len(set(keys)) == PROBLEMS * 3  # greedy 1 + sampled 2 each, none twice
        for name in ("samples.jsonl", "problems.jsonl", "grades.jsonl", "scores.jsonl"):
            assert (output / name).read_bytes() == (reference / name).read_bytes(), name
    finally:
        server.kill()
        server.wait()
