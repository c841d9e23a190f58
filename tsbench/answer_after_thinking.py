"""A task that grades only what a reasoning model answers after its thinking.

Reasoning models write `<think>...</think>` and then the answer; a number inside the thinking is
not the answer, and a sample cut inside its thinking has none. Wrapping the task once, where the
run resolves it, makes every reader of `extract` agree on that: the grader, the strategies' votes
(through PublicTask) and the verifiers (lighteval removes reasoning tags by default the same way).
"""

from __future__ import annotations

from typing import Any

from tsbench.thinking import ThinkTags, answer_part


class AnswerAfterThinking:
    """`task` with `extract(text)` reading only the answer part of `text` (tsbench.thinking);
    everything else is the task's own."""

    def __init__(self, task: Any, tags: ThinkTags) -> None:
        self._task, self.think_tags = task, tags
        # Identities hash the task's module: the wrapped task's, with this one beside it.
        self.__module__ = getattr(task, "__module__", type(self).__module__)

    def extract(self, text: str) -> str | None:
        found: str | None = self._task.extract(answer_part(text, self.think_tags))
        return found

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_task":  # copy and pickle look these up before __init__
            raise AttributeError(name)
        return getattr(self._task, name)


def with_thinking(task: Any, tags: tuple[str, ...]) -> Any:
    """The task, grading after the thinking marked by `tags` (open, close); () leaves it as it is."""
    if not tags:
        return task
    return AnswerAfterThinking(task, ThinkTags(tags[0], tags[1]))
