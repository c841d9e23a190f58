"""LLM-as-a-judge: a generative verifier on any runner, read from one token's logprobs.

The judge is asked "Is this solution correct? Answer Yes or No." (outcome) or "Is the last step
correct?" (process), decodes one greedy token with its top 20 alternatives, and the score is
P(yes) / (P(yes) + P(no)), summed over the spellings of each word (" Yes", "Yes", "yes", ...).
When neither word is among the alternatives the judge has said nothing: the score is 0.5.

Spend: each question costs its prompt tokens, counted canonically (GenerationResult.prompt_tokens,
whatever a prefix cache saved) + 1 generated token, and forward_flops(judge parameters, those
tokens). By default the judge is the policy runner. Process scoring asks one question per step
prefix; answers are kept for the current problem, so a search that re-scores a path pays only for
its new step (within a search, each search keeps its own memory: StepJob.memo, and every
search's questions go in one generate call). `cost_bound` says beforehand what process scoring will cost at most: the judge
runner's count of each unanswered question's prompt tokens, where the last step may be longer by
`extra_tokens` (+ SLACK_TOKENS for re-tokenisation where the step meets the template), + 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from tsbench.contracts import AnyProblem, GenerationRequest, Problem, Runner, Task
from tsbench.ledger import forward_flops
from tsbench.plugins import verifiers

from .base import (
    STEP_DELIMITER,
    RemembersSteps,
    Scored,
    StepJob,
    VerifierSpend,
    join_steps,
    prompt_bound,
    refuse_unknown,
)

SYSTEM = "You are a careful math teacher. You check students' solutions and answer only Yes or No."
OUTCOME_PROMPT = (
    "Problem:\n{question}\n\nSolution:\n{solution}\n\nIs this solution correct? Answer Yes or No."
)
PROCESS_PROMPT = (
    "Problem:\n{question}\n\nSolution so far:\n{previous}\n\nLast step:\n{step}\n\n"
    "Is the last step correct? Answer Yes or No."
)
TOP_LOGPROBS = 20


def _word(token: str) -> str:
    return token.strip().strip(".,!:;*\"'").lower()


def p_yes(top: dict[str, float]) -> float:
    """P(yes) normalised over yes and no, from one position's top alternatives; 0.5 if neither."""
    yes = sum(math.exp(lp) for token, lp in top.items() if _word(token) == "yes")
    no = sum(math.exp(lp) for token, lp in top.items() if _word(token) == "no")
    return yes / (yes + no) if yes + no > 0 else 0.5


class LLMJudge(RemembersSteps):
    """Outcome and process verifier: P(Yes) of a runner asked whether a solution (step) is right.

    Args:
        runner: the judge model (the policy runner by default).
        system: the judge's system message.
        outcome_prompt: template with {question} and {solution}.
        process_prompt: template with {question}, {previous} (the steps before, or "(none)") and {step}.
        delimiter: what joins steps into text.
    """

    name = "llm-judge"
    oracle = False

    def __init__(
        self,
        runner: Runner,
        system: str = SYSTEM,
        outcome_prompt: str = OUTCOME_PROMPT,
        process_prompt: str = PROCESS_PROMPT,
        delimiter: str = STEP_DELIMITER,
    ) -> None:
        self.runner = runner
        self.system = system
        self.outcome_prompt = outcome_prompt
        self.process_prompt = process_prompt
        self.delimiter = delimiter
        self._parameters: int | None = None
        self.reset()

    def _ask(self, questions: Sequence[str]) -> tuple[list[float], list[VerifierSpend]]:
        """P(yes) and spend per question, all in one batched generate call."""
        if not questions:
            return [], []
        probabilities, spends = [], []
        for result in self.runner.generate([self._request(question) for question in questions]):
            completion = result.completions[0]
            top = completion.top_logprobs[0] if completion.top_logprobs else {}
            probabilities.append(p_yes(top))
            spends.append(self._spend(result.prompt_tokens + 1))
        return probabilities, spends

    def _request(self, question: str) -> GenerationRequest:
        return GenerationRequest(
            messages=(("system", self.system), ("user", question)),
            n=1,
            temperature=0.0,
            max_tokens=1,
            logprobs=TOP_LOGPROBS,
        )

    def _spend(self, tokens: float) -> VerifierSpend:
        if self._parameters is None:
            self._parameters = self.runner.info().parameters
        return VerifierSpend(tokens, forward_flops(self._parameters, tokens))

    def _process_question(self, problem: AnyProblem, prefix: Sequence[str]) -> str:
        return self.process_prompt.format(
            question=problem.question,
            previous=join_steps(prefix[:-1], self.delimiter) or "(none)",
            step=prefix[-1],
        )

    def score(self, problem: Problem, task: Task, solutions: Sequence[str]) -> Scored:
        questions = [self.outcome_prompt.format(question=problem.question, solution=s) for s in solutions]
        probabilities, spends = self._ask(questions)
        return Scored(probabilities, sum(spends, VerifierSpend()))

    def score_prefixes(
        self, jobs: Sequence[StepJob], news: Sequence[dict[tuple[str, ...], int]]
    ) -> Iterable[tuple[float, VerifierSpend]]:
        """Every search's new questions in one generate call (RemembersSteps)."""
        questions = [
            self._process_question(job.problem, prefix)
            for job, new in zip(jobs, news, strict=True)
            for prefix in new
        ]
        return zip(*self._ask(questions), strict=True)

    def cost_bound(
        self,
        problem: AnyProblem,
        task: Any,
        steps: Sequence[Sequence[str]],
        extra_tokens: int,
        memo: dict[tuple[str, ...], float] | None = None,
    ) -> VerifierSpend:
        """At least what scoring these paths would spend now, each path being one of `steps` whose
        last step is longer by up to extra_tokens tokens (CostBounded); `memo` is the search's own
        (StepJob.memo), else what score_steps remembers for this problem.

        Each path's last prefix stands for a step not yet written, so it is counted for every path;
        earlier prefixes are counted once, and only when not remembered.
        """
        tokens = prompt_bound(
            self.runner,
            "llm-judge",
            steps,
            self.remembered(problem, memo),
            extra_tokens,
            lambda prefix: self._request(self._process_question(problem, prefix)),
            generated_per_prefix=1,
        )
        return self._spend(tokens)


@verifiers.register("llm-judge", "P(Yes) of an LLM asked if a solution or step is correct (any runner)")
def create(
    runner: Runner,
    system: str = SYSTEM,
    outcome_prompt: str = OUTCOME_PROMPT,
    process_prompt: str = PROCESS_PROMPT,
    delimiter: str = STEP_DELIMITER,
    **options: Any,
) -> LLMJudge:
    refuse_unknown("llm-judge", options, "system, outcome_prompt, process_prompt, delimiter")
    return LLMJudge(runner, system, outcome_prompt, process_prompt, delimiter)
