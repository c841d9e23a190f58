"""tsbench bench on the embedded llama.cpp runner: the contract smoke check and the tree search timing."""

from __future__ import annotations

from typing import Any

from tsbench.bench import PROMPTS, bench_runner, tree_search_bench
from tsbench.smoke import smoke_check


def test_smoke_check_finds_nothing_wrong_with_llamacpp(llamacpp_runner: Any) -> None:
    assert smoke_check(llamacpp_runner) == []


def test_bench_reports_throughput_and_first_token(llamacpp_runner: Any) -> None:
    figures = bench_runner(
        llamacpp_runner, PROMPTS[:2], n=2, max_tokens=16, temperature=0.8, top_p=0.95, repeats=1
    )
    assert figures["tokens_per_s"] > 0 and figures["generated_tokens_per_batch"] > 0
    assert figures["ttft_p50_s"] is not None and 0 < figures["ttft_p50_s"] <= figures["wall_s"]
    assert set(figures["finish_reasons"]) <= {"stop", "length"}
    assert set(figures["stop_reasons"]) <= {"eos", "length"}  # no stop strings in the workload
    assert sum(figures["stop_reasons"].values()) == sum(figures["finish_reasons"].values()) == 4


def test_tree_search_bench_spends_tokens_and_reports_no_cache_it_lacks(llamacpp_runner: Any) -> None:
    figures = tree_search_bench(
        llamacpp_runner, problems=1, beam_width=2, budget=4, max_step_tokens=16, max_steps=2
    )
    assert figures["generated_tokens"] > 0 and figures["search_s"] > 0
    assert "prefix_cache_hit_rate" not in figures  # llama.cpp keeps no prefix-cache counters
