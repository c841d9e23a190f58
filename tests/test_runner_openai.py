"""The openai runner against a scripted OpenAI-compatible server on loopback (no model, no engine).

The server streams what each test scripts, with delays, in the shapes vLLM, SGLang and
llama-cpp-python send: the runner must read the stream as it arrives (time to first token), say
how each sample ended, count its tokens, and retry a stream only before its first event.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tsbench.runners.openai_compat import OpenAIRunner

from tsbench.contracts import GenerationRequest, plain_prompt
from tsbench.errors import UserError

ASK = (("user", "What is 7 * 9?"),)
SERVER_LIFETIME_S = 60  # the server shuts itself down after this, whatever the tests do


class _Script:
    """What the server answers next; each test sets it."""

    events: list[tuple[float, dict[str, Any]]] = []  # (delay before it, event)
    done = True  # end the stream with [DONE]
    failures = 0  # answer this many POSTs with HTTP 503 first
    bodies: list[dict[str, Any]] = []
    paths: list[str] = []
    # Tokenizer routes the server answers, each with the token ids it gives every text.
    tokenizers: dict[str, Any] = {}


class _Handler(BaseHTTPRequestHandler):
    def _json(self, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._json({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Script.bodies.append(body)
        _Script.paths.append(self.path)
        if self.path in ("/tokenize", "/extras/tokenize"):
            if self.path not in _Script.tokenizers:
                self.send_error(404, "Not Found")
                return
            tokens = _Script.tokenizers[self.path](body.get("prompt", body.get("input", "")))
            self._json(
                {"tokens": tokens} if self.path != "/tokenize" else {"count": len(tokens), "tokens": tokens}
            )
            return
        if _Script.failures > 0:
            _Script.failures -= 1
            self.send_error(503, "busy")
            return
        if not body.get("stream"):
            message = {"role": "assistant", "content": "6"}
            choice = {"index": 0, "message": message, "finish_reason": "length"}
            self._json({"choices": [choice], "usage": {"prompt_tokens": 17, "completion_tokens": 1}})
            return
        self.send_response(200)  # HTTP/1.0: the stream ends when the connection closes
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for delay, event in _Script.events:
            time.sleep(delay)
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            self.wfile.flush()
        if _Script.done:
            self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    deadline = threading.Timer(SERVER_LIFETIME_S, httpd.shutdown)
    deadline.daemon = True
    deadline.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    deadline.cancel()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def runner(server: str) -> Iterator[OpenAIRunner]:
    _Script.events, _Script.done, _Script.failures, _Script.bodies = [], True, 0, []
    _Script.paths, _Script.tokenizers = [], {}
    built = OpenAIRunner(base_url=server, retries=2, backoff_s=0.01, timeout_s=10)
    yield built
    built.close()


def chunk(
    content: str | None = None,
    finish: str | None = None,
    logprobs: list[tuple[str, float]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """One chat.completion.chunk with a single choice."""
    choice: dict[str, Any] = {"index": 0, "delta": {} if content is None else {"content": content}}
    choice["finish_reason"] = finish
    if logprobs:
        entries = [
            {"token": t, "logprob": lp, "top_logprobs": [{"token": t, "logprob": lp}]} for t, lp in logprobs
        ]
        choice["logprobs"] = {"content": entries}
    choice.update(fields)
    return {"object": "chat.completion.chunk", "choices": [choice]}


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}


def test_time_to_first_token_is_read_from_the_open_stream(runner: OpenAIRunner) -> None:
    _Script.events = [
        (0.0, chunk(content="")),  # the role chunk: no token yet
        (0.3, chunk(content="6")),
        (0.3, chunk(content="3")),
        (0.3, chunk(content=".")),
        (0.0, chunk(finish="stop", stop_reason=None)),
        (0.0, usage(12, 4)),
    ]
    (result,) = runner.generate([GenerationRequest(ASK)])
    completion = result.completions[0]
    assert completion.text == "63."
    assert result.ttft_s is not None and 0.25 < result.ttft_s < 0.6, result
    assert 0.85 < result.total_s < 1.6 and result.total_s - result.ttft_s > 0.5, result
    assert 0.85 < completion.latency_s <= result.total_s
    assert (completion.stop_reason, completion.tokens, result.prompt_tokens) == ("eos", 4, 12)
    body = _Script.bodies[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


LOGPROBS = [("The", -0.1), (" answer", -0.2)]


@pytest.mark.parametrize(
    ("events", "stop", "expected"),
    [
        # vLLM: `stop_reason` is the matched stop string, a stop token's id, or null for EOS; its
        # usage counts the EOS token, and it may stream a logprob for it.
        (
            [chunk("The answer", logprobs=LOGPROBS), chunk(finish="stop", stop_reason=" is")],
            (" is",),
            ("stop", " is", 5, 2),
        ),
        (
            [chunk("The answer", logprobs=[*LOGPROBS, ("", -0.3)]), chunk(finish="stop", stop_reason=None)],
            (),
            ("eos", None, 3, 2),
        ),
        (
            [chunk("The answer", logprobs=LOGPROBS), chunk(finish="stop", stop_reason=2)],
            (),
            ("eos", None, 3, 2),
        ),
        ([chunk("The answer", logprobs=LOGPROBS), chunk(finish="length")], (), ("length", None, 3, 2)),
        # SGLang says it in `matched_stop`.
        (
            [chunk("The answer", logprobs=LOGPROBS), chunk(finish="stop", matched_stop="END")],
            ("END",),
            ("stop", "END", 5, 2),
        ),
    ],
)
def test_a_server_that_says_what_ended_the_sample(
    runner: OpenAIRunner, events: list[dict[str, Any]], stop: tuple[str, ...], expected: tuple[Any, ...]
) -> None:
    _Script.events = [(0.0, e) for e in events] + [(0.0, usage(9, expected[2]))]
    (result,) = runner.generate([GenerationRequest(ASK, stop=stop, logprobs=0)])
    c = result.completions[0]
    assert c.text == "The answer"
    assert (c.stop_reason, c.stop_string, c.tokens, len(c.logprobs or [])) == expected


def test_a_silent_server_stop_string_is_found_in_the_tokens_streamed_past_the_text(
    runner: OpenAIRunner,
) -> None:
    # llama-cpp-python's shape: no usage, no stop_reason; the token that reached the stop string
    # comes with an empty delta.
    _Script.events = [
        (0.0, chunk("The", logprobs=[("The", -0.1)])),
        (0.0, chunk(" answer", logprobs=[(" answer", -0.2)])),
        (0.0, chunk("", logprobs=[(" is", -0.3)])),
        (0.0, chunk(finish="stop")),
    ]
    request = GenerationRequest(ASK, stop=("never", " is 4"), logprobs=0)
    (result,) = runner.generate([request])
    c = result.completions[0]
    assert (c.text, c.stop_reason, c.stop_string, c.tokens) == ("The answer", "stop", " is 4", 3)
    assert result.prompt_tokens == 17  # from the one-token call, as the stream has no usage
    # The same stream with no stop string running past the text ended with the EOS token.
    _Script.events = _Script.events[:2] + [(0.0, chunk(finish="stop"))]
    (result,) = runner.generate([request])
    c = result.completions[0]
    assert (c.text, c.stop_reason, c.stop_string, c.tokens) == ("The answer", "eos", None, 3)
    assert c.logprobs == [-0.1, -0.2]


def test_an_aborted_sample_or_a_stream_without_an_ending_is_an_error(runner: OpenAIRunner) -> None:
    _Script.events = [(0.0, chunk("The")), (0.0, chunk(finish="abort")), (0.0, usage(9, 1))]
    with pytest.raises(RuntimeError, match="finish reason 'abort'"):
        runner.generate([GenerationRequest(ASK)])
    _Script.events, _Script.done = [(0.0, chunk("The"))], False
    posts = len(_Script.bodies)
    with pytest.raises(RuntimeError, match="ended without a finish_reason"):
        runner.generate([GenerationRequest(ASK)])
    assert len(_Script.bodies) == posts + 1  # events had arrived: not retried


def test_a_stream_is_retried_when_it_fails_before_its_first_event(runner: OpenAIRunner) -> None:
    _Script.events = [(0.0, chunk("63")), (0.0, chunk(finish="length")), (0.0, usage(9, 1))]
    _Script.failures = 2
    (result,) = runner.generate([GenerationRequest(ASK, max_tokens=1)])
    assert result.completions[0].text == "63" and len(_Script.bodies) == 3
    _Script.failures = 3  # one more than the retries
    with pytest.raises(RuntimeError, match="HTTP 503"):
        runner.generate([GenerationRequest(ASK, max_tokens=1)])


def test_count_prompt_tokens_asks_the_server_once_per_prompt(runner: OpenAIRunner) -> None:
    request = GenerationRequest(ASK)
    assert runner.count_prompt_tokens(request) == 17
    assert runner.count_prompt_tokens(request) == 17
    posts = [b for b in _Script.bodies if not b.get("stream")]
    assert len(posts) == 1 and posts[0]["max_tokens"] == 1


def test_info_reports_no_parameters_or_dtype_it_was_not_told(server: str) -> None:
    plain = OpenAIRunner(base_url=server)
    told = OpenAIRunner(base_url=server, parameters=135_000_000)
    try:
        assert (plain.info().parameters, plain.info().dtype) == (0, "")
        assert told.info().parameters == 135_000_000
    finally:
        plain.close()
        told.close()


# -- min_tokens, template options, plain prompts, token counting -----------------------------------


def test_min_tokens_and_template_options_ride_in_the_chat_body(runner: OpenAIRunner) -> None:
    _Script.events = [(0.0, chunk("6")), (0.0, chunk(finish="length")), (0.0, usage(9, 3))]
    runner.generate([GenerationRequest(ASK, max_tokens=3)])
    assert not {"min_tokens", "chat_template_kwargs"} & set(_Script.bodies[-1])  # unchanged by default
    options = (("enable_thinking", False),)
    runner.generate([GenerationRequest(ASK, max_tokens=3, min_tokens=2, template_options=options)])
    body = _Script.bodies[-1]
    assert _Script.paths[-1] == "/v1/chat/completions"
    assert (body["min_tokens"], body["chat_template_kwargs"]) == (2, {"enable_thinking": False})
    runner.generate([GenerationRequest(ASK, max_tokens=3, min_tokens=50)])
    assert _Script.bodies[-1]["min_tokens"] == 3  # max_tokens caps it; vLLM refuses a floor above


def completion_chunk(
    text: str, finish: str | None = None, logprobs: list[tuple[str, float]] | None = None
) -> dict[str, Any]:
    """One text_completion chunk, legacy logprobs as vLLM and llama-cpp-python stream them."""
    choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": finish}
    if logprobs:
        choice["logprobs"] = {
            "tokens": [t for t, _ in logprobs],
            "token_logprobs": [lp for _, lp in logprobs],
            "top_logprobs": [{t: lp} for t, lp in logprobs],
        }
    return {"object": "text_completion", "choices": [choice]}


def test_a_plain_prompt_goes_to_the_completions_endpoint(server: str) -> None:
    # A server that cannot continue a chat message still extends a plain prompt's continuation.
    runner = OpenAIRunner(base_url=server, retries=0, timeout_s=10, continuation=False)
    _Script.events = [
        (0.0, completion_chunk("6", logprobs=[("6", -0.1)])),
        (0.0, completion_chunk("3", logprobs=[("3", -0.2)])),
        (0.0, completion_chunk("", finish="stop", logprobs=[("", -0.3)])),
        (0.0, usage(11, 3)),
    ]
    request = GenerationRequest(ASK, template=False, continuation="7 * 9 = ", logprobs=1)
    (result,) = runner.generate([request])
    body = _Script.bodies[-1]
    assert _Script.paths[-1] == "/v1/completions" and "messages" not in body
    assert body["prompt"] == plain_prompt(request) == "What is 7 * 9?\n\n7 * 9 = "
    assert body["logprobs"] == 1 and body["stream"] is True
    c = result.completions[0]
    assert (c.text, c.stop_reason, c.tokens, c.logprobs) == ("63", "eos", 3, [-0.1, -0.2])
    assert c.top_logprobs == [{"6": -0.1}, {"3": -0.2}] and result.prompt_tokens == 11
    assert runner.count_prompt_tokens(request) == 17  # from a one-token call to the same endpoint
    assert _Script.paths[-1] == "/v1/completions" and _Script.bodies[-1]["max_tokens"] == 1
    runner.close()
    without = OpenAIRunner(base_url=server, completions=False)
    try:
        with pytest.raises(UserError, match="needs the completions endpoint"):
            without.generate([request])
        with pytest.raises(UserError, match="template=False"):
            without.generate([replace(request, template_options=(("enable_thinking", True),))])
    finally:
        without.close()


def test_a_sample_ended_before_min_tokens_is_refused(runner: OpenAIRunner) -> None:
    # A server that ignores min_tokens: usage says 3 tokens, ended by EOS.
    _Script.events = [(0.0, chunk("63.")), (0.0, chunk(finish="stop", stop_reason=None)), (0.0, usage(9, 3))]
    with pytest.raises(UserError, match="ended a sample at 3 tokens .eos., before min_tokens=10"):
        runner.generate([GenerationRequest(ASK, min_tokens=10)])
    (result,) = runner.generate([GenerationRequest(ASK, min_tokens=3)])
    assert result.completions[0].tokens == 3
    # llama-cpp-python's shape (no usage): a stop string ended it; its count may miss up to the
    # stop string's length, so only a count short by more than that proves it short.
    _Script.events = [
        (0.0, chunk("The", logprobs=[("The", -0.1)])),
        (0.0, chunk("", logprobs=[("\n", -0.3)])),
        (0.0, chunk(finish="stop")),
    ]
    with pytest.raises(UserError, match="before min_tokens=4"):
        runner.generate([GenerationRequest(ASK, stop=("\n",), min_tokens=4)])
    (result,) = runner.generate([GenerationRequest(ASK, stop=("\n",), min_tokens=2)])
    assert result.completions[0].stop_reason == "stop"


def test_count_tokens_asks_the_servers_tokenizer(server: str) -> None:
    words = lambda text: [100 + k for k, _ in enumerate(text.split())]  # noqa: E731 (one token a word)
    for routes in ({"/tokenize": words}, {"/extras/tokenize": lambda text: [1, *words(text)]}):
        _Script.tokenizers = routes
        runner = OpenAIRunner(base_url=server, retries=0)
        try:
            assert runner.count_tokens("hello world") == 2 and runner.count_tokens("") == 0
            assert runner.count_tokens("one two three") == 3
            asked = [b for b, p in zip(_Script.bodies, _Script.paths, strict=True) if p == "/tokenize"]
            assert all(b["add_special_tokens"] is False for b in asked)
        finally:
            runner.close()
    _Script.tokenizers = {}
    runner = OpenAIRunner(base_url=server, retries=0)
    try:
        with pytest.raises(UserError, match="answers no tokenizer route"):
            runner.count_tokens("hello")
    finally:
        runner.close()
