"""Answer extractors, canonical forms and graders that task declarations name in YAML."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal

from tsbench.contracts import Verdict

from .math_equivalence import canonical_math_many, grade_math_equivalent, verdict_math_equivalent

_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
_ANSWER_LINE = re.compile(rf"(?:answer|####)\s*(?:is)?\s*[:=]?\s*\**\s*({_NUMBER})", re.IGNORECASE)
_ANY_NUMBER = re.compile(_NUMBER)
# Plain decimals only: float() would also take 'nan', 'inf', '1e999' and '1_000', none of which a
# model means as a number here, and exponents would let a short answer expand to a huge string.
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")


def normalize_number(text: str) -> str | None:
    """'1,234.50' -> '1234.5', '$7' -> '7', '-0' -> '0'; None if it is not a number."""
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    if not _PLAIN_NUMBER.fullmatch(cleaned):
        return None
    # Decimal, not float: integers past 2**53 keep every digit, so distinct answers stay distinct.
    value = Decimal(cleaned)
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


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


def verdict_numeric(answer: str | None, reference: str) -> Verdict:
    if answer is None:
        return Verdict(False, "no_answer")
    a, r = normalize_number(answer), normalize_number(reference)
    return Verdict(a is not None and r is not None and abs(float(a) - float(r)) < 1e-6)


def grade_numeric(answer: str | None, reference: str) -> bool:
    return verdict_numeric(answer, reference).correct


def canonical_number(answer: str) -> str:
    """The normalised number, or the stripped text when the answer is not a number."""
    return normalize_number(answer) or answer.strip()


# --- math-verify, in a worker process under a time limit ---------------------------------------


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
VERDICTS: dict[str, Callable[[str | None, str], Verdict]] = {
    "numeric": verdict_numeric,
    "math_equivalent": verdict_math_equivalent,
}
# Canonical forms of many answers at once: a grader's notion of equal answers, made a key.
CANONICALS: dict[str, Callable[[Sequence[str]], list[str]]] = {
    "numeric": lambda answers: [canonical_number(a) for a in answers],
    "math_equivalent": canonical_math_many,
}
