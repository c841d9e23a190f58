"""The scheduler: every live search's needs in shared batches, each search's verifier state its own,
and the same results as each search alone. Runners and verifiers here are the test doubles of
test_search_doubles (scripted steps); the real model runs batched searches in test_run_end_to_end."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from test_search_doubles import PROBLEM, TASK, ScriptedRunner, ScriptedVerifier, named_steps, solve

from tsbench.contracts import Completion, GenerationRequest, PublicTask
from tsbench.progress import Progress
from tsbench.scheduler import Job, Scheduler, chunks, estimates
from tsbench.strategies.base import Attempt, SearchBudget
from tsbench.strategies.beam_search import BeamSearch
from tsbench.strategies.dvts import DVTS
from tsbench.strategies.mcts import MCTS
from tsbench.strategies.particle_filtering import ParticleFiltering, resample
from tsbench.strategies.stepping import Path
from tsbench.verifiers.base import BoundVerifier
from tsbench.verifiers.llm_judge import LLMJudge
from tsbench.verifiers.self_certainty import SelfCertainty


def jobs(
    strategy: Any, runner: Any, verifier: Any, seeds: Sequence[int], tokens: float = math.inf
) -> list[Job]:
    """One search job per seed, as the run builds them: each with its own bound verifier."""
    found = []
    for seed in seeds:
        bound = BoundVerifier(verifier, PROBLEM, TASK)
        search = strategy.search(
            PROBLEM.public(),
            PublicTask(TASK),
            estimates(runner, bound),
            SearchBudget(8, tokens=tokens),
            np.random.default_rng(seed),
        )
        found.append(Job(search, bound, f"seed {seed}"))
    return found


def outcome(attempt: Attempt) -> tuple[str, Any, Any]:
    return attempt.text, attempt.spend, attempt.trace


SEARCHES = {
    "beam-search": lambda: BeamSearch(beam_width=2, max_steps=4),
    "dvts": lambda: DVTS(beam_width=2, max_steps=4),
    "mcts": lambda: MCTS(expansions=2, max_steps=4),
    "particle-filtering": lambda: ParticleFiltering(max_steps=4),
}


@pytest.mark.parametrize("search", SEARCHES)
def test_searches_step_together_and_find_what_each_finds_alone(search: str) -> None:
    alone_runner = ScriptedRunner(named_steps(3))
    alone = [solve(SEARCHES[search](), alone_runner, ScriptedVerifier(), 8, seed=s) for s in range(4)]
    runner = ScriptedRunner(named_steps(3))
    together = jobs(SEARCHES[search](), runner, ScriptedVerifier(), range(4))
    Scheduler(runner, batch_sequences=1000).run(together)
    assert [outcome(job.result) for job in together] == [outcome(a) for a in alone]
    # Lockstep: the four searches' rounds share generate calls, so there are far fewer calls.
    assert len(runner.calls) < len(alone_runner.calls)
    first = runner.calls[0]
    assert sum(r.n for r in first) == 4 * sum(r.n for r in alone_runner.calls[0])
    assert all(job.generated_tokens > 0 and job.engine_s >= 0 for job in together)


def test_live_searches_are_capped_and_batches_cut_to_the_engine_size() -> None:
    runner = ScriptedRunner(named_steps(3))
    capped = jobs(BeamSearch(beam_width=2, max_steps=4), runner, ScriptedVerifier(), range(4))
    Scheduler(runner, batch_sequences=1000, max_live=1).run(capped)
    one_at_a_time = len(runner.calls)
    runner = ScriptedRunner(named_steps(3))
    cut = jobs(BeamSearch(beam_width=2, max_steps=4), runner, ScriptedVerifier(), range(4))
    Scheduler(runner, batch_sequences=8).run(cut)
    assert all(sum(r.n for r in call) <= 8 for call in runner.calls)
    assert [outcome(j.result) for j in cut] == [outcome(j.result) for j in capped]
    runner = ScriptedRunner(named_steps(3))
    Scheduler(runner, batch_sequences=1000).run(
        jobs(BeamSearch(beam_width=2, max_steps=4), runner, ScriptedVerifier(), range(4))
    )
    assert one_at_a_time > len(runner.calls)


def test_chunks_keep_requests_whole_and_in_order() -> None:
    requests = [GenerationRequest((), n=n) for n in (3, 3, 3, 9, 1)]
    assert chunks(requests, 6) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert chunks(requests, 100) == [(0, 5)]
    assert chunks([], 4) == []


def test_each_concurrent_search_pays_for_its_own_judge_questions_in_one_call_per_round() -> None:
    # llm-judge remembers the step scores it paid for; two searches of one problem, live together,
    # must each pay as if alone (no free scores from the other's memory), and each round's
    # questions of both go to the judge in one generate call.
    alone_judge = ScriptedRunner(named_steps(3))
    alone = solve(
        BeamSearch(beam_width=2, max_steps=3), ScriptedRunner(named_steps(3)), LLMJudge(alone_judge), 8
    )
    judge_runner = ScriptedRunner(named_steps(3))
    judge, runner = LLMJudge(judge_runner), ScriptedRunner(named_steps(3))
    pair = jobs(BeamSearch(beam_width=2, max_steps=3), runner, judge, [0, 0])
    Scheduler(runner, batch_sequences=1000).run(pair)
    assert pair[0].result.spend.verifier_tokens == pair[1].result.spend.verifier_tokens > 0
    assert len(judge_runner.calls) == len(alone_judge.calls)
    assert sum(len(call) for call in judge_runner.calls) == 2 * sum(len(call) for call in alone_judge.calls)
    assert judge._cache == {}  # the verifier as built holds nobody's memory
    assert alone.spend == pair[0].result.spend == pair[1].result.spend


class WithLogprobs(ScriptedRunner):
    """ScriptedRunner whose steps carry chosen-token logprobs: step "sX" has mean logprob -len/10."""

    def reply(self, request: GenerationRequest, index: int) -> Completion:
        completion = super().reply(request, index)
        if request.logprobs == 0 and request.stop:
            return replace(completion, logprobs=[-len(completion.text) / 10] * max(1, completion.tokens))
        return completion


def test_self_certainty_scores_a_step_by_its_own_mean_logprob_for_free() -> None:
    attempt = solve(
        BeamSearch(beam_width=2, max_steps=2), WithLogprobs(named_steps(2)), SelfCertainty(), 4, tokens=4000
    )
    children = attempt.trace["rounds"][0]["children"]
    for child in children:
        assert child["scores"] == [round(math.exp(-len(child["steps"][-1]) / 10), 6)]
    assert attempt.spend.verifier_tokens == 0
    with pytest.raises(ValueError, match="step_logprobs"):
        SelfCertainty().score_steps(PROBLEM, TASK, [["a step"]])


def test_particles_are_drawn_by_score_and_the_draw_repeats() -> None:
    good, bad = Path(["good"], [1.0]), Path(["bad"], [0.0])
    drawn = resample([good, bad] * 4, "last", 0.05, np.random.default_rng(0))
    assert len(drawn) == 8 and all(p is good for p in drawn)
    even = resample([good, bad] * 4, "last", 1e6, np.random.default_rng(1))
    assert {p.steps[0] for p in even} == {"good", "bad"}
    assert even == resample([good, bad] * 4, "last", 1e6, np.random.default_rng(1))


def test_particle_filtering_keeps_complete_particles_and_answers_with_the_best() -> None:
    verifier = ScriptedVerifier({"s1": 0.99, "s1.0": 0.99})
    attempt = solve(
        ParticleFiltering(temperature=0.05, max_steps=4), ScriptedRunner(named_steps(2)), verifier, 4
    )
    assert attempt.text == "s1\n\ns1.0"
    rounds = attempt.trace["rounds"]
    assert rounds[0]["kept"][0]["steps"] == ["s1"]  # the highest-scored first step took the draws
    assert attempt.trace["stopped"] == "all particles complete" and attempt.trace["width"] == 4


def test_a_search_that_yields_something_else_is_named() -> None:
    def bad() -> Any:
        yield "generate please"

    with pytest.raises(TypeError, match="search odd yielded str"):
        Scheduler(ScriptedRunner(named_steps(2)), 8).run([Job(bad(), None, "odd")])


class Sessions(ScriptedRunner):
    """TEST DOUBLE for a runner that batches continuously (tsbench.contracts.OpensSessions): each
    step finishes the two oldest queued requests, so requests of different searches finish at
    different steps, as on a real engine."""

    def open_session(self) -> Any:
        runner, queue, keys = self, list[tuple[int, GenerationRequest]](), itertools.count()

        class Session:
            def add(self, request: GenerationRequest) -> int:
                queue.append((next(keys), request))
                return queue[-1][0]

            def step(self) -> list[tuple[int, Any]]:
                taken = [queue.pop(0) for _ in range(min(2, len(queue)))]
                results = runner.generate([request for _, request in taken])
                return [(key, result) for (key, _), result in zip(taken, results, strict=True)]

            def close(self) -> None:
                pass

        return Session()


@pytest.mark.parametrize("search", SEARCHES)
def test_with_continuous_batching_each_search_finds_what_it_finds_alone(search: str) -> None:
    alone = [
        solve(SEARCHES[search](), ScriptedRunner(named_steps(3)), ScriptedVerifier(), 8, seed=s)
        for s in range(3)
    ]
    runner = Sessions(named_steps(3))
    together = jobs(SEARCHES[search](), runner, ScriptedVerifier(), range(3))
    Scheduler(runner, batch_sequences=1000).run(together)
    assert [outcome(job.result) for job in together] == [outcome(a) for a in alone]
    assert all(job.generated_tokens > 0 for job in together)


def test_the_progress_bar_moves_per_job_and_shows_live_tokens_per_second(capsys: Any) -> None:
    progress = Progress(total=4, done=1, label="run x")
    runner = ScriptedRunner(named_steps(3))
    found = jobs(BeamSearch(beam_width=2, max_steps=4), runner, ScriptedVerifier(), range(3))
    for job in found:
        job.units = 1.0
    Scheduler(runner, 1000, on_tokens=progress.tokens, on_done=lambda job: progress.advance(job.units)).run(
        found
    )
    assert progress.bar.n == 4
    assert "tok/s" in progress.bar.postfix
    progress.close()
    assert "4/4" in capsys.readouterr().err
