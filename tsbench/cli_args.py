"""Flag values the command line parses the same way everywhere: KEY=VALUE pairs, scalars, counts."""

from __future__ import annotations

from typing import Any

import yaml

from tsbench.errors import UserError


def pairs(pairs: list[str], flag: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{flag}: '{pair}' is not KEY=VALUE; write e.g. --task-arg levels=1,2")
        options[key] = value
    return options


def scalar(value: str) -> Any:
    """'4' -> 4, '0.5' -> 0.5, 'true' -> True; anything else stays text."""
    loaded = yaml.safe_load(value)
    return loaded if isinstance(loaded, int | float | bool) else value


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def positive_int(value: str, flag: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise UserError(f"{flag}: '{value}' is not a positive whole number; write e.g. {flag} 20")
    return number
