"""Answer extractors and graders that task declarations name in YAML."""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
_ANSWER_LINE = re.compile(rf"(?:answer|####)\s*(?:is)?\s*[:=]?\s*\**\s*({_NUMBER})", re.IGNORECASE)
_ANY_NUMBER = re.compile(_NUMBER)


def normalize_number(text: str) -> str | None:
    """'1,234.50' -> '1234.5', '$7' -> '7'; None if it is not a number."""
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else repr(value)


def last_boxed(text: str) -> str | None:
    r"""Content of the last \boxed{...} (or \fbox{...}), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def extract_number(text: str) -> str | None:
    """The marked final answer ('Answer: 12', '#### 12', '\\boxed{12}'), else the last number."""
    boxed = last_boxed(text)
    if boxed is not None and (value := normalize_number(boxed)) is not None:
        return value
    marked = _ANSWER_LINE.findall(text)
    if marked:
        return normalize_number(marked[-1])
    numbers = _ANY_NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def extract_boxed(text: str) -> str | None:
    return last_boxed(text)


def after_hashes(text: str) -> str:
    """GSM8K references end with '#### <answer>'."""
    return text.split("####")[-1].strip()


def grade_numeric(answer: str | None, reference: str) -> bool:
    if answer is None:
        return False
    a, r = normalize_number(answer), normalize_number(reference)
    return a is not None and r is not None and abs(float(a) - float(r)) < 1e-6


def _math_verify_worker(answer: str, reference: str) -> bool:
    from math_verify import parse, verify

    # Timeouts off inside the worker: math-verify's own timeouts use SIGALRM, which only works on
    # the main thread. The parent enforces the limit by abandoning the worker process instead.
    gold = parse(f"${reference}$", parsing_timeout=None)
    pred = parse(f"${answer}$", parsing_timeout=None)
    return bool(verify(gold, pred, timeout_seconds=None))


class _MathVerifyPool:
    """One worker process, replaced whenever a check runs past its time limit."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def check(self, answer: str, reference: str, timeout_s: float) -> bool:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1)
        future = self._pool.submit(_math_verify_worker, answer, reference)
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            self._pool.shutdown(wait=False, cancel_futures=True)
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                proc.kill()
            self._pool = None
            return False


_MATH_POOL = _MathVerifyPool()
MATH_VERIFY_TIMEOUT_S = 10.0


def grade_math_equivalent(answer: str | None, reference: str) -> bool:
    """Symbolic equivalence with math-verify, under a time limit that works off the main thread."""
    if answer is None:
        return False
    if answer.strip() == reference.strip():
        return True
    return _MATH_POOL.check(answer, reference, MATH_VERIFY_TIMEOUT_S)


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "number": extract_number,
    "boxed": extract_boxed,
}
REFERENCES: dict[str, Callable[[str], str]] = {
    "as_is": str.strip,
    "after_hashes": after_hashes,
}
GRADERS: dict[str, Callable[[str | None, str], bool]] = {
    "numeric": grade_numeric,
    "math_equivalent": grade_math_equivalent,
}
