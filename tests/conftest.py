"""Shared fixtures: one real llama.cpp engine per test session, offline hub."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def llamacpp_runner() -> Iterator[object]:
    """The embedded SmolLM2-135M on llama.cpp, loaded once for the whole session."""
    from tsbench.runners.llamacpp import LlamaCppRunner

    runner = LlamaCppRunner(parallel=16, n_ctx=4096)
    yield runner
    runner.close()


RUNNERS = ["llamacpp", "hf"]
_ENGINE_MODULES = {"llamacpp": "llama_cpp", "hf": "transformers"}
_loaded: dict[str, object] = {}


@pytest.fixture(scope="session", params=RUNNERS)
def runner_name(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    pytest.importorskip(_ENGINE_MODULES[name], reason=f"runner {name}: its engine is not installed here")
    from tsbench.plugins import runners

    if name not in runners.names():
        pytest.skip(f"runner {name} is not registered in this build")
    return name


@pytest.fixture(scope="session")
def runner(runner_name: str) -> Iterator[object]:
    """Each present runner on its default model, loaded once per session."""
    from tsbench.plugins import runners

    built = runners.get(runner_name)()
    yield built
    built.close()  # type: ignore[attr-defined]
