"""Performance figures a run reports: time to first token and time per output token."""

from __future__ import annotations

import pytest

from tsbench.report import performance, table


def test_ttft_and_tpot_from_timing_records() -> None:
    timings = [
        {
            "latency": {"majority": {"1": [2.0, 10.0]}},
            "generated_tokens": 21,
            "group_share_s": 2.0,
            # Two samples after a first token at 0.5 s: 11 tokens by 1.5 s, 10 tokens by 1.4 s.
            "samples_s": {"sampled": [1.5, 1.4]},
            "sample_tokens": {"sampled": [11, 10]},
            "ttft_s": {"sampled": 0.5},
        },
        {  # records written before these fields existed still report
            "latency": {"majority": {"1": [1.0, 5.0]}},
            "generated_tokens": 5,
            "group_share_s": 1.0,
            "samples_s": {"sampled": [1.0]},
        },
    ]
    perf = performance(timings)
    assert perf["ttft_p50_s"] == 0.5
    assert perf["tpot_p50_s"] == pytest.approx(0.1)
    assert perf["generated_tokens_per_s"] == pytest.approx(26 / 3, abs=0.01)
    row = {
        "strategy": "majority",
        "k": 1,
        "oracle": False,
        "accuracy": 1.0,
        "ci95": [0.2, 1.0],
        "generated_tokens_per_problem": 13.0,
        "verifier_tokens_per_problem": 0.0,
        "flops_per_problem": 1e9,
    }
    text = table({"rows": [row]}, perf)
    assert "time to first token p50 0.50 s" in text and "time per output token p50 100.0 ms" in text


def test_rule_rewards_are_reported_per_pool() -> None:
    from tsbench.report import rule_rewards

    samples = [
        {"pool": "sampled", "text": "3 + 4 = 7\nAnswer: 7", "correct": True},
        {"pool": "sampled", "text": "It is seven.", "correct": False},
        {"pool": "greedy", "text": "so \\boxed{12}", "correct": False},
    ]
    rewards = rule_rewards(samples)
    assert rewards["sampled"] == {"samples": 2, "format_reward": 0.5, "accuracy_reward": 0.5}
    assert rewards["greedy"] == {"samples": 1, "format_reward": 1.0, "accuracy_reward": 0.0}
    text = table({"rows": [], "rewards": rewards}, None)
    assert "rule rewards, sampled pool (2 samples): format 0.50, accuracy 0.50 (oracle)" in text
