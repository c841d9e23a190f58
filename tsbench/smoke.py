"""A runner's contract checked on whatever model it holds (`tsbench bench --smoke`, runner tests)."""

from __future__ import annotations

from dataclasses import replace

from tsbench.contracts import GenerationRequest, Runner


def smoke_check(runner: Runner, max_tokens: int = 12) -> list[str]:
    """Model-agnostic checks of a runner's contract; returns the problems found (none: passed).

    Checks sample counts and seeds, seeded reproducibility, temperature-0 determinism, the token
    cap and stop reasons, stop strings (cut from a greedy text of the model's own, so any weights
    will do), logprobs and their alternatives, timings, and prompt token counts (against
    `count_prompt_tokens` where the runner has it).
    """
    problems: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    messages = (("user", "Write one sentence about the sea."),)
    sampled = GenerationRequest(
        messages, n=4, temperature=1.0, max_tokens=max_tokens, seeds=(11, 12, 13, 14), logprobs=2
    )
    greedy = GenerationRequest(messages, n=2, temperature=0.0, max_tokens=max_tokens, seeds=(1, 2))
    first, again = runner.generate([sampled, greedy]), runner.generate([sampled, greedy])
    for result, request in zip(first, (sampled, greedy), strict=True):
        expect(
            len(result.completions) == request.n, f"{len(result.completions)} completions for n={request.n}"
        )
        expect([c.seed for c in result.completions] == list(request.seeds), "seeds not echoed in order")
        expect(result.prompt_tokens > 0, "prompt_tokens is 0")
        expect(
            0 < result.prompt_tokens_computed <= result.prompt_tokens * request.n,
            "prompt_tokens_computed out of range",
        )
        expect(
            result.total_s > 0 and result.ttft_s is not None and 0 < result.ttft_s <= result.total_s,
            "bad ttft/total",
        )
        for c in result.completions:
            expect(0 < c.latency_s <= result.total_s + 1e-6, f"latency {c.latency_s} outside (0, total]")
            expect(c.tokens <= max_tokens, f"{c.tokens} tokens over max_tokens={max_tokens}")
            # No stop strings here: a sample ends at the cap or with its EOS token, which counts.
            ended = c.tokens == max_tokens if c.stop_reason == "length" else c.stop_reason == "eos"
            expect(ended and c.tokens > 0, f"stop_reason {c.stop_reason} with {c.tokens} tokens")
    texts = [c.text for c in first[0].completions]
    expect(texts == [c.text for c in again[0].completions], "same seeds gave different samples")
    expect(len(set(texts)) > 1, "different seeds at temperature 1 gave identical samples")
    # Temperature 0 repeats exactly call after call. Two greedy samples of one request may part
    # ways: their KV cells sit at different places of a shared cache, which can move a near-tie
    # argmax by the last bits (as batch composition does on any engine).
    greedy_texts = [c.text for c in first[1].completions]
    expect(greedy_texts == [c.text for c in again[1].completions], "temperature 0 is not deterministic")
    for c in first[0].completions:
        text_tokens = c.tokens - (c.stop_reason == "eos")  # an EOS token has no logprob
        expect(c.logprobs is not None and len(c.logprobs) == text_tokens, "logprobs missing or miscounted")
        expect(all(lp <= 1e-6 for lp in c.logprobs or []), "a logprob above 0")
        top = c.top_logprobs or []
        expect(
            len(top) == text_tokens and all(1 <= len(t) <= 2 for t in top),
            "top_logprobs missing or miscounted",
        )
    count = getattr(runner, "count_prompt_tokens", None)
    if callable(count):
        expect(count(greedy) == first[1].prompt_tokens, "count_prompt_tokens differs from prompt_tokens")
    expect(all(c.logprobs is None for c in first[1].completions), "logprobs returned though not asked")
    # A stop string taken from the middle of the model's own greedy text, decoded alone each time so
    # that the batch shape (and with it the arithmetic) is the same with and without the stop.
    alone = replace(greedy, n=1)
    text = runner.generate([alone])[0].completions[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    if len(text) >= 4 and stop.strip():
        cut = runner.generate([replace(alone, stop=(stop,))])[0].completions[0]
        expect(
            cut.stop_reason == "stop" and cut.stop_string == stop,
            f"stop string {stop!r} did not stop ({cut.stop_reason}, {cut.stop_string!r})",
        )
        expect(cut.text == text[: text.find(stop)], f"stop string {stop!r}: got {cut.text!r} from {text!r}")
    else:
        problems.append(f"greedy text {text!r} too short to test stop strings")
    return problems
