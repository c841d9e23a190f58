"""One contract, every runner present: the same prompts and the same checks.

A runner whose engine is not installed here is skipped with the reason. Engines load once per
test session (see conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from tsbench.contracts import GenerationRequest, Runner
from tsbench.errors import UserError
from tsbench.plugins import runners

ARITH = (
    (
        "system",
        "Solve the arithmetic problem. Think step by step, then give the final answer as 'Answer: <number>'.",
    ),
    ("user", "What is 7 * 9?"),
)
STORY = (("user", "Write a short story about a cat who learns to count."),)
ASK = (("user", "What is 7 times 8? Answer in one short sentence."),)
TWO = (("user", "What is 2+2?"),)
DAYS = (("user", "List the days of the week."),)


def request(
    messages=ARITH, n=1, temperature=0.0, max_tokens=40, stop=(), seeds=(), logprobs=None, continuation=""
):  # type: ignore[no-untyped-def]
    return GenerationRequest(
        messages, n, temperature, 0.95, max_tokens, tuple(stop), tuple(seeds), logprobs, continuation
    )


def test_n_samples_with_per_sample_seeds_are_reproducible(runner: Runner) -> None:
    req = request(STORY, n=4, temperature=1.0, max_tokens=24, seeds=(11, 12, 13, 14))
    first, again = runner.generate([req])[0], runner.generate([req])[0]
    assert len(first.completions) == 4
    assert [c.text for c in first.completions] == [c.text for c in again.completions]
    assert [c.seed for c in first.completions] == [11, 12, 13, 14]
    assert len({c.text for c in first.completions}) > 1


def test_greedy_is_deterministic_and_batches_keep_request_order(runner: Runner) -> None:
    # Only the same batch is promised to repeat exactly: engines' batched kernels round
    # differently by batch size, so a run fixes its batches (see tsbench.generation.groups).
    a, b = request(ARITH, max_tokens=16), request(STORY, max_tokens=16)
    together, again = runner.generate([a, b]), runner.generate([a, b])
    assert [r.completions[0].text for r in together] == [r.completions[0].text for r in again]
    alone_a, alone_b = runner.generate([a])[0], runner.generate([b])[0]
    assert (together[0].prompt_tokens, together[1].prompt_tokens) == (
        alone_a.prompt_tokens,
        alone_b.prompt_tokens,
    )
    assert together[0].prompt_tokens != together[1].prompt_tokens


def test_max_tokens_ends_with_length(runner: Runner) -> None:
    result = runner.generate([request(STORY, max_tokens=8)])[0]
    completion = result.completions[0]
    assert completion.tokens == 8 and completion.finish_reason == "length"
    assert completion.stop_reason == "length" and completion.stop_string is None


def test_stop_strings_are_honoured(runner: Runner) -> None:
    free = runner.generate([request(STORY, max_tokens=48)])[0].completions[0].text
    words = free.split()
    assert len(words) > 4, free
    stop = words[3]
    stops = ("a phrase the model will not write", stop)
    stopped = runner.generate([request(STORY, max_tokens=48, stop=stops)])[0].completions[0]
    assert stopped.finish_reason == "stop"
    assert stopped.stop_reason == "stop" and stopped.stop_string == stop
    assert stop not in stopped.text and free.startswith(stopped.text)


def test_a_sample_that_ends_by_itself_reports_eos(runner: Runner) -> None:
    completion = runner.generate([request(ASK, max_tokens=40, logprobs=0)])[0].completions[0]
    assert completion.text.strip() and completion.tokens < 40, completion
    assert completion.stop_reason == "eos" and completion.finish_reason == "stop"
    assert completion.stop_string is None
    # The EOS token is counted (it cost a decode step) but has no logprob: those are the text's.
    assert completion.logprobs is not None and len(completion.logprobs) == completion.tokens - 1


# Greedy requests whose text the embedded model writes alike on every engine (Q4_1 in llama.cpp,
# its fp32 dequantization in the others) when each is decoded alone; longer texts, or other batch
# shapes (padding changes the float rounding), can drift apart.
AGREED = (
    request(ASK, max_tokens=40),  # ends with EOS
    request(TWO, max_tokens=40),  # ends with EOS
    request(DAYS, max_tokens=24),  # cut by the cap
    request(DAYS, max_tokens=40, stop=(" Tuesday",)),  # a stop string of one token
    request(DAYS, max_tokens=40, stop=("\n2.",)),  # a stop string of three tokens
)


def test_same_text_gives_the_same_token_count_in_every_runner(
    runner: Runner, runner_name: str, llamacpp_runner: Any
) -> None:
    reference = [llamacpp_runner.generate([r])[0] for r in AGREED]
    assert [r.completions[0].stop_reason for r in reference] == ["eos", "eos", "length", "stop", "stop"]
    first = reference[0].completions[0]
    # Counting convention: the text's tokens plus one for the EOS token.
    text_ids = llamacpp_runner.model.tokenize(first.text.encode(), add_bos=False, special=False)
    assert first.tokens == len(text_ids) + 1
    on_llamacpp_server = runner_name == "openai" and getattr(runner_name, "server", "") == "llamacpp"
    for req, ref in zip(AGREED, reference, strict=True):
        got = runner.generate([req])[0]
        a, b = ref.completions[0], got.completions[0]
        assert (b.text, b.stop_reason, b.stop_string) == (a.text, a.stop_reason, a.stop_string), req
        assert got.prompt_tokens == ref.prompt_tokens
        if on_llamacpp_server and req.stop == ("\n2.",):
            # Documented in runners/openai_compat.py: llama-cpp-python's stream carries no usage and
            # stops its logprob entries at the first token of a stop string.
            assert b.tokens < a.tokens
        else:
            assert b.tokens == a.tokens, (req, a, b)


def test_count_prompt_tokens_matches_generate(runner: Runner) -> None:
    count = runner.count_prompt_tokens  # type: ignore[attr-defined]
    plain = request(ARITH, max_tokens=2)
    assert count(plain) == runner.generate([plain])[0].prompt_tokens
    extended = request(ARITH, max_tokens=2, continuation="7 * 9 = ")
    if not runner.info().continuation:
        with pytest.raises(UserError, match="cannot extend a partial answer"):
            count(extended)
        return
    counted = count(extended)
    assert counted == runner.generate([extended])[0].prompt_tokens
    assert counted > count(plain)


def test_info_reports_dtype_and_never_guesses_parameters(runner: Runner) -> None:
    info = runner.info()
    expected = {"llama.cpp": "q4_1", "transformers": "float32", "vllm": "float32", "openai-compatible": ""}
    assert info.dtype == expected.get(info.engine, info.dtype)
    if info.engine == "openai-compatible":  # built without `parameters`: a server does not say
        assert info.parameters == 0
    else:
        assert 130_000_000 < info.parameters < 140_000_000


def test_logprobs_when_asked(runner: Runner) -> None:
    plain = runner.generate([request(max_tokens=12)])[0].completions[0]
    assert plain.logprobs is None
    asked = runner.generate([request(max_tokens=12, logprobs=3)])[0].completions[0]
    assert asked.logprobs is not None
    assert len(asked.logprobs) == asked.tokens - (asked.stop_reason == "eos")
    assert all(lp <= 0.0 for lp in asked.logprobs)
    # Servers may add the chosen token to the alternatives when it is not among the top k.
    assert asked.top_logprobs is not None and all(len(top) >= 3 for top in asked.top_logprobs)
    # Greedy picks the most likely token: its logprob is the best of the alternatives.
    assert all(
        abs(lp - max(top.values())) < 1e-4 for lp, top in zip(asked.logprobs, asked.top_logprobs, strict=True)
    )


def test_timings_and_token_counts(runner: Runner) -> None:
    result = runner.generate([request(n=2, temperature=0.8, seeds=(1, 2), max_tokens=16)])[0]
    assert result.prompt_tokens > 20 and 0 < result.prompt_tokens_computed <= 2 * result.prompt_tokens
    assert result.total_s > 0 and result.ttft_s is not None and 0 < result.ttft_s <= result.total_s
    assert all(0 < c.latency_s <= result.total_s + 1e-6 for c in result.completions)
    assert all(0 < c.tokens <= 16 for c in result.completions)


def test_continuation_extends_a_partial_answer(runner: Runner) -> None:
    if not runner.info().continuation:
        with pytest.raises(UserError, match="cannot extend a partial answer"):
            runner.generate([request(max_tokens=12, continuation="7 * 9 = ")])
        return
    result = runner.generate([request(max_tokens=12, continuation="7 * 9 = ")])[0]
    completion = result.completions[0]
    assert not completion.text.startswith("7 * 9 = ")
    assert completion.text.strip()[:2].isdigit(), completion.text


def test_unknown_model_path_is_a_user_error(runner_name: str, runner_options: dict[str, object]) -> None:
    with pytest.raises(UserError, match="does not exist"):
        runners.get(runner_name)(model="/nonexistent/model.gguf", **runner_options)
