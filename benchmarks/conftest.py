"""A synthetic finished run of 10,000 samples, written and scored by the real record code.

625 arith problems (levels 1-3), a greedy sample and a sampled pool of 15 each (10,000 samples),
strategies greedy, majority and pass@k at budgets 1..8. Texts are made up, not generated: a
short chain of thought ending in a right or a wrong answer, so extraction and grading do real work.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tsbench.records import ARMS, RunFolder
from tsbench.rescoring import arms_record
from tsbench.run import prepare
from tsbench.spec import build_spec

PROBLEMS, POOL = 625, 15


def texts_for(question: str, reference: str, n: int, rng: random.Random) -> list[str]:
    """n made-up completions: a few lines of working, then a right answer about a third of the time."""
    out = []
    for _ in range(n):
        answer = reference if rng.random() < 0.35 else str(int(reference) + rng.randint(-9, 9))
        working = " ".join(
            f"Step {i}: {rng.randint(1, 99)} + {rng.randint(1, 99)}." for i in range(rng.randint(1, 6))
        )
        ending = rng.choice([f"Answer: {answer}", f"The answer is {answer}.", f"\\boxed{{{answer}}}", answer])
        out.append(f"{question}\n{working}\n{ending}")
    return out


def synthetic_run(path: Path) -> tuple[RunFolder, Any]:
    """Write the run folder (records only: identity, spec, arms, problems, samples, timings)."""
    spec = build_spec(
        {"task": "arith", "task_options": {"levels": "1,2,3"}, "limit": PROBLEMS, "budgets": "1,2,4,8",
         "pool_size": POOL, "max_tokens": 64},
        "benchmark",
    )  # fmt: skip
    prepared = prepare(spec)
    folder = RunFolder.open(path, prepared.spec.to_yaml(), {"benchmark": "synthetic 10,000 samples"})
    folder.write_json(ARMS, arms_record(prepared.arms, {}))
    rng = random.Random(0)
    for start in range(0, PROBLEMS, 25):
        problems, samples, timings = [], [], []
        for problem in prepared.problems[start : start + 25]:
            texts = texts_for(problem.question, problem.reference, 1 + POOL, rng)
            pools = {"greedy": texts[:1], "sampled": texts[1:]}
            for pool, found in pools.items():
                samples += [sample_record(problem.id, pool, i, text, rng) for i, text in enumerate(found)]
            problems.append(
                {"problem_id": problem.id, "question": problem.question, "reference": problem.reference,
                 "metadata": problem.metadata, "messages": prepared.task.messages(problem.public()), "searches": {}}
            )  # fmt: skip
            timings.append(timing_record(problem.id, pools, rng))
        folder.commit(problems, samples, timings)
    return folder, prepared.task


def sample_record(problem_id: str, pool: str, index: int, text: str, rng: random.Random) -> dict[str, Any]:
    return {
        "problem_id": problem_id, "pool": pool, "index": index, "seed": rng.randint(0, 2**31),
        "temperature": 0.0 if pool == "greedy" else 0.7, "prompt": "What is 1 + 1?", "text": text,
        "prompt_tokens": 50, "generated_tokens": len(text.split()), "stop_reason": "eos", "stop_string": None,
        "mean_logprob": round(-rng.random(), 6), "scores": {}, "verifier_spend": {},
    }  # fmt: skip


def timing_record(problem_id: str, pools: dict[str, list[str]], rng: random.Random) -> dict[str, Any]:
    tokens = {pool: [len(t.split()) for t in found] for pool, found in pools.items()}
    return {
        "problem_id": problem_id, "generated_tokens": sum(sum(v) for v in tokens.values()),
        "group_share_s": round(rng.random(), 4), "prompt_tokens_computed": {p: 50 for p in pools},
        "samples_s": {p: [round(rng.random() * 3, 4) for _ in found] for p, found in pools.items()},
        "sample_tokens": tokens, "ttft_s": {p: 0.01 for p in pools}, "verifier_s": {},
        "search_s": {}, "search_engine_s": {},
    }  # fmt: skip


@pytest.fixture(scope="session")
def run_10k(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunFolder, Any]:
    return synthetic_run(tmp_path_factory.mktemp("bench") / "run")
