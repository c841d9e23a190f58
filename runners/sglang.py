"""SGLang runner: the in-process `sglang.Engine`, or a running SGLang server's native `/generate`.

The prompt is rendered here with the model's chat template and sent as token ids, so a partial
assistant answer (GenerationRequest.continuation) stays open and prompt token counts are exact.
Every sample is its own item of one batched call with its own `sampling_seed`: SGLang's radix
cache shares the prompt across them. SGLang honours `sampling_seed` only when it runs with
deterministic inference (`enable_deterministic_inference`, `--enable-deterministic-inference`
for a server); the in-process engine turns it on unless told otherwise.

SGLang ships CUDA-only wheels, so this runner is written against its documented API
(docs: sampling_params, native_api; source: srt/entrypoints/engine.py, http_server.py) and
tested here on the payload it builds and on recorded response shapes.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tsbench.contracts import Completion, GenerationRequest, GenerationResult, RunnerInfo
from tsbench.errors import UserError

from .model_folders import chat_prompt_ids, folder_parameters, model_folder
from .sampling import check_min_tokens, engine_stop, short_of_min_tokens
from .token_counting import tokenizer_count

BASE_URL_ENV = "TSBENCH_SGLANG_BASE_URL"


def sampling_params(request: GenerationRequest, seed: int) -> dict[str, Any]:
    """SGLang's sampling parameters for one sample (SamplingParams in srt/sampling)."""
    params: dict[str, Any] = {
        "max_new_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p if request.temperature > 0 else 1.0,
        "sampling_seed": seed,
    }
    if request.stop:
        params["stop"] = list(request.stop)
    if request.min_tokens:
        # SGLang bans its stop tokens below it but checks stop strings all along (Req.check_finished):
        # results_from refuses a sample that a stop string ended short of it.
        params["min_new_tokens"] = min(request.min_tokens, request.max_tokens)  # max_tokens caps it
    return params


def generate_payload(requests: Sequence[GenerationRequest], prompts: Sequence[list[int]]) -> dict[str, Any]:
    """The body of one `/generate` call (the keyword arguments of `Engine.generate`) for a batch.

    Each sample is its own batch item, in request order then sample order.

    Args:
        requests: the batch.
        prompts: each request's prompt token ids.

    Returns:
        A JSON-ready dict: `input_ids`, `sampling_params`, `return_logprob`, `top_logprobs_num`,
        one entry per sample.
    """
    items = [(r, prompts[i], r.seed_for(s)) for i, r in enumerate(requests) for s in range(r.n)]
    return {
        "input_ids": [list(prompt) for _, prompt, _ in items],
        "sampling_params": [sampling_params(r, seed) for r, _, seed in items],
        "return_logprob": [r.logprobs is not None for r, _, _ in items],
        "top_logprobs_num": [r.logprobs or 0 for r, _, _ in items],
    }


def parse_item(
    item: dict[str, Any], request: GenerationRequest, seed: int, piece: Callable[[int], str] | None = None
) -> Completion:
    """One sample of a `/generate` (or `Engine.generate`) answer as a Completion.

    Args:
        item: {"text", "output_ids"?, "meta_info": {...}} as SGLang returns per batch item.
        request: the request it answers.
        seed: the sample's seed.
        piece: token id -> text, for logprob entries that carry no text (the engine's default).
    """
    meta = item.get("meta_info") or {}
    finish = meta.get("finish_reason") or {}
    stop_reason, stop_string = engine_stop(finish.get("type"), finish.get("matched"))
    chosen = [entry[0] for entry in meta.get("output_token_logprobs") or []]
    ids = list(item.get("output_ids") or [entry[1] for entry in meta.get("output_token_logprobs") or []])
    tops = list(meta.get("output_top_logprobs") or [])
    # SGLang counts the token that ended a sample (EOS or a stop token id, its `matched`) in
    # completion_tokens and gives it a logprob, as the contract counts it; logprobs stop at the text.
    ended_by_token = stop_reason == "eos" and bool(ids) and ids[-1] == finish.get("matched")
    tokens = int(meta.get("completion_tokens", len(ids) + int(stop_reason == "eos" and not ended_by_token)))
    if ended_by_token:
        chosen, tops = chosen[: len(ids) - 1], tops[: len(ids) - 1]
    top: list[dict[str, float]] = []
    for position in tops:
        alternatives: dict[str, float] = {}
        for entry in position or []:
            text = (
                entry[2]
                if len(entry) > 2 and entry[2] is not None
                else (piece(entry[1]) if piece else str(entry[1]))
            )
            alternatives[str(text)] = float(entry[0])
        top.append(alternatives)
    return Completion(
        text=str(item.get("text", "")),
        tokens=tokens,
        stop_reason=stop_reason,
        seed=seed,
        logprobs=[float(lp) for lp in chosen] if request.logprobs is not None else None,
        top_logprobs=top if request.logprobs else None,
        latency_s=float(meta.get("e2e_latency", 0.0)),
        stop_string=stop_string,
    )


def results_from(
    requests: Sequence[GenerationRequest],
    prompts: Sequence[list[int]],
    answer: list[dict[str, Any]],
    total_s: float,
    piece: Callable[[int], str] | None = None,
) -> list[GenerationResult]:
    """Per-request results from a batch answer whose items follow generate_payload's order."""
    expected = sum(r.n for r in requests)
    if len(answer) != expected:
        raise RuntimeError(f"SGLang answered {len(answer)} items for {expected} samples")
    results, cursor = [], 0
    for i, request in enumerate(requests):
        mine = answer[cursor : cursor + request.n]
        cursor += request.n
        completions = [parse_item(item, request, request.seed_for(s), piece) for s, item in enumerate(mine)]
        short = [c for c in completions if short_of_min_tokens(c, request)]
        if short:
            raise UserError(
                f"SGLang ended a sample at {short[0].tokens} tokens ({short[0].stop_reason}) before "
                f"min_tokens={request.min_tokens}: it checks stop strings below min_new_tokens; drop the "
                "stop strings, or use the vllm, hf or llamacpp runner"
            )
        computed = 0
        for item in mine:
            meta = item.get("meta_info") or {}
            computed += int(meta.get("prompt_tokens", len(prompts[i]))) - int(meta.get("cached_tokens", 0))
        results.append(
            GenerationResult(
                completions=completions,
                prompt_tokens=len(prompts[i]),
                prompt_tokens_computed=computed,
                total_s=total_s,
                ttft_s=None,  # not reported by an unstreamed answer
            )
        )
    return results


class SGLangRunner:
    """Generates with SGLang, in this process or through a server's native API.

    Args:
        model: engine: None for the embedded GGUF, a .gguf file or a local model folder. Server:
            the served model's path as the server reports it (checked), or None for whatever it serves.
        base_url: a running server (e.g. http://127.0.0.1:30000); default $TSBENCH_SGLANG_BASE_URL;
            neither means an in-process engine.
        tokenizer: folder of the tokenizer whose chat template renders prompts; default the model
            folder (a server's model path must then be readable here).
        parameters: the model's parameter count when the model folder is not readable here.
        deterministic: run the engine with deterministic inference, which `sampling_seed` needs.
        timeout_s: per HTTP call.
        engine_options: passed to `sglang.Engine` (its ServerArgs) as they are.
    """

    def __init__(
        self,
        model: str | None = None,
        threads: int | None = None,
        base_url: str | None = None,
        tokenizer: str | None = None,
        parameters: int = 0,
        deterministic: bool = True,
        timeout_s: float = 600.0,
        **engine_options: Any,
    ) -> None:
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or "").rstrip("/") or None
        self.timeout_s = timeout_s
        self.engine: Any = None
        self._sha256: str | None = None
        if self.base_url is not None:
            info = self._server_info()
            served = str(info.get("model_path", ""))
            if model is not None and model != served:
                raise UserError(
                    f"model {model} does not exist on the SGLang server at {self.base_url}; it serves {served}"
                )
            self.model_id = Path(served).name or served
            folder = Path(tokenizer or served).expanduser()
            weights: Path | None = Path(served) if served else None
            self.version = "http"
        else:
            folder, self.model_id, self._sha256 = model_folder(model)
            import sglang

            self.version = str(getattr(sglang, "__version__", "?"))
            options: dict[str, Any] = {"model_path": str(folder)}
            if deterministic:
                options["enable_deterministic_inference"] = True
            options.update(engine_options)
            self.engine = sglang.Engine(**options)
            weights = folder
            folder = Path(tokenizer).expanduser() if tokenizer else folder
        self.tokenizer = _load_tokenizer(folder)
        # Counted from the weights' own headers where they are readable here, else unknown (0): a
        # tokenizer folder given instead may hold another model's weights.
        self.parameters = parameters or (folder_parameters(weights) if weights and weights.is_dir() else 0)
        server_args = getattr(self.engine, "server_args", None)
        dtype = str(getattr(server_args, "dtype", "") or "")
        self.dtype = "" if dtype == "auto" else dtype
        self._pieces: dict[int, str] = {}

    def _call(self, path: str, body: dict[str, Any] | None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            data=data,
            headers={"Content-Type": "application/json"},
            method="POST" if body is not None else "GET",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise RuntimeError(f"SGLang {path} failed: HTTP {exc.code}: {detail}") from None

    def _server_info(self) -> dict[str, Any]:
        try:
            return dict(self._call("/get_model_info", None))
        except OSError as exc:
            raise UserError(
                f"no SGLang server answers at {self.base_url} ({exc}); start one "
                f"(python -m sglang.launch_server --model-path M --enable-deterministic-inference) "
                f"or pass base_url (or set {BASE_URL_ENV})"
            ) from None

    def info(self) -> RunnerInfo:
        return RunnerInfo(
            model_id=self.model_id,
            parameters=self.parameters,
            engine="sglang",
            engine_version=f"sglang {self.version}",
            device=self.base_url or "in-process",
            model_sha256=self._sha256,
            dtype=self.dtype,  # "" when the engine picks it from the model ("auto") or a server runs it
            prefix_sharing=True,  # the radix cache shares a prompt across samples
        )

    def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None

    def _piece(self, token: int) -> str:
        if token not in self._pieces:
            self._pieces[token] = str(self.tokenizer.decode([token]))
        return self._pieces[token]

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """GenerationResult.prompt_tokens of `request`: the prompt goes to SGLang as these token ids."""
        return len(chat_prompt_ids(self.tokenizer, request))

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone (runners/token_counting.py), by the tokenizer that renders prompts."""
        return tokenizer_count(self.tokenizer, text)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        for request in requests:
            check_min_tokens(request)
        prompts = [chat_prompt_ids(self.tokenizer, r) for r in requests]
        payload = generate_payload(requests, prompts)
        started = time.perf_counter()
        if self.engine is not None:
            answer = self.engine.generate(**payload)
        else:
            answer = self._call("/generate", {**payload, "return_text_in_logprobs": True})
        total = time.perf_counter() - started
        items = [answer] if isinstance(answer, dict) else list(answer)  # a lone item may come unwrapped
        return results_from(requests, prompts, items, total, self._piece)


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"tokenizer in {folder} could not be loaded ({exc}); pass tokenizer=FOLDER with the model's tokenizer"
        ) from None
