"""Performance figures a run reports: time to first token and time per output token."""

from __future__ import annotations

import pytest

from tsbench.report import performance, table


def test_ttft_and_tpot_from_timing_records() -> None:
    timings = [
        {
            "problem_id": "a",
            "generated_tokens": 21,
            "group_share_s": 2.0,
            # Two samples after a first token at 0.5 s: 11 tokens by 1.5 s, 10 tokens by 1.4 s.
            "samples_s": {"sampled": [1.5, 1.4]},
            "sample_tokens": {"sampled": [11, 10]},
            "ttft_s": {"sampled": 0.5},
        },
        {  # a runner that does not stream reports no time to first token
            "problem_id": "b",
            "generated_tokens": 5,
            "group_share_s": 1.0,
            "samples_s": {"sampled": [1.0]},
            "verifier_s": {"judge": 0.25},
        },
    ]
    scores = [
        {
            "problem_id": "a",
            "arm": "majority",
            "level": 1,
            "k": 1,
            "fallback": False,
            "spend": {"generated_tokens": 10.0},
        },
        {
            "problem_id": "b",
            "arm": "best-of-n/judge",
            "level": 1,
            "k": 1,
            "fallback": False,
            "spend": {"generated_tokens": 5.0},
        },
    ]
    perf = performance(
        timings, scores, {"majority": ("sampled", None), "best-of-n/judge": ("sampled", "judge")}
    )
    assert perf["ttft_p50_s"] == 0.5
    assert perf["tpot_p50_s"] == pytest.approx(0.1)
    assert perf["generated_tokens_per_s"] == pytest.approx(26 / 3, abs=0.01)
    rows = {r["strategy"]: r for r in perf["rows"]}
    # Majority at k=1: the expected slower of... one of the two samples; best-of-n adds scoring time.
    assert rows["majority"]["latency_p50_s"] == pytest.approx(1.45)
    assert rows["best-of-n/judge"]["latency_p50_s"] == pytest.approx(1.25)
    row = {
        "strategy": "majority",
        "k": 1,
        "oracle": False,
        "problems": 2,
        "accuracy": 1.0,
        "ci95": [0.2, 1.0],
        "width_per_problem": 1.0,
        "fallbacks": 0,
        "tokens_per_problem": 23.0,
        "generated_tokens_per_problem": 13.0,
        "verifier_tokens_per_problem": 0.0,
        "flops_per_problem": 1e9,
        "within_budget": True,
    }
    text = table({"rows": [row]}, perf)
    assert "time to first token p50 0.50 s" in text and "time per output token p50 100.0 ms" in text


def test_rule_rewards_are_reported_per_pool() -> None:
    from tsbench.report import rule_rewards

    samples = [
        {
            "problem_id": "p",
            "pool": "sampled",
            "index": 0,
            "text": "3 + 4 = 7\nAnswer: 7",
            "stop_reason": "eos",
        },
        {"problem_id": "p", "pool": "sampled", "index": 1, "text": "It is seven.", "stop_reason": "length"},
        {"problem_id": "p", "pool": "greedy", "index": 0, "text": "so \\boxed{12}", "stop_reason": "eos"},
    ]
    grades = [
        {"problem_id": "p", "pool": "sampled", "index": 0, "correct": True},
        {"problem_id": "p", "pool": "sampled", "index": 1, "correct": False},
        {"problem_id": "p", "pool": "greedy", "index": 0, "correct": False},
    ]
    rewards = rule_rewards(samples, grades)
    assert rewards["sampled"] == {
        "samples": 2,
        "format_reward": 0.5,
        "accuracy_reward": 0.5,
        "truncated": 0.5,
    }
    assert rewards["greedy"] == {"samples": 1, "format_reward": 1.0, "accuracy_reward": 0.0, "truncated": 0.0}
    text = table({"rows": [], "rewards": rewards}, None)
    assert (
        "rule rewards, sampled pool (2 samples): format 0.50, accuracy 0.50 (oracle); cut by the token cap 50.0%"
        in text
    )
