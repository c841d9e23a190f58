"""min_tokens' rule in the shared sampler, and template options reaching real chat templates.

The conformance suite (test_runner_conformance.py) checks min_tokens, plain prompts and token
counting on every runner present; here are the sampler's rule on synthetic logits (no model), and
the llama.cpp and hf runners, and the renderer vLLM and SGLang share, each given a small custom
chat template that reads `enable_thinking`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from tsbench.runners.chat import template_options
from tsbench.runners.sampling import draw, eos_allowed, stops_checked

from tsbench.contracts import GenerationRequest, plain_prompt
from tsbench.errors import UserError

# Renders THINK on a line of its own when enable_thinking is true, as Qwen3's template switches
# its thinking block; special tokens as in the embedded model's own template.
THINK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if enable_thinking %}THINK\n{% endif %}{{ '<|im_start|>assistant\n' }}"
)  # the last newline inside an expression: Jinja drops a template's trailing newline
DAYS = (("user", "List the days of the week."),)


def thinking(enabled: bool | None, **fields: Any) -> GenerationRequest:
    options = () if enabled is None else (("enable_thinking", enabled),)
    return GenerationRequest(DAYS, max_tokens=4, template_options=options, **fields)


# -- the sampler's rule, on synthetic logits ------------------------------------------------------


def test_a_banned_token_is_never_drawn_and_logprobs_stay_the_models() -> None:
    logits = np.array([5.0, 1.0, 0.5, 4.0], dtype=np.float32)  # token 0 stands for EOS
    free = draw(logits, 0.0, 1.0, np.random.default_rng(0), 2)
    held = draw(logits, 0.0, 1.0, np.random.default_rng(0), 2, banned=[0])
    assert (free.token, held.token) == (0, 3)
    assert held.logprob == pytest.approx(free.top[3])  # under the unbanned distribution
    assert held.top == free.top
    drawn = {draw(logits, 1.0, 0.9, np.random.default_rng(s), 0, banned=[0]).token for s in range(200)}
    assert 0 not in drawn and 3 in drawn


def test_the_first_min_tokens_tokens_end_nothing() -> None:
    request = GenerationRequest(DAYS, min_tokens=3)
    # EOS may be drawn once 3 tokens are there; a stop string must be completed by a 4th or later.
    assert [eos_allowed(request, k) for k in range(5)] == [False, False, False, True, True]
    assert [stops_checked(request, k) for k in range(1, 6)] == [False, False, False, True, True]
    assert all(
        eos_allowed(GenerationRequest(DAYS), k) and stops_checked(GenerationRequest(DAYS), k + 1)
        for k in range(3)
    )


def test_device_draws_ban_the_same_tokens_as_draw() -> None:
    torch = pytest.importorskip("torch", reason="the device sampler needs torch")
    from tsbench.runners.sampling import device_draws

    rows = np.random.default_rng(7).normal(size=(4, 50)).astype(np.float32)
    rows[:, 3] += 6.0  # token 3, the "EOS", would win nearly every draw
    temperatures, top_ps = [0.0, 1.0, 0.8, 1.0], [1.0, 1.0, 0.9, 0.95]
    banned: list[list[int]] = [[3], [3], [3], []]
    expected = [
        draw(rows[r], temperatures[r], top_ps[r], np.random.default_rng(r), 0, banned[r]).token
        for r in range(4)
    ]
    uniforms = [np.random.default_rng(r).random() for r in range(4)]
    got = device_draws(torch.from_numpy(rows), temperatures, top_ps, uniforms, 0, banned)
    assert [d.token for d in got] == expected
    assert all(t != 3 for t in expected[:3]) and expected[3] == 3


def test_template_options_are_checked_before_any_template_reads_them() -> None:
    assert template_options(thinking(True)) == {"enable_thinking": True}
    with pytest.raises(UserError, match="template=False"):
        template_options(thinking(True, template=False))
    with pytest.raises(UserError, match="cannot be chat-template variables"):
        template_options(replace(thinking(None), template_options=(("add_generation_prompt", False),)))


# -- real templates --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llamacpp_thinking() -> Iterator[Any]:
    from tsbench.runners.llamacpp import LlamaCppRunner

    runner = LlamaCppRunner(parallel=2, n_ctx=1024, chat_template=THINK_TEMPLATE)
    yield runner
    runner.close()


def test_llamacpp_options_reach_its_chat_template(llamacpp_thinking: Any) -> None:
    runner = llamacpp_thinking

    def rendered(request: GenerationRequest) -> str:
        return str(runner.model.detokenize(runner.prompt_tokens(request), special=True).decode())

    assert "THINK\n<|im_start|>assistant\n" in rendered(thinking(True))
    assert "THINK" not in rendered(thinking(False)) and "THINK" not in rendered(thinking(None))
    on, off = runner.count_prompt_tokens(thinking(True)), runner.count_prompt_tokens(thinking(False))
    assert on - off == runner.count_tokens("THINK\n") > 0
    (result,) = runner.generate([thinking(True)])
    assert result.prompt_tokens == on and result.completions[0].tokens > 0
    plain = thinking(None, template=False)
    assert runner.count_prompt_tokens(plain) == runner.count_tokens(plain_prompt(plain))


@pytest.fixture(scope="module")
def hf_thinking() -> Iterator[Any]:
    pytest.importorskip(
        "transformers", reason="the hf runner needs transformers: pip install transformers gguf"
    )
    pytest.importorskip("gguf", reason="transformers reads the embedded GGUF through gguf: pip install gguf")
    from tsbench.runners.hf import HFRunner

    runner = HFRunner(device="cpu", threads=1, batch_size=4, chat_template=THINK_TEMPLATE)
    yield runner
    runner.close()


def test_hf_options_reach_its_chat_template(hf_thinking: Any, llamacpp_thinking: Any) -> None:
    runner = hf_thinking
    on = runner.tokenizer.decode(runner.prompt_tokens(thinking(True)))
    assert "THINK\n<|im_start|>assistant\n" in on
    assert "THINK" not in runner.tokenizer.decode(runner.prompt_tokens(thinking(False)))
    # The same template over the same tokenizer: both runners evaluate the same tokens.
    for request in (thinking(True), thinking(False), thinking(None, template=False)):
        assert runner.prompt_tokens(request) == llamacpp_thinking.prompt_tokens(request)
    (result,) = runner.generate([thinking(True)])
    assert result.prompt_tokens == runner.count_prompt_tokens(thinking(True))


def test_vllm_and_sglang_prompts_render_options_and_plain_prompts(
    hf_thinking: Any, llamacpp_thinking: Any
) -> None:
    # runners/vllm.py and runners/sglang.py render with model_folders.chat_prompt_ids over the
    # model folder's tokenizer: here the hf runner's tokenizer (the same one), given the template.
    import copy

    from tsbench.runners.model_folders import chat_prompt_ids

    tokenizer = copy.deepcopy(hf_thinking.tokenizer)
    tokenizer.chat_template = THINK_TEMPLATE
    for request in (thinking(True), thinking(False), thinking(None, template=False)):
        assert chat_prompt_ids(tokenizer, request) == llamacpp_thinking.prompt_tokens(request)
    assert chat_prompt_ids(tokenizer, thinking(True)) != chat_prompt_ids(tokenizer, thinking(False))
    extended = replace(thinking(None, template=False), continuation="Monday, ")
    assert tokenizer.decode(chat_prompt_ids(tokenizer, extended)) == plain_prompt(extended)
