"""vLLM runner: the in-process `vllm.LLM` engine, with automatic prefix caching on by default.

Every sample is its own n=1 request carrying its own seed, and all of a batch's samples go into
one `generate` call: vLLM schedules them together and its prefix cache serves the shared prompt,
so a sample is reproducible on its own while the prompt is still evaluated about once. Sampling
is vLLM's own (not runners/sampling.py): seeds reproduce within vLLM, not across engines.

vLLM cannot read a GGUF on the CPU, so a GGUF (the embedded default included) runs from a plain
model folder (runners/model_folders.py).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Sequence
from typing import Any

from tsbench.contracts import Completion, GenerationRequest, GenerationResult, RunnerInfo
from tsbench.errors import UserError

from .model_folders import chat_prompt_ids, folder_parameters, model_folder
from .sampling import check_min_tokens, engine_stop
from .token_counting import tokenizer_count

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


# -- the runner -----------------------------------------------------------------------------------


class VLLMRunner:
    """Generates with vLLM's offline engine in this process (CPU or one GPU).

    Args:
        model: None for the embedded GGUF; a .gguf file; a local model folder.
        threads: CPU threads for vLLM's CPU backend, bound to cores 0..threads-1
            (VLLM_CPU_OMP_THREADS_BIND); default vLLM's own binding, over the cores it may use.
        prefix_caching: automatic prefix caching (vLLM's `enable_prefix_caching`).
        dtype: bf16, fp16 or fp32; default fp32 on the CPU (bf16 ran 3x slower there), else the
            model's own.
        enforce_eager: skip graph compilation; default on the CPU, where compiling took 2 minutes
            against 25 s for an eager start.
        kv_cache_gib: KV cache GiB on the CPU (VLLM_CPU_KVCACHE_SPACE); small, for shared hosts.
        gpu_memory_utilization: fraction of GPU memory vLLM may take (GPU only).
        max_model_len: context length the engine plans for.
        max_num_seqs: most sequences decoded at once.
        block_size: KV block size in tokens; default 32 on the CPU (the smallest its attention
            kernel takes; vLLM's CPU default is 128) and vLLM's own elsewhere. The prefix cache
            shares whole blocks only, so a small block lets short shared prompts hit it.
        engine_options: passed to `vllm.LLM` as they are.
    """

    def __init__(
        self,
        model: str | None = None,
        threads: int | None = None,
        prefix_caching: bool = True,
        dtype: str | None = None,
        enforce_eager: bool | None = None,
        kv_cache_gib: int = 1,
        gpu_memory_utilization: float | None = None,
        max_model_len: int = 4096,
        max_num_seqs: int = 64,
        block_size: int | None = None,
        **engine_options: Any,
    ) -> None:
        folder, self.model_id, self._sha256 = model_folder(model)
        self.folder = folder
        self.prefix_caching = prefix_caching
        # The engine core runs in this process: no worker processes to spawn (which would need an
        # `if __name__ == "__main__"` guard in every caller, pytest included) and no IPC per step.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # Stats stay on (they time each request) but their INFO lines every few seconds would
        # bury tsbench's progress bar.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, kv_cache_gib)))
        if threads:
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{threads - 1}")
        import vllm
        from vllm.platforms import current_platform

        self._vllm = vllm
        self.on_cpu = bool(current_platform.is_cpu())
        self.threads = threads or _available_cpus()
        options: dict[str, Any] = {
            "model": str(folder),
            "tokenizer": str(folder),
            "enable_prefix_caching": prefix_caching,
            "max_model_len": max_model_len,
            "max_num_seqs": max_num_seqs,
            "seed": 0,
            "disable_log_stats": False,  # keeps the prefix-cache counters that cache_stats() reads
        }
        if dtype is not None or self.on_cpu:
            name = dtype or "fp32"
            if name not in DTYPES:
                raise UserError(f"dtype '{name}' is unknown; pass one of {', '.join(DTYPES)}")
            options["dtype"] = DTYPES[name]
        eager = self.on_cpu if enforce_eager is None else enforce_eager
        options["enforce_eager"] = eager
        if block_size or self.on_cpu:
            options["block_size"] = block_size or 32
        if gpu_memory_utilization is not None and not self.on_cpu:
            options["gpu_memory_utilization"] = gpu_memory_utilization
        options.update(engine_options)
        self.llm: Any = vllm.LLM(**options)
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.tokenizer = self.llm.get_tokenizer()
        self.parameters = folder_parameters(folder)
        self.dtype = str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")
        # Tokens that never show in a sample's text: an end-of-sequence token among them is one.
        self.special_ids = {int(t) for t in getattr(self.tokenizer, "all_special_ids", [])}
        self.last_stats: dict[str, float] = {}

    def info(self) -> RunnerInfo:
        if self.on_cpu:
            device = f"cpu x{self.threads} threads"
        else:
            import torch

            device = f"cuda {torch.cuda.get_device_name()}"
        return RunnerInfo(
            model_id=self.model_id,
            parameters=self.parameters,
            engine="vllm",
            engine_version=f"vllm {self._vllm.__version__}",
            device=device,
            model_sha256=self._sha256,
            dtype=self.dtype,
            prefix_sharing=True,
        )

    def close(self) -> None:
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None
        gc.collect()

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        return chat_prompt_ids(self.tokenizer, request)

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self.prompt_tokens(request))

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone (runners/token_counting.py)."""
        return tokenizer_count(self.tokenizer, text)

    def _params(self, request: GenerationRequest, seed: int) -> Any:
        return self._vllm.SamplingParams(
            n=1,
            temperature=request.temperature,
            top_p=request.top_p if request.temperature > 0 else 1.0,
            max_tokens=request.max_tokens,
            # vLLM's own rule, which the other runners follow; it refuses a floor above the cap.
            min_tokens=min(request.min_tokens, request.max_tokens),
            stop=list(request.stop) or None,
            seed=seed,
            logprobs=request.logprobs,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        from vllm.inputs import TokensPrompt

        for request in requests:
            check_min_tokens(request)
        prompts = [self.prompt_tokens(r) for r in requests]
        for i, (request, prompt) in enumerate(zip(requests, prompts, strict=True)):
            if len(prompt) + request.max_tokens > self.max_model_len:
                raise UserError(
                    f"request {i}: prompt ({len(prompt)} tokens) + max_tokens ({request.max_tokens}) exceed "
                    f"the engine's context of {self.max_model_len}; lower --max-tokens or pass max_model_len"
                )
        jobs = [(i, s) for i, r in enumerate(requests) for s in range(r.n)]
        inputs = [TokensPrompt(prompt_token_ids=prompts[i]) for i, _ in jobs]
        params = [self._params(requests[i], requests[i].seed_for(s)) for i, s in jobs]
        before = self.cache_stats()
        started = time.monotonic()
        outputs = self.llm.generate(inputs, params, use_tqdm=False) if jobs else []
        total = time.monotonic() - started
        completions: list[list[Completion]] = [[] for _ in requests]
        computed = [0] * len(requests)
        firsts: list[list[float]] = [[] for _ in requests]
        cached_tokens = 0
        for (i, s), output in zip(jobs, outputs, strict=True):
            request = requests[i]
            cached = int(getattr(output, "num_cached_tokens", 0) or 0)
            cached_tokens += cached
            computed[i] += len(prompts[i]) - cached
            first, last = _request_times(output, started)
            if first is not None:
                firsts[i].append(min(first, total))
            completions[i].append(
                self._completion(output.outputs[0], request, request.seed_for(s), last, total)
            )
        after = self.cache_stats()
        prompt_total = sum(len(prompts[i]) for i, _ in jobs)
        self.last_stats = {
            "requests": float(len(jobs)),
            "prompt_tokens": float(prompt_total),
            "cached_prompt_tokens": float(cached_tokens),
            "prefix_hit_rate": cached_tokens / prompt_total if prompt_total else 0.0,
            "total_s": total,
        }
        if before and after:
            queries = after["queries"] - before["queries"]
            self.last_stats["engine_prefix_queries"] = queries
            self.last_stats["engine_prefix_hits"] = after["hits"] - before["hits"]
        return [
            GenerationResult(
                completions=completions[i],
                prompt_tokens=len(prompts[i]),
                prompt_tokens_computed=computed[i],
                total_s=total,
                ttft_s=min(firsts[i]) if firsts[i] else None,
            )
            for i in range(len(requests))
        ]

    def _completion(
        self, output: Any, request: GenerationRequest, seed: int, finished: float | None, total: float
    ) -> Completion:
        stop_reason, stop_string = engine_stop(output.finish_reason, output.stop_reason)
        ids = list(output.token_ids)
        # vLLM keeps the EOS (or stop) token that ended a sample in token_ids, and a logprob for it;
        # the contract counts that token but gives logprobs only for the tokens of the text.
        ended_by_token = (
            stop_reason == "eos"
            and bool(ids)
            and (ids[-1] in self.special_ids or ids[-1] == output.stop_reason)
        )
        tokens = len(ids) + int(stop_reason == "eos" and not ended_by_token)
        text_ids = ids[:-1] if ended_by_token else ids
        chosen: list[float] | None = None
        top: list[dict[str, float]] | None = None
        if request.logprobs is not None and output.logprobs is not None:
            chosen, top = [], []
            for token, position in zip(text_ids, output.logprobs, strict=False):
                chosen.append(float(position[token].logprob))
                ranked = sorted(position.items(), key=lambda item: item[1].rank or 0)
                top.append(
                    {
                        self._piece(t, entry): float(entry.logprob)
                        for t, entry in ranked
                        if entry.rank is not None and entry.rank <= request.logprobs
                    }
                )
        return Completion(
            text=output.text,
            tokens=tokens,
            stop_reason=stop_reason,
            seed=seed,
            logprobs=chosen,
            top_logprobs=top if request.logprobs else None,
            latency_s=min(finished, total) if finished is not None and finished > 0 else total,
            stop_string=stop_string,
        )

    def _piece(self, token: int, entry: Any) -> str:
        text = getattr(entry, "decoded_token", None)
        return str(text) if text is not None else str(self.tokenizer.decode([token]))

    def cache_stats(self) -> dict[str, float]:
        """The engine's cumulative prefix-cache counters: queries, hits and their ratio (hit_rate).

        Counted in tokens by vLLM's scheduler since the engine started; empty when this vLLM
        build keeps no such metrics. `last_stats` holds the figures of the latest `generate`.
        """
        try:
            metrics = self.llm.get_metrics()
        except (AttributeError, AssertionError, RuntimeError):
            return {}
        values: dict[str, float] = {}
        for metric in metrics:
            name = getattr(metric, "name", "")
            if name.endswith("prefix_cache_queries") or name.endswith("prefix_cache_queries_total"):
                values["queries"] = values.get("queries", 0.0) + float(metric.value)
            elif name.endswith("prefix_cache_hits") or name.endswith("prefix_cache_hits_total"):
                values["hits"] = values.get("hits", 0.0) + float(metric.value)
        if "queries" not in values or "hits" not in values:
            return {}
        values["hit_rate"] = values["hits"] / values["queries"] if values["queries"] else 0.0
        return values


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _request_times(output: Any, started: float) -> tuple[float | None, float | None]:
    """(first token, last token) in seconds since `started` (time.monotonic), or None where unknown.

    vLLM's per-request stats stamp tokens with the engine core's monotonic clock, which is
    system-wide, and fill them in only while stats are logged (disable_log_stats=False).
    """
    metrics = getattr(output, "metrics", None)
    first = float(getattr(metrics, "first_token_ts", 0.0) or 0.0)
    last = float(getattr(metrics, "last_token_ts", 0.0) or 0.0)
    return (first - started if first else None, last - started if last else None)
