"""Any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server) through /v1/chat/completions,
or /v1/completions for plain prompts (GenerationRequest.template False).

min_tokens and template options go as vLLM's and SGLang's `min_tokens` and `chat_template_kwargs`
(llama-cpp-python reads the first, not the second); a sample that ends before min_tokens anyway
(llama-cpp-python checks stop strings below it) is an error, not a result.

Each sample is its own request carrying its own seed, so samples are reproducible one by one
where the server honours seeds. Requests run with bounded concurrency and retry with exponential
backoff on 429, 5xx and connection errors. Streams are read event by event as they arrive, so
the first content event times the first token.

How a sample ended: finish_reason "length" is "length". A finish_reason "stop" is either the EOS
token or a stop string, which OpenAI's API does not tell apart. vLLM's server adds `stop_reason`
(the matched stop string, a stop token's id, or null for EOS) and SGLang's `matched_stop`; both are
read. A server that says neither (llama-cpp-python's) gives "stop" with that stop string when the
logprob tokens it streamed run past the text into a requested stop string (llama-cpp-python
streams the token that reached the stop), and "eos" with no stop_string otherwise.

Token counts: the stream's `usage.completion_tokens` where it has one (vLLM, SGLang and OpenAI
count the EOS token there, as the contract does). llama-cpp-python's stream has no usage; its
streamed logprob entries are counted instead, plus one for an EOS. That is exact for "eos" and
"length", but llama-cpp-python cuts its stream inside a stop string, so a "stop" sample whose stop
string spans several tokens is counted short by those after the first (its unstreamed usage, which
the runner cannot have without generating again, counts them).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tsbench.contracts import Completion, GenerationRequest, GenerationResult, RunnerInfo, plain_prompt
from tsbench.errors import UserError

from .chat import template_options
from .endpoint_pool import (
    NONSENSE,
    RETRY_ERRORS,
    EndpointDown,
    NoLiveEndpoint,
    ServerError,
    Servers,
    StreamCut,
    parse_base_urls,
    same_model,
    served_models,
    server_error,
)
from .sampling import check_min_tokens, engine_stop, short_of_min_tokens, stop_streamed_past, stream_choice
from .token_counting import ServerTokenizer

BASE_URL_ENV = "TSBENCH_OPENAI_BASE_URL"
# Fields some servers add to a finished choice to say what ended it: vLLM's, SGLang's.
MATCHED_FIELDS = ("stop_reason", "matched_stop")
CHAT, PLAIN = "/chat/completions", "/completions"
# A call failing with one of these means its server is down, not that the request was wrong.
ENDPOINT_DOWN = (*RETRY_ERRORS, OSError, EndpointDown, StreamCut)


@dataclass
class _Reply:
    completion: Completion
    prompt_tokens: int
    ttft_s: float | None


class OpenAIRunner:
    """A runner over HTTP; the model lives in the server.

    Args:
        model: served model id; None takes the first one the server lists.
        base_url: e.g. http://127.0.0.1:8000/v1 (default from $TSBENCH_OPENAI_BASE_URL); several
            servers of the same model as a list or comma-separated: each sample goes to the live
            one with the fewest in flight, and a server that stops answering is left out until
            it answers again (runners/endpoint_pool.py). At least one must answer at start.
        api_key: bearer token (default $OPENAI_API_KEY, else none).
        concurrency: requests in flight at once, over all servers.
        timeout_s: per request.
        retries: attempts after the first on a retryable failure.
        parameters: the model's parameter count, for the FLOPs ledger (servers do not report it).
        continuation: whether the server extends a partial assistant message in place (vLLM and
            SGLang do, with `continue_final_message`; llama.cpp's server does not).
        completions: whether the server offers /v1/completions, which plain prompts need (vLLM,
            SGLang and llama.cpp's servers do).
        revive_s: seconds a server that stopped answering stays out before it is probed again.
    """

    def __init__(
        self,
        model: str | None = None,
        threads: int | None = None,
        base_url: str | list[str] | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 300.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        parameters: int = 0,
        continuation: bool = True,
        completions: bool = True,
        revive_s: float = 5.0,
    ) -> None:
        urls = parse_base_urls(base_url or os.environ.get(BASE_URL_ENV) or "http://127.0.0.1:8000/v1")
        self.base_url = ",".join(urls)  # what messages name: every server
        key = api_key or os.environ.get("OPENAI_API_KEY")
        self.servers = Servers(urls, key, timeout_s, retries, backoff_s, revive_s)
        self.endpoints = self.servers.pool
        self.concurrency = concurrency
        self.parameters, self.continuation, self.completions = parameters, continuation, completions
        served, failure = served_models(
            self.endpoints, lambda url: self.servers.call("GET", "/models", None, url)
        )
        if not served:
            raise UserError(
                f"no OpenAI-compatible server answers at {self.base_url} ({failure}); start one or pass "
                f"base_url (or set {BASE_URL_ENV})"
            )
        if len(urls) == 1 and model is not None and model not in served[urls[0]]:
            raise UserError(
                f"model {model} does not exist on the server at {self.base_url}; served: {', '.join(served[urls[0]])}"
            )
        self.model = same_model(model, served)
        self.pool = ThreadPoolExecutor(max_workers=concurrency)
        self._prompt_tokens: dict[str, int] = {}
        self.tokenizer = ServerTokenizer(self._post_root, self.model)

    def endpoint_stats(self) -> dict[str, dict[str, int | bool]]:
        """url -> requests sent, samples completed, failures, whether it is live now."""
        return self.endpoints.stats()

    def _prompt_length(self, request: GenerationRequest, base: str | None = None) -> int:
        """Prompt tokens from a one-token, unstreamed call, for servers whose streams omit `usage`."""
        key = repr((request.messages, request.continuation, request.template, request.template_options))
        if key not in self._prompt_tokens:
            path, body = self._body(request, 0)
            body.update(max_tokens=1, temperature=0.0)
            body.pop("min_tokens", None)
            usage = json.loads(self.servers.call("POST", path, body, base)).get("usage") or {}
            self._prompt_tokens[key] = int(usage.get("prompt_tokens", 0))
        return self._prompt_tokens[key]

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """GenerationResult.prompt_tokens of `request`, as the server counts it.

        The server's tokenizer and chat template decide, so this asks it: a one-token completion,
        whose answer is kept per prompt (one decode step the first time, nothing after).
        """
        try:
            return self._prompt_length(request)
        except (*RETRY_ERRORS, OSError, RuntimeError, *NONSENSE) as exc:
            raise server_error(self.base_url, exc) from None

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone, by the server's tokenizer (runners/token_counting.py)."""
        try:
            return self.tokenizer.count(text)
        except (*RETRY_ERRORS, OSError, *NONSENSE) as exc:
            raise server_error(self.base_url, exc) from None

    def _post_root(self, route: str, body: dict[str, Any]) -> Any:
        """POST to a route beside /v1 (servers' tokenizer routes live there)."""
        root = self.servers.any_live().removesuffix("/v1")
        return json.loads(self.servers.call("POST", root + route, body))

    def info(self) -> RunnerInfo:
        return RunnerInfo(
            model_id=self.model,
            parameters=self.parameters,
            engine="openai-compatible",
            engine_version="http",
            device=self.base_url,
            prefix_sharing=False,  # unknown: a server's prefix cache is not visible through the API
            continuation=self.continuation,
        )

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def _body(self, request: GenerationRequest, seed: int) -> tuple[str, dict[str, Any]]:
        """The route and body of one sample's request: chat, or a plain prompt's completion."""
        check_min_tokens(request)
        options = template_options(request)
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "seed": seed,
            "n": 1,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.min_tokens:  # vLLM refuses a min_tokens above max_tokens, which caps anyway
            body["min_tokens"] = min(request.min_tokens, request.max_tokens)
        if not request.template:
            if not self.completions:
                raise UserError(
                    f"a plain prompt (template=False) needs the completions endpoint, which the server at "
                    f"{self.base_url} lacks (runner option completions=false); use a server that has it"
                )
            body["prompt"] = plain_prompt(request)
            if request.logprobs is not None:
                body["logprobs"] = request.logprobs
            return PLAIN, body
        messages: list[dict[str, Any]] = list(request.message_dicts())
        body["messages"] = messages
        if options:
            body["chat_template_kwargs"] = options
        if request.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = request.logprobs
        if request.continuation and not self.continuation:
            raise UserError(
                f"the server at {self.base_url} cannot extend a partial answer (search strategies need it); "
                "use a vLLM or SGLang server, or another runner"
            )
        if request.continuation:
            # vLLM and SGLang extension: extend the assistant's partial answer in place.
            messages.append({"role": "assistant", "content": request.continuation})
            body.update(continue_final_message=True, add_generation_prompt=False)
        return CHAT, body

    def _sample(self, request: GenerationRequest, index: int) -> _Reply:
        """One sample on the least loaded live server; where there are several, one that stops
        answering is marked down and the whole sample is sent to another (a stream cut mid-way
        is thrown away, so the sample is recorded once)."""
        failure: BaseException | None = None
        while True:
            try:
                endpoint = self.endpoints.acquire()
            except NoLiveEndpoint:
                raise failure or ConnectionError("no server answers") from None
            try:
                reply = self._sample_at(endpoint.url, request, index)
            except ENDPOINT_DOWN as exc:
                self.endpoints.release(endpoint, completed=False)
                if len(self.endpoints) == 1:
                    raise
                self.endpoints.mark_down(endpoint)
                failure = exc
                continue
            except BaseException:
                self.endpoints.release(endpoint, completed=False)
                raise
            self.endpoints.release(endpoint, completed=True)
            return reply

    def _sample_at(self, base: str, request: GenerationRequest, index: int) -> _Reply:
        """One sample from the server at `base`, streamed: the first content chunk's arrival is the
        time to first token."""
        seed = request.seed_for(index)
        path, body = self._body(request, seed)
        # Logprobs always ride along: they count tokens where a stream omits `usage`.
        body.update(stream=True, stream_options={"include_usage": True})
        if path == CHAT:
            body.update(logprobs=True, top_logprobs=body.get("top_logprobs", 0))
        else:
            body.setdefault("logprobs", 0)
        started = time.perf_counter()
        ttft: float | None = None
        text: list[str] = []
        streamed: list[str] = []  # the tokens that the logprob entries name
        finish: str | None = None
        matched: tuple[Any] | None = None  # what the server said ended the sample, if it said
        usage: dict[str, Any] = {}
        logprobs: list[float] = []
        top: list[dict[str, float]] = []
        for event in self.servers.stream(path, body, base):
            usage = event.get("usage") or usage
            for choice in event.get("choices", []):
                delta, entries = stream_choice(choice)
                if delta:
                    ttft = ttft if ttft is not None else time.perf_counter() - started
                    text.append(delta)
                for token, logprob, alternatives in entries:
                    streamed.append(token)
                    logprobs.append(logprob)
                    top.append(alternatives)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                    fields = [choice[f] for f in MATCHED_FIELDS if f in choice]
                    matched = (fields[0],) if fields else None
        written = "".join(text)
        if finish is None:
            raise StreamCut(f"the stream from {base} ended without a finish_reason")
        if matched is not None or finish != "stop":
            stop_reason, stop_string = engine_stop(finish, matched[0] if matched else None)
        else:
            stop_string = stop_streamed_past(written, "".join(streamed), request.stop)
            stop_reason = "eos" if stop_string is None else "stop"
        eos = stop_reason == "eos"
        tokens = int(usage["completion_tokens"]) if "completion_tokens" in usage else len(logprobs) + eos
        if eos:  # logprobs are the text's; a server may stream one for the EOS token
            logprobs, top = logprobs[: max(0, tokens - 1)], top[: max(0, tokens - 1)]
        completion = Completion(
            text=written,
            tokens=tokens,
            stop_reason=stop_reason,
            seed=seed,
            logprobs=logprobs if request.logprobs is not None else None,
            top_logprobs=top if request.logprobs else None,
            latency_s=time.perf_counter() - started,
            stop_string=stop_string,
        )
        # Without usage a "stop" count may miss the stop string's later tokens (fewer than its length).
        slack = 0 if "completion_tokens" in usage else len(stop_string or "")
        if short_of_min_tokens(completion, request, slack):
            raise ServerError(
                f"the server at {self.base_url} ended a sample at {tokens} tokens ({stop_reason}), before "
                f"min_tokens={request.min_tokens}: it does not honour min_tokens; use a vLLM or SGLang "
                "server, or another runner"
            )
        prompt_tokens = (
            int(usage["prompt_tokens"]) if "prompt_tokens" in usage else self._prompt_length(request, base)
        )
        return _Reply(completion, prompt_tokens, ttft)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        started = time.perf_counter()
        jobs = [(r, i) for r in requests for i in range(r.n)]
        try:
            replies = list(self.pool.map(lambda job: self._sample(*job), jobs))
        except (*RETRY_ERRORS, OSError, RuntimeError, *NONSENSE) as exc:
            raise server_error(self.base_url, exc) from None
        total = time.perf_counter() - started
        results, cursor = [], 0
        for request in requests:
            mine = replies[cursor : cursor + request.n]
            cursor += request.n
            prompt_tokens = mine[0].prompt_tokens if mine else 0
            firsts = [r.ttft_s for r in mine if r.ttft_s is not None]
            results.append(
                GenerationResult(
                    completions=[r.completion for r in mine],
                    prompt_tokens=prompt_tokens,
                    prompt_tokens_computed=prompt_tokens * request.n,
                    total_s=total,
                    ttft_s=min(firsts) if firsts else None,
                )
            )
        return results
