"""Countdown and the Game of 24, generated from a seed: reach a target from given numbers with
+ - * / and parentheses.

Levels 1-3 are the Game of 24's rule (use every number exactly once): three numbers to 9, then the
classic four numbers to 13 making 24, then four numbers making another target. Levels 4-5 are
Countdown's (each number at most once): five then six numbers, one or two of them large (25, 50,
75, 100), targets 100-999. Every generated puzzle is solvable: its reference is a solution (found by
exhaustive search at level 2, built with it otherwise). Any correct expression counts: the answer is
parsed with `ast` (numbers, + - * / and parentheses only, bounded size; never eval) and evaluated
exactly with fractions, so 8/(3-8/3) is 24 and a division by zero is a wrong answer.
"""

from __future__ import annotations

import ast
import itertools
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from tsbench.contracts import AnyProblem, Message, Problem, Verdict
from tsbench.errors import UserError
from tsbench.plugins import tasks


@dataclass(frozen=True)
class Level:
    count: int  # numbers in the puzzle
    small: int  # small numbers are 1..small
    large: int  # how many of them are drawn from LARGE instead
    exact: bool  # every number exactly once (Game of 24), else each at most once (Countdown)
    targets: tuple[int, int]  # target range (24, 24 for the Game of 24)


LARGE = (25, 50, 75, 100)
LEVELS: dict[int, Level] = {
    1: Level(3, 9, 0, True, (10, 60)),
    2: Level(4, 13, 0, True, (24, 24)),
    3: Level(4, 13, 0, True, (25, 100)),
    4: Level(5, 10, 1, False, (100, 500)),
    5: Level(6, 10, 2, False, (100, 999)),
}
MAX_CHARS = 200  # longest answer parsed; the longest sensible one is under 60
MAX_NODES = 64
OPS: dict[type, str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
SYSTEM = (
    "Solve the number puzzle. Think step by step, then give one expression that reaches the target "
    "on its own line as 'Answer: <expression>', using only the given numbers, + - * / and parentheses."
)


# -- the checker: model output is hostile input ------------------------------------------------------


def parse(text: str) -> ast.expr | None:
    """The expression's tree if it is only integer literals, + - * / and parentheses, at most
    MAX_CHARS characters and MAX_NODES nodes; else None."""
    if len(text) > MAX_CHARS:
        return None
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        return None
    for node in nodes:
        if isinstance(node, ast.Constant):
            if type(node.value) is not int or node.value < 0:
                return None
        elif not isinstance(node, ast.Expression | ast.BinOp) and type(node) not in OPS:
            return None
    return tree.body


def _value(node: ast.Constant) -> int:
    assert isinstance(node.value, int)  # parse() lets no other constant through
    return node.value


def numbers_used(tree: ast.expr) -> list[int]:
    return [_value(n) for n in ast.walk(tree) if isinstance(n, ast.Constant)]


def evaluate(tree: ast.expr) -> Fraction | None:
    """The exact value, or None on a division by zero."""
    if isinstance(tree, ast.Constant):
        return Fraction(_value(tree))
    assert isinstance(tree, ast.BinOp)
    left, right = evaluate(tree.left), evaluate(tree.right)
    if left is None or right is None:
        return None
    op = OPS[type(tree.op)]
    if op == "/":
        return None if right == 0 else left / right
    return left + right if op == "+" else left - right if op == "-" else left * right


def check(answer: str, numbers: Sequence[int], target: int, exact: bool) -> bool:
    """Whether the expression reaches the target using the numbers as the rule says."""
    tree = parse(answer)
    if tree is None:
        return False
    used, given = Counter(numbers_used(tree)), Counter(numbers)
    if (used != given) if exact else (used - given):
        return False  # numbers checked first, so what is evaluated is small
    return evaluate(tree) == target


_ANSWER = re.compile(r"answer\s*[:=]\s*(.+)", re.IGNORECASE)
_REWRITES = (
    ("\\times", "*"),
    ("\\cdot", "*"),
    ("×", "*"),
    ("·", "*"),
    ("\\div", "/"),
    ("÷", "/"),
    ("−", "-"),
)


def _clean(candidate: str) -> str:
    text = candidate.replace("\\left", "").replace("\\right", "")
    for old, new in _REWRITES:
        text = text.replace(old, new)
    text = re.sub(r"\\boxed\{(.*)\}", r"\1", text).replace("$", "").replace("\\(", "").replace("\\)", "")
    text = text.strip().strip("*").strip().rstrip(".")
    # "(8-4)*6 = 24": the side of an equation that is an expression.
    sides = [s.strip() for s in text.split("=")]
    return next((s for s in sides if re.search(r"\d\s*[-+*/]\s*[\d(]|\)\s*[-+*/]", s)), sides[0])


def extract_expression(text: str) -> str | None:
    """The expression on the last 'Answer:' line, else the last line that parses as one."""
    text = text[-20_000:]  # the answer is at the end; bounded work on a runaway sample
    marked = _ANSWER.findall(text)
    if marked:
        return _clean(marked[-1]) or None
    for line in reversed(text.splitlines()):
        cleaned = _clean(line)
        if cleaned and parse(cleaned) is not None and any(op in cleaned for op in "+-*/"):
            return cleaned
    return None


def canonical_expression(answer: str) -> str:
    """Answers graded alike share this: the numbers used and the value ('3,3,8,8=24'); the
    stripped text where it does not parse."""
    tree = parse(answer)
    value = None if tree is None else evaluate(tree)
    if tree is None or value is None:
        return answer.strip()
    return ",".join(str(n) for n in sorted(numbers_used(tree))) + f"={value}"


# -- the generator ---------------------------------------------------------------------------------


def solve(numbers: Sequence[int], target: int) -> str | None:
    """An expression using every number exactly once that makes target (exhaustive, with
    fractions; for up to 4 numbers), or None."""
    items = [(Fraction(n), str(n)) for n in numbers]

    def search(items: list[tuple[Fraction, str]]) -> str | None:
        if len(items) == 1:
            return items[0][1] if items[0][0] == target else None
        for i, j in itertools.combinations(range(len(items)), 2):
            (a, x), (b, y) = items[i], items[j]
            rest = [items[k] for k in range(len(items)) if k not in (i, j)]
            options = [
                (a + b, f"({x}+{y})"),
                (a * b, f"({x}*{y})"),
                (a - b, f"({x}-{y})"),
                (b - a, f"({y}-{x})"),
            ]
            options += [(a / b, f"({x}/{y})")] if b else []
            options += [(b / a, f"({y}/{x})")] if a else []
            for value, expression in options:
                if (found := search([*rest, (value, expression)])) is not None:
                    return found
        return None

    found = search(items)
    return found[1:-1] if found and found.startswith("(") else found


def _build(rng: random.Random, numbers: list[int]) -> tuple[int, str]:
    """A random expression over all of numbers with positive integer steps: (value, text)."""
    items = [(n, str(n)) for n in numbers]
    while len(items) > 1:
        rng.shuffle(items)
        (a, x), (b, y) = items.pop(), items.pop()
        a, x, b, y = (a, x, b, y) if a >= b else (b, y, a, x)
        choices = [(a + b, f"({x}+{y})"), (a * b, f"({x}*{y})")]
        choices += [(a - b, f"({x}-{y})")] if a > b else []
        choices += [(a // b, f"({x}/{y})")] if b > 1 and a % b == 0 else []
        items.append(rng.choice(choices))
    value, text = items[0]
    return value, text[1:-1] if text.startswith("(") else text


def generate(level: int, seed: int, index: int) -> tuple[list[int], int, str]:
    """Numbers, target and one solution of puzzle `index` at `level`, fixed by `seed`."""
    spec = LEVELS[level]
    rng = random.Random(f"countdown:{seed}:{level}:{index}")
    low, high = spec.targets
    while True:
        numbers = [rng.randint(1, spec.small) for _ in range(spec.count - spec.large)]
        numbers += rng.sample(LARGE, spec.large)
        if low == high:
            solution = solve(numbers, low)
            if solution is not None:
                return sorted(numbers), low, solution
            continue
        chosen = numbers if spec.exact else rng.sample(numbers, rng.randint(3, len(numbers)))
        for _ in range(20):
            value, solution = _build(rng, list(chosen))
            if low <= value <= high:
                return sorted(numbers), value, solution


@dataclass
class CountdownTask:
    """Countdown / Game of 24: reach a target with given numbers and + - * /, levels 1-5."""

    levels: list[int]
    name: str = "countdown"
    description: str = "Countdown / Game of 24 number puzzles, difficulty levels 1-5, checked exactly"
    default_limit: int = 100
    data_sha256: str | None = None
    generation: dict[str, Any] | None = None

    def load(self, limit: int | None, seed: int, data_dir: str | None) -> list[Problem]:
        problems = []
        for index in range(limit or self.default_limit):
            level = self.levels[index % len(self.levels)]
            numbers, target, solution = generate(level, seed, index)
            metadata = {"level": level, "numbers": numbers, "target": target, "exact": LEVELS[level].exact}
            question = f"Numbers: {', '.join(map(str, numbers))}. Target: {target}."
            problems.append(Problem(f"countdown-L{level}-{index:05d}", question, solution, metadata))
        return problems

    def messages(self, problem: AnyProblem) -> list[Message]:
        m = problem.metadata
        rule = (
            "every number exactly once" if m["exact"] else "each number at most once (not all need be used)"
        )
        user = (
            f"Use the numbers {', '.join(map(str, m['numbers']))} to make {m['target']}, {rule}, "
            "with + - * / and parentheses."
        )
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

    def extract(self, text: str) -> str | None:
        return extract_expression(text)

    def canonical(self, answer: str) -> str:
        return canonical_expression(answer)

    def canonical_many(self, answers: Sequence[str]) -> list[str]:
        return [canonical_expression(a) for a in answers]

    def verdict(self, answer: str | None, problem: Problem) -> Verdict:
        if answer is None:
            return Verdict(False, "no_answer")
        m = problem.metadata
        return Verdict(check(answer, m["numbers"], m["target"], m["exact"]))

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return self.verdict(answer, problem).correct


@tasks.register("countdown", CountdownTask.__doc__ or "")
def create_countdown(levels: Any = "1,2", **unknown: Any) -> CountdownTask:
    if unknown:
        raise UserError(f"task countdown: unknown option(s) {', '.join(unknown)}; countdown takes: levels")
    raw = levels if isinstance(levels, list) else str(levels).split(",")
    try:
        parsed = [int(v) for v in raw]
    except ValueError:
        parsed = []
    if not parsed or any(level not in LEVELS for level in parsed):
        raise UserError(
            f"task countdown: option levels={levels!r} is not valid; use levels from 1 to 5, e.g. levels=1,2"
        )
    return CountdownTask(parsed, generation={"max_tokens": 384})
