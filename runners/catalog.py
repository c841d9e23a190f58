"""Registers the built-in runners; each engine is imported only when its runner is built."""

from __future__ import annotations

from typing import Any

from tsbench.contracts import Runner
from tsbench.plugins import runners


@runners.register("llamacpp", "llama.cpp via llama-cpp-python; the embedded CPU default (SmolLM2-135M GGUF)")
def llamacpp(model: str | None = None, threads: int | None = None, **options: Any) -> Runner:
    from tsbench.runners.llamacpp import LlamaCppRunner

    return LlamaCppRunner(model=model, threads=threads, **options)


@runners.register(
    "hf", "HuggingFace transformers on CPU or CUDA; any local model folder or the embedded GGUF"
)
def hf(model: str | None = None, threads: int | None = None, **options: Any) -> Runner:
    from tsbench.runners.hf import HFRunner

    return HFRunner(model=model, threads=threads, **options)


@runners.register("openai", "any OpenAI-compatible server (vLLM, SGLang, llama.cpp server) over HTTP")
def openai(model: str | None = None, threads: int | None = None, **options: Any) -> Runner:
    from tsbench.runners.openai_compat import OpenAIRunner

    return OpenAIRunner(model=model, **options)


@runners.register(
    "vllm",
    "vLLM's in-process engine (CPU or GPU) with automatic prefix caching; the embedded model by default",
)
def vllm(model: str | None = None, threads: int | None = None, **options: Any) -> Runner:
    from tsbench.runners.vllm import VLLMRunner

    return VLLMRunner(model=model, threads=threads, **options)


@runners.register(
    "sglang", "SGLang: in-process sglang.Engine, or a running server's native /generate (base_url=...)"
)
def sglang(model: str | None = None, threads: int | None = None, **options: Any) -> Runner:
    from tsbench.runners.sglang import SGLangRunner

    return SGLangRunner(model=model, threads=threads, **options)
