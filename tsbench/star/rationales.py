"""STaR's data step: sample rationales on the train split and keep those that reach the answer.

A rationale is kept only when the task's own extractor finds an answer in it and the task's grader
marks that answer correct against the train problem's answer (metadata["answer"]); one with no
answer, a wrong one, or one cut by the token cap (it never ended its turn) is never kept. Problems
with no kept rationale are rationalised as in the paper: sampled again with "The answer is X."
added to the user turn, and what reaches X is kept with the prompt WITHOUT the hint, which is what
the model is trained on.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tsbench.contracts import (
    GenerationRequest,
    GenerationResult,
    Message,
    Problem,
    PublicTask,
    Task,
    task_stop,
    verdict_of,
)
from tsbench.errors import UserError
from tsbench.ledger import forward_flops
from tsbench.progress import Progress

SAMPLE_TEMPERATURE = 0.7


@dataclass(frozen=True)
class Rationale:
    """One kept (prompt, rationale) pair.

    Args:
        problem_id: the train problem's id.
        messages: the task's prompt for it, never with the hint (what training sees).
        text: the rationale as the model wrote it.
        rationalised: True when it was sampled with the answer given as a hint.
    """

    problem_id: str
    messages: tuple[tuple[str, str], ...]
    text: str
    rationalised: bool


@dataclass
class SamplingSpend:
    """What sampling rationales cost: a request's prompt is charged once however many samples it
    asks for (the ledger's canonical cost), every generated token in full."""

    requests: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    def add(self, results: Sequence[GenerationResult]) -> None:
        for result in results:
            self.requests += 1
            self.samples += len(result.completions)
            self.prompt_tokens += result.prompt_tokens
            self.generated_tokens += sum(c.tokens for c in result.completions)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.generated_tokens

    def flops(self, parameters: int) -> float:
        return forward_flops(parameters, self.tokens)


@dataclass
class RationaleSet:
    """A round's training data and how it was found.

    Args:
        kept: the kept pairs, distinct texts per problem, in problem order.
        problems: train problems sampled.
        solved: problems with a kept rationale from the plain prompt.
        rationalised: problems with a kept rationale only from the hinted prompt.
        correct_samples, hinted_correct_samples: samples graded correct (before de-duplication).
        spend: sampling cost, both phases.
    """

    kept: list[Rationale] = field(default_factory=list)
    problems: int = 0
    solved: int = 0
    rationalised: int = 0
    correct_samples: int = 0
    hinted_correct_samples: int = 0
    spend: SamplingSpend = field(default_factory=SamplingSpend)


@dataclass(frozen=True)
class SamplingSettings:
    """How rationales are sampled: `samples` per problem, seeds fixed from `seed` and the round."""

    samples: int
    max_tokens: int
    seed: int
    temperature: float = SAMPLE_TEMPERATURE
    top_p: float = 1.0


def answer_of(problem: Problem) -> str:
    """The train problem's final answer alone (metadata["answer"])."""
    answer = problem.metadata.get("answer")
    if answer is None or not str(answer).strip():
        raise UserError(
            f"train problem {problem.id} has no metadata['answer']; the task's examples() must give "
            "each train problem its final answer there"
        )
    return str(answer).strip()


def train_split(task: Task, count: int, seed: int, test: Sequence[Problem]) -> tuple[list[Problem], int]:
    """`count` train problems from the task's train split, less any whose question is a test question.

    Args:
        task: the task (its optional examples(k, seed) is the train split).
        count: problems to draw.
        seed: the run's seed.
        test: the run's test problems; a train question equal to one of theirs is dropped.

    Returns:
        (train problems, how many were dropped as test questions).
    """
    drawn = PublicTask(task).examples(count, seed)
    held_out = {_normal(p.question) for p in test}
    train = [p for p in drawn if _normal(p.question) not in held_out]
    for problem in train:
        answer_of(problem)
    if not train:
        raise UserError(
            f"task {task.name}: all {len(drawn)} train problems drawn are test questions of this run; "
            "raise --train-problems or change --seed"
        )
    return train, len(drawn) - len(train)


def _normal(question: str) -> str:
    return " ".join(question.split())


def with_hint(messages: Sequence[Message], answer: str) -> list[Message]:
    """The prompt with "The answer is X." added to its last user turn (rationalisation)."""
    hinted = [dict(m) for m in messages]
    for message in reversed(hinted):
        if message["role"] == "user":
            message["content"] = f"{message['content']} The answer is {answer}."
            return hinted
    raise UserError("the task's prompt has no user turn to add the answer hint to; STaR needs one")


def sample_seed(seed: int, round_index: int, phase: str, problem_id: str, index: int) -> int:
    """A sample's seed, fixed by the run's seed, the round, the phase and the problem."""
    key = f"star:{seed}:{round_index}:{phase}:{problem_id}:{index}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")


def keeps(task: Task, text: str, stop_reason: str, problem: Problem) -> bool:
    """Whether a rationale is kept: it ended its turn and its extracted answer grades correct
    against the problem's answer (task.extract, then the task's verdict or grade)."""
    if stop_reason == "length" or not text.strip():
        return False
    graded = Problem(problem.id, problem.question, answer_of(problem), problem.metadata)
    return verdict_of(task, task.extract(text), graded).correct


def _requests(
    task: Task, problems: Sequence[Problem], settings: SamplingSettings, round_index: int, hinted: bool
) -> list[GenerationRequest]:
    phase = "hint" if hinted else "plain"
    stop = task_stop(task)
    requests = []
    for problem in problems:
        messages = task.messages(problem.public())
        if hinted:
            messages = with_hint(messages, answer_of(problem))
        seeds = tuple(
            sample_seed(settings.seed, round_index, phase, problem.id, i) for i in range(settings.samples)
        )
        requests.append(
            GenerationRequest(
                messages=tuple((m["role"], m["content"]) for m in messages),
                n=settings.samples,
                temperature=settings.temperature,
                top_p=settings.top_p,
                max_tokens=settings.max_tokens,
                stop=stop,
                seeds=seeds,
            )
        )
    return requests


def _generate(
    runner: Any, requests: list[GenerationRequest], spend: SamplingSpend, progress: Progress
) -> list[GenerationResult]:
    """Generate in fixed chunks of about one engine batch, so a rerun batches the same way."""
    per_call = max(1, int(getattr(runner, "batch_size", 32)) // max(1, requests[0].n if requests else 1))
    results: list[GenerationResult] = []
    for at in range(0, len(requests), per_call):
        chunk = requests[at : at + per_call]
        started = time.perf_counter()
        found = runner.generate(chunk)
        spend.seconds += time.perf_counter() - started
        spend.add(found)
        progress.tokens(sum(c.tokens for r in found for c in r.completions))
        progress.advance(len(chunk))
        results += found
    return results


def sample_rationales(
    runner: Any,
    task: Task,
    problems: Sequence[Problem],
    settings: SamplingSettings,
    round_index: int,
    show_progress: bool = True,
) -> RationaleSet:
    """Sample, filter and rationalise one round's training data with the current model.

    Args:
        runner: the current model's runner (its generate; hf here).
        task: the task, whose prompt, extractor and grader decide what is kept.
        problems: the train problems (reference and metadata["answer"] included).
        settings: samples per problem, token cap, seed.
        round_index: the round (1..R); it enters every sample's seed.
        show_progress: a progress bar on stderr.

    Returns:
        The kept pairs, with counts and the sampling spend of both phases.
    """
    found = RationaleSet(problems=len(problems))
    progress = Progress(len(problems), 0, f"round {round_index}: rationales", enabled=show_progress)
    try:
        results = _generate(
            runner, _requests(task, problems, settings, round_index, False), found.spend, progress
        )
        unsolved: list[Problem] = []
        for problem, result in zip(problems, results, strict=True):
            kept = _kept(task, problem, result, found, hinted=False)
            if kept:
                found.solved += 1
            else:
                unsolved.append(problem)
        if unsolved:
            progress.close()
            label = f"round {round_index}: rationalising"
            progress = Progress(len(unsolved), 0, label, enabled=show_progress)
            hinted = _requests(task, unsolved, settings, round_index, True)
            for problem, result in zip(
                unsolved, _generate(runner, hinted, found.spend, progress), strict=True
            ):
                if _kept(task, problem, result, found, hinted=True):
                    found.rationalised += 1
    finally:
        progress.close()
    return found


def _kept(task: Task, problem: Problem, result: GenerationResult, found: RationaleSet, hinted: bool) -> int:
    """Add the problem's correct, distinct rationales to `found`; returns how many were added."""
    messages = tuple((m["role"], m["content"]) for m in task.messages(problem.public()))
    texts: list[str] = []
    for completion in result.completions:
        if keeps(task, completion.text, completion.stop_reason, problem):
            if hinted:
                found.hinted_correct_samples += 1
            else:
                found.correct_samples += 1
            if completion.text not in texts:
                texts.append(completion.text)
    found.kept += [Rationale(problem.id, messages, text, hinted) for text in texts]
    return len(texts)
