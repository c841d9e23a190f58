"""One contract, every runner present: the same prompts and the same checks.

A runner whose engine is not installed here is skipped with the reason. Engines load once per
test session (see conftest.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from tsbench.runners.token_counting import CountsTokens

from tsbench.contracts import Completion, GenerationRequest, Runner, plain_prompt
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


# -- min_tokens, plain prompts, template options, token counting -----------------------------------


def on_llamacpp_server(runner_name: str) -> bool:
    return runner_name == "openai" and getattr(runner_name, "server", "") == "llamacpp"


def honest(completion: Completion, req: GenerationRequest) -> bool:
    """A stop reason that fits the completion: a cap at max_tokens, a stop string among those asked."""
    if completion.stop_reason == "length":
        return completion.tokens == req.max_tokens and completion.stop_string is None
    if completion.stop_reason == "stop":
        return completion.stop_string in req.stop
    return completion.stop_reason == "eos" and completion.stop_string is None


def test_min_tokens_holds_off_an_early_stop_string(runner: Runner, runner_name: str) -> None:
    free_req = request(DAYS, max_tokens=40, stop=("\n",))
    free = runner.generate([free_req])[0].completions[0]
    assert free.stop_reason == "stop" and free.tokens < 20, free  # without a floor it stops early
    floored = replace(free_req, min_tokens=20)
    if on_llamacpp_server(runner_name):
        # llama-cpp-python checks stop strings below min_tokens: the runner refuses the short sample.
        with pytest.raises(UserError, match="min_tokens=20"):
            runner.generate([floored])
        return
    got = runner.generate([floored])[0].completions[0]
    assert got.tokens >= 20 and honest(got, floored), got
    # Greedy: the same start, run on past the stop string the free sample ended at.
    assert got.text.startswith(free.text + "\n"), (free.text, got.text)


def test_min_tokens_holds_off_eos_for_every_seeded_sample(runner: Runner, runner_name: str) -> None:
    free = runner.generate([request(ASK, max_tokens=40)])[0].completions[0]
    assert free.stop_reason == "eos" and free.tokens < 25, free
    floored = replace(request(ASK, n=3, temperature=1.0, seeds=(1, 2, 3), max_tokens=30), min_tokens=25)
    completions = runner.generate([floored])[0].completions
    assert len(completions) == 3
    assert all(c.tokens >= 25 and honest(c, floored) for c in completions), completions


def test_min_tokens_equal_to_max_tokens_ignores_eos(runner: Runner) -> None:
    req = replace(request(ASK, n=2, temperature=0.7, seeds=(4, 5), max_tokens=24), min_tokens=24)
    for completion in runner.generate([req])[0].completions:
        assert (completion.tokens, completion.stop_reason) == (24, "length"), completion
    # max_tokens caps a floor above it.
    capped = runner.generate([replace(req, n=1, max_tokens=6, min_tokens=24)])[0].completions[0]
    assert (capped.tokens, capped.stop_reason) == (6, "length")


def test_a_negative_min_tokens_is_a_user_error(runner: Runner) -> None:
    with pytest.raises(UserError, match="min_tokens=-1"):
        runner.generate([replace(request(max_tokens=4), min_tokens=-1)])


def test_a_plain_prompt_counts_exactly_what_is_evaluated(runner: Runner, llamacpp_runner: Any) -> None:
    assert isinstance(runner, CountsTokens)
    chat = request(DAYS, max_tokens=4)
    adds_bos = int(llamacpp_runner.model.add_bos_token())  # the embedded model's tokenizer says
    for plain in (replace(chat, template=False), replace(chat, template=False, continuation="Monday, ")):
        result = runner.generate([plain])[0]
        assert result.prompt_tokens == runner.count_tokens(plain_prompt(plain)) + adds_bos
        assert result.prompt_tokens == runner.count_prompt_tokens(plain)  # type: ignore[attr-defined]
    assert runner.count_prompt_tokens(replace(chat, template=False)) < runner.count_prompt_tokens(chat)  # type: ignore[attr-defined]
    # The model continues the plain text itself, with no assistant turn around it.
    listing = replace(chat, messages=(("user", "The days of the week are Monday, Tuesday,"),), max_tokens=6)
    text = runner.generate([replace(listing, template=False)])[0].completions[0].text
    assert "Wednesday" in text, text


def test_template_options_reach_the_template_or_are_refused(runner: Runner) -> None:
    chat = request(DAYS, max_tokens=4)
    # The embedded model's template reads no `enable_thinking`: the option changes nothing there.
    thinking = replace(chat, template_options=(("enable_thinking", False),))
    count = runner.count_prompt_tokens  # type: ignore[attr-defined]
    assert count(thinking) == count(chat)
    assert runner.generate([thinking])[0].prompt_tokens == count(chat)
    with pytest.raises(UserError, match="template=False"):
        runner.generate([replace(thinking, template=False)])
    with pytest.raises(UserError, match="cannot be chat-template variables"):
        count(replace(chat, template_options=(("messages", []),)))


def test_count_tokens_splits_text_as_the_model_does(runner: Runner, llamacpp_runner: Any) -> None:
    assert isinstance(runner, CountsTokens)
    texts = ["hello world", "7 * 9 = 63.\n\nAnswer: 63", "<|im_end|>", " Monday,\nTuesday"]
    counts = [runner.count_tokens(t) for t in texts]
    assert 0 < counts[0] <= 3 and runner.count_tokens("") == 0
    reference = [len(llamacpp_runner.model.tokenize(t.encode(), add_bos=False, special=True)) for t in texts]
    assert counts == reference
