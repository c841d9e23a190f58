"""Reasoning-model output: the thinking between tags, and the answer after it.

A reasoning model writes `<think>...</think>answer`. Graders must read the answer only: a number
inside the thinking is not the model's answer, and a sample cut inside its thinking has none.

How a text splits (`split_thinking`), tags found left to right without overlap (where both tags
start at one place, the longer one is taken):
- no tag at all: state "none", the whole text is the answer;
- an open tag first: the thinking runs from it to the close tag that brings the depth of open
  tags back to 0 (a thinking may quote tags); the answer is what follows that close, and text
  before the open tag is neither. With no such close the state is "unclosed" and the answer "":
  the model never answered;
- a close tag that matches no open tag anywhere before it (templates such as Qwen3's put the open
  tag in the prompt, so the output starts inside the thinking): the thinking is everything before
  the first such close, the answer everything after it. This reading wins over the one above
  whenever the text has such a close: where the two disagree (a stray close after the answer, or
  a quoted pair inside a prompt-opened thinking), a wrong pick then loses an answer rather than
  grading thinking as one.

Model output is hostile (huge, full of tags, any unicode): one pass over the tag occurrences,
linear in the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

State = Literal["closed", "unclosed", "none"]


@dataclass(frozen=True)
class ThinkTags:
    """The tags around a reasoning model's thinking.

    Args:
        open: the tag that opens the thinking.
        close: the tag that closes it.
    """

    open: str = "<think>"
    close: str = "</think>"

    def __post_init__(self) -> None:
        if not self.open or not self.close or self.open == self.close:
            raise ValueError(
                f"thinking tags must be two different non-empty strings, got {self.open!r} and {self.close!r}"
            )

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        """Either tag; the longer first, so that where both start at one place the longer wins."""
        first, second = sorted((self.open, self.close), key=len, reverse=True)
        return re.compile(f"{re.escape(first)}|{re.escape(second)}")


DEFAULT_TAGS = ThinkTags()


@dataclass(frozen=True)
class Thought:
    """A text split into its thinking and its answer.

    Args:
        thinking: the text inside the thinking, without its tags ("" for state "none").
        answer: what the model answered after its thinking ("" when the thinking never closed).
        state: "closed", "unclosed" (cut or abandoned inside the thinking) or "none" (no tags).
    """

    thinking: str
    answer: str
    state: State


def split_thinking(text: str, tags: ThinkTags = DEFAULT_TAGS) -> Thought:
    """Split reasoning-model output into its thinking and its answer (the rules: module docstring).

    Args:
        text: what the model wrote (continuation included, where the open tag was sent that way).
        tags: the thinking's open and close tags.

    Returns:
        The Thought.
    """
    depth = 0
    opened: re.Match[str] | None = None  # the open tag that started the first thinking
    closed: re.Match[str] | None = None  # the close tag that ended it
    for found in tags.pattern.finditer(text):
        if found.group() == tags.open:
            depth += 1
            opened = opened or found
            continue
        if depth == 0:  # matches no open tag: the text started inside the thinking
            return Thought(text[: found.start()], text[found.end() :], "closed")
        depth -= 1
        if depth == 0 and closed is None:
            closed = found
    if closed is not None and opened is not None:
        return Thought(text[opened.end() : closed.start()], text[closed.end() :], "closed")
    if opened is not None:
        return Thought(text[opened.end() :], "", "unclosed")
    return Thought("", text, "none")


def answer_part(text: str, tags: ThinkTags = DEFAULT_TAGS) -> str:
    """The part of `text` a grader reads: the answer after the thinking ("" when the thinking
    never closed; the whole text when there are no tags).

    Args:
        text: what the model wrote.
        tags: the thinking's open and close tags.

    Returns:
        The answer text.
    """
    return split_thinking(text, tags).answer


def open_depth(text: str, tags: ThinkTags = DEFAULT_TAGS) -> int:
    """How many open tags of `text` are still open at its end (a close matching none is ignored):
    the closes a text needs to end its thinking.

    Args:
        text: the text.
        tags: the thinking's open and close tags.

    Returns:
        The depth, 0 or more.
    """
    depth = 0
    for found in tags.pattern.finditer(text):
        depth = depth + 1 if found.group() == tags.open else max(0, depth - 1)
    return depth
