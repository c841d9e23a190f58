"""The hf runner (transformers) on the embedded SmolLM2-135M, on the CPU."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tsbench.contracts import GenerationRequest
from tsbench.errors import UserError

pytest.importorskip("torch", reason="the hf runner needs torch: pip install torch transformers gguf")
pytest.importorskip("transformers", reason="the hf runner needs transformers: pip install transformers gguf")
pytest.importorskip("gguf", reason="transformers reads the embedded GGUF through gguf: pip install gguf")

from tsbench.runners.hf import HFRunner  # noqa: E402
from tsbench.runners.sampling import (
    device_draws,  # noqa: E402
    draw,  # noqa: E402
)

ASK = (("user", "What is 7 times 8? Answer in one short sentence."),)
STORY = (("user", "Tell me a long story about a lighthouse keeper."),)


@pytest.fixture(scope="module")
def runner() -> Iterator[HFRunner]:
    # One thread: on a small machine shared with other work, torch's OpenMP barriers stall whenever
    # another process holds a core (a 6x576 by 576x1536 matmul went from 0.25 ms to 8 ms on 2 cores).
    built = HFRunner(device="cpu", threads=1, batch_size=16)
    yield built
    built.close()


def test_info_names_the_embedded_model(runner: HFRunner) -> None:
    from tsbench.runners.embedded import EMBEDDED_ID, embedded_gguf

    from tsbench.provenance import file_sha256

    info = runner.info()
    assert info.model_id == EMBEDDED_ID
    assert info.engine == "transformers" and info.engine_version.startswith("transformers ")
    assert info.device == "cpu x1 threads"
    assert 130_000_000 < info.parameters < 140_000_000
    assert info.model_sha256 == file_sha256(str(embedded_gguf()))
    assert info.prefix_sharing and info.dtype == "float32"


def test_samples_follow_their_seeds(runner: HFRunner) -> None:
    request = GenerationRequest(ASK, n=4, temperature=1.0, max_tokens=10, seeds=(1, 2, 3, 4))
    (first,), (again,) = runner.generate([request]), runner.generate([request])
    texts = [c.text for c in first.completions]
    assert [c.seed for c in first.completions] == [1, 2, 3, 4]
    assert texts == [c.text for c in again.completions]
    assert len(set(texts)) > 1
    # A sample depends on its own seed only, not on what shares its batch.
    (alone,) = runner.generate([replace(request, n=1, seeds=(3,))])
    assert alone.completions[0].text == texts[2]


def test_temperature_zero_is_deterministic(runner: HFRunner) -> None:
    request = GenerationRequest(ASK, n=2, temperature=0.0, max_tokens=10, seeds=(5, 6))
    (first,), (again,) = runner.generate([request]), runner.generate([request])
    texts = {c.text for c in first.completions} | {c.text for c in again.completions}
    assert len(texts) == 1 and texts != {""}


def test_stop_string_cuts_and_stops(runner: HFRunner) -> None:
    greedy = GenerationRequest(ASK, n=1, temperature=0.0, max_tokens=16)
    text = runner.generate([greedy])[0].completions[0].text
    stop = text.split()[1]  # the second word: present, and not at the very start
    (cut,) = runner.generate([replace(greedy, stop=(stop,))])
    completion = cut.completions[0]
    assert (completion.stop_reason, completion.stop_string) == ("stop", stop)
    assert stop not in completion.text
    assert completion.text == text[: text.find(stop)]


def test_max_tokens_ends_with_length(runner: HFRunner) -> None:
    (result,) = runner.generate([GenerationRequest(STORY, n=2, temperature=0.7, max_tokens=5, seeds=(1, 2))])
    assert [(c.tokens, c.stop_reason) for c in result.completions] == [(5, "length"), (5, "length")]


def test_logprobs_and_alternatives(runner: HFRunner) -> None:
    sampled = GenerationRequest(STORY, n=2, temperature=0.7, max_tokens=6, seeds=(1, 2), logprobs=3)
    greedy = GenerationRequest(STORY, n=1, temperature=0.0, max_tokens=6, logprobs=3)
    bare = GenerationRequest(STORY, n=1, temperature=0.0, max_tokens=6, logprobs=0)
    results = runner.generate([sampled, greedy, bare])
    for c in results[0].completions + results[1].completions:
        assert c.logprobs is not None and len(c.logprobs) == c.tokens
        assert all(isinstance(lp, float) and lp <= 0.0 for lp in c.logprobs)
        assert c.top_logprobs is not None and len(c.top_logprobs) == c.tokens
        assert all(len(top) == 3 for top in c.top_logprobs)  # three distinct pieces in practice
        assert all(lp <= max(top.values()) + 1e-9 for lp, top in zip(c.logprobs, c.top_logprobs, strict=True))
    # Greedy takes the best token, so its logprob is the best alternative's.
    for lp, top in zip(
        results[1].completions[0].logprobs or [], results[1].completions[0].top_logprobs or [], strict=True
    ):
        assert lp == pytest.approx(max(top.values()), abs=1e-9)
    plain = results[2].completions[0]
    assert plain.logprobs is not None and len(plain.logprobs) == plain.tokens and plain.top_logprobs is None


def test_token_counts_match_the_tokenizer(runner: HFRunner) -> None:
    # Exact for greedy text: the model's likeliest continuation is the tokenizer's own segmentation.
    # Sampled text may be spelled with a segmentation the tokenizer would not choose, so those counts
    # may differ by a token or two; none of the checks below samples. An EOS token counts as one.
    requests = [GenerationRequest(m, n=1, temperature=0.0, max_tokens=24) for m in (ASK, STORY)]
    results = runner.generate(requests)
    assert [r.completions[0].stop_reason for r in results] == ["eos", "length"]
    for result in results:
        c = result.completions[0]
        text_tokens = len(runner.tokenizer(c.text, add_special_tokens=False).input_ids)
        assert c.tokens == text_tokens + (c.stop_reason == "eos")


def test_timings_and_prompt_reuse(runner: HFRunner) -> None:
    requests = [
        GenerationRequest(ASK, n=3, temperature=0.8, max_tokens=4, seeds=(1, 2, 3)),
        GenerationRequest(STORY, n=1, max_tokens=4),
    ]
    results = runner.generate(requests)
    for result in results:
        assert result.total_s > 0 and result.ttft_s is not None and 0 < result.ttft_s <= result.total_s
        assert all(0 < c.latency_s <= result.total_s for c in result.completions)
        # Each prompt is evaluated once however many samples are drawn from it.
        assert (
            result.prompt_tokens_computed
            == result.prompt_tokens
            == len(runner.prompt_tokens(requests[0 if result is results[0] else 1]))
        )


def test_contract_smoke_check_passes(runner: HFRunner) -> None:
    from tsbench.smoke import smoke_check

    assert smoke_check(runner) == []


def test_device_sampler_gives_the_same_samples(runner: HFRunner) -> None:
    request = GenerationRequest(
        STORY, n=3, temperature=0.9, top_p=0.9, max_tokens=8, seeds=(7, 8, 9), logprobs=2
    )
    greedy = GenerationRequest(ASK, n=1, temperature=0.0, max_tokens=8)
    numpy_results = runner.generate([request, greedy])
    runner.sampler = "device"
    try:
        torch_results = runner.generate([request, greedy])
    finally:
        runner.sampler = "numpy"
    for a, b in zip(numpy_results, torch_results, strict=True):
        assert [c.text for c in a.completions] == [c.text for c in b.completions]
        for x, y in zip(a.completions, b.completions, strict=True):
            assert x.logprobs is None or y.logprobs == pytest.approx(x.logprobs, abs=1e-9)


@pytest.mark.parametrize(
    ("temperature", "top_p", "spread"),
    # spread 0.3 makes rows so flat that draw() leaves its top-512 shortcut and ranks every token.
    [(0.0, 1.0, 4.0), (1.0, 1.0, 4.0), (0.7, 1.0, 4.0), (1.0, 0.9, 4.0), (0.6, 0.5, 4.0), (1.0, 0.99, 0.3)],
)
def test_device_draws_match_numpy_draw(temperature: float, top_p: float, spread: float) -> None:
    import torch

    values = np.unique(
        (np.random.default_rng(0).standard_normal(90_000) * spread).astype(np.float32)
    )  # no ties
    logits = np.random.default_rng(1).permutation(values)[: 40 * 2000].reshape(40, 2000)
    for r, row in enumerate(logits):
        reference = draw(row, temperature, top_p, np.random.default_rng(r), top_logprobs=3)
        rng = np.random.default_rng(r)
        uniform = rng.random() if temperature > 0 else 0.5
        (mine,) = device_draws(torch.from_numpy(row[None, :]), [temperature], [top_p], [uniform], 3)
        assert mine.token == reference.token
        assert mine.logprob == pytest.approx(reference.logprob, abs=1e-9)
        assert list(mine.top) == list(reference.top)


def test_missing_or_wrong_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        HFRunner(model=str(tmp_path / "absent.gguf"), device="cpu")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(UserError, match="neither a .gguf file nor a folder"):
        HFRunner(model=str(tmp_path / "notes.txt"), device="cpu")


def test_dummy_weights_build_and_generate(tmp_path: Path) -> None:
    from transformers import LlamaConfig

    from tsbench.plugins import runners

    LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    ).save_pretrained(tmp_path)
    built = runners.get("hf")(model=str(tmp_path), threads=1, device="cpu", dummy_weights=True)
    try:
        info = built.info()
        assert "random weights" in info.model_id and info.model_sha256 is None
        (result,) = built.generate([GenerationRequest(ASK, n=2, temperature=1.0, max_tokens=6, seeds=(1, 2))])
        assert len(result.completions) == 2
        assert all(1 <= c.tokens <= 6 or c.finish_reason == "stop" for c in result.completions)
    finally:
        built.close()
