"""Plain data across the sandbox's pipes, one JSON message per line.

The judge and the worker run as scripts under `python -I` (standard library only) and load this
file by path. Values arrive as exact built-in types the judge builds itself: a subclass of one
(a Counter, a namedtuple) crosses as its base type's contents, and any other object as an
Opaque that keeps only its truth value and equals nothing but itself, so an object with a forged
`__eq__` compares as what it is, never as what it claims.
"""

from __future__ import annotations

import json
from typing import Any

MAX_MESSAGE = 8 << 20  # bytes per message; a longer line is refused, not parsed

_SCALARS = (type(None), bool, int, float, str)
_BASES: tuple[Any, ...] = (int, float, str, bytes, complex, tuple, list, set, frozenset, dict)


def encode(value: Any) -> Any:
    """A JSON-able tree for a plain value (None, bool, int, float, str, bytes, complex, and lists,
    tuples, sets, frozensets and dicts of them); TypeError for anything else."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list:
        return [encode(v) for v in value]
    if kind is tuple:
        return {"$t": [encode(v) for v in value]}
    if kind is set:
        return {"$s": [encode(v) for v in value]}
    if kind is frozenset:
        return {"$f": [encode(v) for v in value]}
    if kind is dict:
        return {"$d": [[encode(k), encode(v)] for k, v in value.items()]}
    if kind is bytes:
        return {"$b": value.hex()}
    if kind is complex:
        return {"$c": [value.real, value.imag]}
    base: Any
    for base in _BASES:
        if isinstance(value, base):  # a subclass: its contents as the base type, by the base's methods
            if base is dict:
                return encode(dict(dict.items(value)))
            if base in (tuple, list, set, frozenset, bytes):
                return encode(base(value))
            return encode(base.__new__(base, value))
    return {"$o": [kind.__name__[:100], bool(value)]}


class Opaque:
    """What the judge holds for a value that is not plain data: its type name and truth value."""

    def __init__(self, type_name: str, truth: bool) -> None:
        self.type_name, self.truth = type_name, truth

    def __bool__(self) -> bool:
        return self.truth

    def __eq__(self, other: object) -> bool:
        return other is self

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


def decode(tree: Any) -> Any:
    """The value encode() made the tree from; ValueError for any other shape."""
    kind = type(tree)
    if kind in _SCALARS:
        return tree
    if kind is list:
        return [decode(v) for v in tree]
    if kind is dict and len(tree) == 1:
        ((tag, items),) = tree.items()
        if tag == "$b" and type(items) is str:
            return bytes.fromhex(items)
        if type(items) is list:
            if tag == "$t":
                return tuple(decode(v) for v in items)
            if tag == "$s":
                return {decode(v) for v in items}
            if tag == "$f":
                return frozenset(decode(v) for v in items)
            if tag == "$d" and all(type(p) is list and len(p) == 2 for p in items):
                return {decode(k): decode(v) for k, v in items}
            if tag == "$c" and len(items) == 2:
                return complex(float(items[0]), float(items[1]))
            if tag == "$o" and len(items) == 2 and type(items[0]) is str and type(items[1]) is bool:
                return Opaque(items[0], items[1])
    raise ValueError("not an encoded plain value")


def dumps(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def read_message(stream: Any) -> dict[str, Any] | None:
    """The next message, None at end of stream; ValueError for an oversized or malformed one."""
    line = stream.readline(MAX_MESSAGE + 1)
    if not line:
        return None
    if len(line) > MAX_MESSAGE or not line.endswith(b"\n"):
        raise ValueError("message too long or cut off")
    message = json.loads(line)
    if type(message) is not dict:
        raise ValueError("a message must be a JSON object")
    return message
