"""Procedural arithmetic word problems with a difficulty dial, generated from a seed.

Level 1 is one operation on numbers up to 12 ("What is 7 * 9?"); each level above adds a step
and widens the numbers, so even a 135M-parameter model shows an accuracy gradient.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tsbench.contracts import AnyProblem, Message, Problem, Verdict
from tsbench.errors import UserError
from tsbench.plugins import tasks

from .answers import canonical_number, extract_number, verdict_numeric

# level -> (steps after the start, largest operand)
LEVELS: dict[int, tuple[int, int]] = {1: (1, 12), 2: (2, 20), 3: (3, 50), 4: (4, 100), 5: (5, 1000)}
NAMES = ["Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Ivy", "Jack", "Lena", "Omar"]
# Disjoint from NAMES: a train word problem names one of these, so it never equals a test question.
TRAIN_NAMES = ["Maya", "Noah", "Olivia", "Liam", "Sofia", "Leo", "Zoe", "Max", "Nora", "Theo", "Ruby", "Sam"]
ITEMS = ["apples", "marbles", "stickers", "books", "coins", "cards", "pencils", "shells"]
SYSTEM = (
    "Solve the arithmetic problem. Think step by step, then give the final answer on its own line "
    "as 'Answer: <number>'."
)
# The zero-shot prompt: the same task, no request for working.
DIRECT_SYSTEM = "Solve the arithmetic problem. Give only the final answer as 'Answer: <number>'."
# Train examples scanned at most per example asked, before giving up on finding distinct ones.
TRAIN_SCAN = 20


@dataclass(frozen=True)
class Worked:
    """A generated problem with the working the generator did: one sentence per operation."""

    question: str
    answer: int
    steps: tuple[str, ...]

    def solution(self) -> str:
        """The working, then the task's answer line."""
        return " ".join(self.steps) + f"\nAnswer: {self.answer}"


def _operation(rng: random.Random, a: int, b: int) -> Worked:
    op = rng.choice("+-*")
    if op == "-" and b > a:
        a, b = b, a
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return Worked(f"What is {a} {op} {b}?", value, (f"{a} {op} {b} = {value}.",))


def _single_operation(rng: random.Random, top: int) -> Worked:
    a, b = rng.randint(1, top), rng.randint(1, top)
    return _operation(rng, a, b)


def _train_single_operation(rng: random.Random, top: int) -> Worked:
    """Like _single_operation, but one operand is above `top`: every pair up to `top` is a possible
    test question, so only numbers beyond it keep the train split disjoint from every test split."""
    big, other = rng.randint(top + 1, 2 * top), rng.randint(1, 2 * top)
    a, b = (big, other) if rng.random() < 0.5 else (other, big)
    return _operation(rng, a, b)


def _word_problem(rng: random.Random, steps: int, top: int, names: Sequence[str] = NAMES) -> Worked:
    # The draws from rng and the question's text must stay exactly as they were: they fix every
    # published test problem. The working is recorded beside them and draws nothing.
    name, item = rng.choice(names), rng.choice(ITEMS)
    total = rng.randint(2, top)
    sentences = [f"{name} has {total} {item}."]
    working = [f"{name} has {total} {item}."]
    allow_products = steps >= 3
    for _ in range(steps):
        before = total
        choices = ["gain", "lose"] + (["packs", "share"] if allow_products else [])
        kind = rng.choice(choices)
        if kind == "lose" and total < 2:
            kind = "gain"
        if kind == "gain":
            n = rng.randint(1, top)
            total += n
            sentences.append(f"Then {name} gets {n} more {item}.")
            working.append(f"{name} gets {n} more: {before} + {n} = {total}.")
        elif kind == "lose":
            n = rng.randint(1, total - 1)
            total -= n
            sentences.append(f"Then {name} gives away {n} {item}.")
            working.append(f"{name} gives away {n}: {before} - {n} = {total}.")
        elif kind == "packs":
            packs, size = rng.randint(2, 5), rng.randint(2, max(2, top // 10))
            total += packs * size
            sentences.append(f"Then {name} buys {packs} packs with {size} {item} in each pack.")
            working.append(f"{name} buys {packs} packs of {size}: {before} + {packs} * {size} = {total}.")
        else:
            divisors = [d for d in range(2, 6) if total % d == 0]
            if not divisors:
                n = rng.randint(1, top)
                total += n
                sentences.append(f"Then {name} finds {n} more {item}.")
                working.append(f"{name} finds {n} more: {before} + {n} = {total}.")
                continue
            d = rng.choice(divisors)
            total //= d
            sentences.append(f"Then {name} splits the {item} into {d} equal groups and keeps one group.")
            working.append(
                f"{name} splits {before} into {d} equal groups and keeps one: {before} / {d} = {total}."
            )
    sentences.append(f"How many {item} does {name} have now?")
    return Worked(" ".join(sentences), total, tuple(working))


def generate_worked(level: int, seed: int, index: int) -> Worked:
    """Test problem `index` at `level`, fixed by `seed`, with its working."""
    steps, top = LEVELS[level]
    rng = random.Random(f"arith:{seed}:{level}:{index}")
    return _single_operation(rng, top) if steps == 1 else _word_problem(rng, steps, top)


def generate(level: int, seed: int, index: int) -> tuple[str, int]:
    """The question and integer answer of problem `index` at `level`, fixed by `seed`."""
    worked = generate_worked(level, seed, index)
    return worked.question, worked.answer


def train_example(level: int, seed: int, index: int) -> Worked:
    """Train problem `index` at `level`: its own seed namespace, and made so that it can equal no
    test question whatever the test seed: level 1 has an operand above the level's largest, word
    problems name people from TRAIN_NAMES, which no test problem uses."""
    steps, top = LEVELS[level]
    rng = random.Random(f"arith-train:{seed}:{level}:{index}")
    if steps == 1:
        return _train_single_operation(rng, top)
    return _word_problem(rng, steps, top, TRAIN_NAMES)


def parse_levels(value: Any) -> list[int]:
    raw = value if isinstance(value, list) else str(value).split(",")
    try:
        levels = [int(v) for v in raw]
    except ValueError:
        levels = []
    if not levels or any(level not in LEVELS for level in levels):
        raise UserError(
            f"task arith: option levels={value!r} is not valid; use levels from 1 to 5, e.g. levels=1,2"
        )
    return levels


@dataclass
class ArithTask:
    """Procedural arithmetic word problems, levels 1 (one operation) to 5 (five steps, numbers to 1000)."""

    levels: list[int]
    name: str = "arith"
    description: str = "procedural arithmetic word problems, difficulty levels 1-5"
    default_limit: int = 100
    data_sha256: str | None = None
    generation: dict[str, Any] | None = None

    def load(self, limit: int | None, seed: int, data_dir: str | None) -> list[Problem]:
        problems = []
        for index in range(limit or self.default_limit):
            level = self.levels[index % len(self.levels)]
            question, answer = generate(level, seed, index)
            problems.append(Problem(f"arith-L{level}-{index:05d}", question, str(answer), {"level": level}))
        return problems

    def messages(self, problem: AnyProblem) -> list[Message]:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": problem.question}]

    def direct_messages(self, problem: AnyProblem) -> list[Message]:
        """The zero-shot prompt: the final answer only, no working asked for."""
        return [{"role": "system", "content": DIRECT_SYSTEM}, {"role": "user", "content": problem.question}]

    def examples(self, k: int, seed: int) -> list[Problem]:
        """k distinct worked examples from the train split at the task's levels (cycled as in
        load), drawn with `seed`; the same seed gives the same first examples whatever k.

        Returns:
            Problems whose reference is the working ending in 'Answer: N' and metadata["answer"] N.
        """
        found: list[Problem] = []
        seen: set[str] = set()
        for index in range(TRAIN_SCAN * k + 100):
            if len(found) == k:
                break
            level = self.levels[index % len(self.levels)]
            worked = train_example(level, seed, index)
            if worked.question in seen:
                continue
            seen.add(worked.question)
            metadata = {"level": level, "answer": str(worked.answer)}
            found.append(
                Problem(f"arith-train-L{level}-{index:05d}", worked.question, worked.solution(), metadata)
            )
        if len(found) < k:
            raise UserError(
                f"task arith: asked for {k} train examples at levels {self.levels}, but only {len(found)} "
                "distinct ones were found; ask for fewer, or add higher levels"
            )
        return found

    def extract(self, text: str) -> str | None:
        return extract_number(text)

    def canonical(self, answer: str) -> str:
        return canonical_number(answer)

    def canonical_many(self, answers: Sequence[str]) -> list[str]:
        return [canonical_number(a) for a in answers]

    def verdict(self, answer: str | None, problem: Problem) -> Verdict:
        return verdict_numeric(answer, problem.reference)

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return self.verdict(answer, problem).correct


@tasks.register("arith", ArithTask.__doc__ or "")
def create_arith(levels: Any = "1,2", **unknown: Any) -> ArithTask:
    if unknown:
        raise UserError(f"task arith: unknown option(s) {', '.join(unknown)}; arith takes: levels")
    return ArithTask(parse_levels(levels), generation={"max_tokens": 192})
