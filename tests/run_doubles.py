"""Real run folders in a second, for report tests: the real run loop, records and scoring, with a
TEST DOUBLE for the model (no model can run in a unit test's time).

`ScriptedRunner` answers each arith question right with a probability set by its level (seeded per
sample, so runs repeat), cuts about one sample in eight at the token cap, and gives a mean
logprob. Everything downstream of the runner is tsbench's own code.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tsbench.cli import run_prepared
from tsbench.contracts import Completion, GenerationRequest, GenerationResult, RunnerInfo
from tsbench.run import prepare
from tsbench.spec import build_spec

RIGHT_BY_LEVEL = {1: 0.8, 2: 0.5, 3: 0.2}


class ScriptedRunner:
    """TEST DOUBLE for Runner: reads the reference from the problems it was given, not the prompt."""

    def __init__(self, problems: Sequence[Any]) -> None:
        self.truth = {p.question: (p.reference, int(p.metadata.get("level", 1))) for p in problems}

    def info(self) -> RunnerInfo:
        return RunnerInfo("scripted-model", 1_000_000, "script", "0", "none", model_sha256="0" * 64)

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return 20

    def _completion(self, request: GenerationRequest, index: int) -> Completion:
        seed = request.seed_for(index)
        rng = random.Random(seed)
        question = next(content for role, content in request.messages if role == "user")
        reference, level = self.truth[question]
        if rng.random() < 0.125:
            return Completion("Let me think step by step and", request.max_tokens, "length", seed, [-1.0])
        right = request.temperature == 0 and level == 1 or rng.random() < RIGHT_BY_LEVEL.get(level, 0.3)
        answer = reference if right else str(int(float(reference)) + rng.randint(1, 3))
        text = f"Working it out.\nAnswer: {answer}"
        logprob = -0.2 if right else -0.9  # a verifier that reads logprobs can tell them apart
        return Completion(text, 8, "eos", seed, [logprob] * 8 if request.logprobs is not None else None)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [
            GenerationResult([self._completion(r, i) for i in range(r.n)], 20, 20, 0.01 * r.n, 0.001)
            for r in requests
        ]

    def close(self) -> None:
        pass


def make_run(output: Path, **values: Any) -> Path:
    """A finished run folder at `output` from spec values (arith levels 1-3, 12 problems,
    greedy/majority/pass@k/best-of-n with self-certainty and the oracle verifier, budgets 1,2,4 by default)."""
    spec_values: dict[str, Any] = {
        "task": "arith",
        "task_options": {"levels": "1,2,3"},
        "limit": 12,
        "seed": 0,
        "strategies": "greedy,majority,pass@k,best-of-n",
        "verifiers": "self-certainty,oracle",
        "budgets": "1,2,4",
        "max_tokens": 64,
        "output": str(output),
    }
    spec_values.update(values)
    prepared = prepare(build_spec(spec_values, "test"))
    run_prepared(prepared, ScriptedRunner(prepared.problems), True)
    return output
