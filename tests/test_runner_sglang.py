"""The sglang runner without SGLang: the requests it builds and how it reads SGLang's answers.

SGLang ships CUDA-only wheels and cannot run on this machine, so the answers below are recorded
shapes: each item is laid out as SGLang's `/generate` (and `Engine.generate`) returns it, per its
native API docs and `io_struct.py` (`text`, `output_ids`, and `meta_info` with `finish_reason`
{type, matched | length}, `prompt_tokens`, `completion_tokens`, `cached_tokens`, `e2e_latency`,
and with `return_logprob` `output_token_logprobs` / `output_top_logprobs` entries of
[logprob, token id, token text or null]). The numbers in them are made up.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from tsbench.runners.sglang import generate_payload, parse_item, results_from

from tsbench.contracts import GenerationRequest
from tsbench.errors import UserError

ASK = (("user", "What is 7 * 9?"),)


def _item(
    text: str,
    ids: list[int],
    finish: dict[str, Any],
    prompt_tokens: int = 30,
    cached: int = 0,
    top: int = 0,
) -> dict[str, Any]:
    """One recorded-shape batch item of SGLang's answer."""
    meta: dict[str, Any] = {
        "id": "5f0c2a9e8d3b4c1f9a7e6d5c4b3a2910",
        "finish_reason": finish,
        "prompt_tokens": prompt_tokens,
        "weight_version": "default",
        "completion_tokens": len(ids),
        "cached_tokens": cached,
        "e2e_latency": 0.25,
    }
    if top:
        meta["input_token_logprobs"] = [[None, 1, None]]
        meta["output_token_logprobs"] = [[-0.1 * (k + 1), t, None] for k, t in enumerate(ids)]
        meta["output_top_logprobs"] = [
            [[-0.1 * (k + 1), t, None]] + [[-5.0 - j, 900 + j, None] for j in range(top - 1)]
            for k, t in enumerate(ids)
        ]
    return {"text": text, "output_ids": ids, "meta_info": meta}


def test_payload_has_one_item_per_sample_with_its_own_seed() -> None:
    a = GenerationRequest(
        ASK, n=3, temperature=0.8, top_p=0.9, max_tokens=20, seeds=(5, 6, 7), stop=("\n\n",)
    )
    b = GenerationRequest(ASK, n=1, temperature=0.0, max_tokens=8, logprobs=2)
    payload = generate_payload([a, b], [[1, 2, 3], [1, 2, 3, 4]])
    assert payload["input_ids"] == [[1, 2, 3]] * 3 + [[1, 2, 3, 4]]
    assert [p["sampling_seed"] for p in payload["sampling_params"]] == [5, 6, 7, 0]
    assert payload["sampling_params"][0] == {
        "max_new_tokens": 20,
        "temperature": 0.8,
        "top_p": 0.9,
        "sampling_seed": 5,
        "stop": ["\n\n"],
    }
    assert payload["sampling_params"][3]["temperature"] == 0.0 and "stop" not in payload["sampling_params"][3]
    assert payload["return_logprob"] == [False, False, False, True]
    assert payload["top_logprobs_num"] == [0, 0, 0, 2]
    json.dumps(payload)  # goes over HTTP as it is


def test_an_end_of_sequence_token_is_counted_without_a_logprob() -> None:
    # Stopped by EOS: `matched` is the token id, and SGLang counts that token in the output, as the
    # contract does; logprobs are the text's tokens only.
    request = GenerationRequest(ASK, logprobs=2)
    item = _item(" 63", [220, 3882, 2], {"type": "stop", "matched": 2}, top=2)
    completion = parse_item(item, request, seed=0, piece=lambda t: f"<{t}>")
    assert completion.text == " 63" and completion.finish_reason == "stop"
    assert (completion.stop_reason, completion.stop_string) == ("eos", None)
    assert completion.tokens == 3
    assert completion.logprobs == pytest.approx([-0.1, -0.2])
    assert completion.top_logprobs == [{"<220>": -0.1, "<900>": -5.0}, {"<3882>": -0.2, "<900>": -5.0}]
    assert completion.latency_s == 0.25


def test_stop_string_and_length_finishes() -> None:
    request = GenerationRequest(ASK, stop=("\n\n",))
    stopped = parse_item(_item("7 * 9", [22, 338, 24], {"type": "stop", "matched": "\n\n"}), request, 1)
    assert (stopped.stop_reason, stopped.stop_string, stopped.tokens, stopped.logprobs) == (
        "stop",
        "\n\n",
        3,
        None,
    )
    assert stopped.finish_reason == "stop" and stopped.top_logprobs is None
    cut = parse_item(_item("Let", [4157], {"type": "length", "length": 1}), request, 2)
    assert (cut.stop_reason, cut.stop_string, cut.tokens, cut.seed) == ("length", None, 1, 2)


def test_an_aborted_sample_is_an_error() -> None:
    aborted = _item("", [], {"type": "abort", "message": "client disconnected"})
    with pytest.raises(RuntimeError, match="finish reason 'abort'"):
        parse_item(aborted, GenerationRequest(ASK), 0)


def test_results_follow_request_order_and_count_cached_prompt_tokens() -> None:
    a = GenerationRequest(ASK, n=2, temperature=1.0, seeds=(3, 4))
    b = GenerationRequest(ASK, n=1)
    answer = [
        _item("a", [64], {"type": "length", "length": 1}, prompt_tokens=30, cached=0),
        _item("b", [65], {"type": "length", "length": 1}, prompt_tokens=30, cached=29),
        _item("c", [66], {"type": "length", "length": 1}, prompt_tokens=31, cached=16),
    ]
    first, second = results_from([a, b], [[0] * 30, [0] * 31], answer, total_s=1.5)
    assert [c.text for c in first.completions] == ["a", "b"] and [c.seed for c in first.completions] == [3, 4]
    assert (first.prompt_tokens, first.prompt_tokens_computed) == (30, 31)
    assert (second.prompt_tokens, second.prompt_tokens_computed, second.total_s) == (31, 15, 1.5)
    with pytest.raises(RuntimeError, match="answered 2 items for 3 samples"):
        results_from([a, b], [[0] * 30, [0] * 31], answer[:2], total_s=1.0)


class _RecordedServer(BaseHTTPRequestHandler):
    """Answers SGLang's native routes with recorded shapes, for the HTTP path of the runner."""

    model_path = ""
    bodies: list[dict[str, Any]] = []

    def _send(self, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._send({"model_path": self.model_path, "tokenizer_path": self.model_path, "is_generation": True})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        n = len(body["input_ids"])
        self._send(
            [
                _item(f"sample {k}", [100 + k, 2], {"type": "stop", "matched": 2}, len(body["input_ids"][k]))
                for k in range(n)
            ]
        )

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def recorded_server() -> Iterator[str]:
    pytest.importorskip("transformers", reason="the sglang runner renders chat templates with transformers")
    pytest.importorskip("gguf", reason="the embedded model's tokenizer is read from its GGUF through gguf")
    from tsbench.runners.model_folders import model_folder

    _RecordedServer.model_path = str(model_folder(None)[0])
    server = HTTPServer(("127.0.0.1", 0), _RecordedServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_path_sends_token_ids_and_reads_the_answer(recorded_server: str) -> None:
    from tsbench.runners.sglang import SGLangRunner

    runner = SGLangRunner(base_url=recorded_server)
    request = GenerationRequest(ASK, n=2, temperature=0.7, seeds=(8, 9), continuation="7 * 9 = ")
    (result,) = runner.generate([request])
    body = _RecordedServer.bodies[-1]
    assert body["return_text_in_logprobs"] is True
    prompt = runner.tokenizer.decode(body["input_ids"][0])
    assert prompt.endswith("assistant\n7 * 9 = ") and "What is 7 * 9?" in prompt
    assert [c.text for c in result.completions] == ["sample 0", "sample 1"]
    assert all((c.tokens, c.stop_reason) == (2, "eos") for c in result.completions)
    assert result.prompt_tokens == len(body["input_ids"][0]) == runner.count_prompt_tokens(request)
    info = runner.info()
    assert info.engine == "sglang" and info.device == recorded_server and info.dtype == ""
    # Read from the served model's own weights, which this machine can see here.
    assert 130_000_000 < info.parameters < 140_000_000
    runner.close()


def test_http_parameters_are_zero_when_the_served_weights_are_not_readable(
    recorded_server: str, tmp_path: Path
) -> None:
    from tsbench.runners.sglang import SGLangRunner

    tokenizer = _RecordedServer.model_path
    _RecordedServer.model_path = str(tmp_path / "elsewhere" / "model")
    try:
        # The tokenizer folder holds weights too, but they need not be the served model's.
        runner = SGLangRunner(base_url=recorded_server, tokenizer=tokenizer)
        assert runner.info().parameters == 0
        assert (
            SGLangRunner(base_url=recorded_server, tokenizer=tokenizer, parameters=7).info().parameters == 7
        )
    finally:
        _RecordedServer.model_path = tokenizer


def test_http_model_mismatch_and_absent_server_are_user_errors(recorded_server: str) -> None:
    from tsbench.runners.sglang import SGLangRunner

    with pytest.raises(UserError, match="does not exist on the SGLang server"):
        SGLangRunner(model="/other/model", base_url=recorded_server)
    with pytest.raises(UserError, match="no SGLang server answers"):
        SGLangRunner(base_url="http://127.0.0.1:9", timeout_s=2)


def test_engine_path_rejects_a_missing_model_before_importing_sglang(tmp_path: Path) -> None:
    from tsbench.runners.sglang import SGLangRunner

    with pytest.raises(UserError, match="does not exist"):
        SGLangRunner(model=str(tmp_path / "absent.gguf"))


def test_min_tokens_goes_as_min_new_tokens_capped_by_max_tokens() -> None:
    plain = generate_payload([GenerationRequest(ASK, max_tokens=20)], [[1]])["sampling_params"][0]
    assert "min_new_tokens" not in plain  # unchanged payload for requests without a floor
    floored = GenerationRequest(ASK, max_tokens=20, min_tokens=12)
    assert generate_payload([floored], [[1]])["sampling_params"][0]["min_new_tokens"] == 12
    capped = replace(floored, min_tokens=50)
    assert generate_payload([capped], [[1]])["sampling_params"][0]["min_new_tokens"] == 20


def test_a_sample_that_a_stop_string_ended_below_min_tokens_is_refused() -> None:
    # SGLang checks stop strings below min_new_tokens (Req.check_finished): such a sample is not
    # what the request asked for.
    request = GenerationRequest(ASK, stop=("\n",), min_tokens=5)
    long_enough = _item("7 * 9 is 63", [22, 338, 24, 318, 5032, 198], {"type": "stop", "matched": "\n"})
    (result,) = results_from([request], [[0] * 30], [long_enough], total_s=1.0)
    assert result.completions[0].tokens == 6
    short = _item("63", [5032, 198], {"type": "stop", "matched": "\n"})
    with pytest.raises(UserError, match="before min_tokens=5"):
        results_from([request], [[0] * 30], [short], total_s=1.0)
    capped = _item("63", [5032, 11], {"type": "length", "length": 2})
    results_from([replace(request, max_tokens=2)], [[0] * 30], [capped], total_s=1.0)  # the cap wins


def test_http_path_renders_plain_prompts_and_counts_tokens(recorded_server: str) -> None:
    from tsbench.runners.sglang import SGLangRunner
    from tsbench.runners.token_counting import CountsTokens

    from tsbench.contracts import plain_prompt

    runner = SGLangRunner(base_url=recorded_server)
    assert isinstance(runner, CountsTokens) and runner.count_tokens("hello world") == 2
    plain = GenerationRequest(ASK, template=False, continuation="7 * 9 = ")
    (result,) = runner.generate([plain])
    sent = _RecordedServer.bodies[-1]["input_ids"][0]
    assert runner.tokenizer.decode(sent) == plain_prompt(plain) == "What is 7 * 9?\n\n7 * 9 = "
    assert result.prompt_tokens == len(sent) == runner.count_tokens(plain_prompt(plain))
    chat = GenerationRequest(ASK)
    assert runner.count_prompt_tokens(chat) > runner.count_prompt_tokens(replace(chat, template=False))
    with pytest.raises(UserError, match="template=False"):
        runner.generate([replace(plain, template_options=(("enable_thinking", True),))])
    runner.close()
