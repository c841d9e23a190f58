"""Chat templates: render messages with the model's own Jinja template, as transformers does."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from tsbench.contracts import Message

# ChatML, the fallback for a model file that carries no template of its own.
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise(message: str) -> None:
    raise ValueError(message)


@lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def render(template: str | None, messages: list[Message], bos: str = "", eos: str = "") -> str:
    """The prompt text for `messages`, ending with the assistant turn's opening."""
    return str(
        _compiled(template or CHATML).render(
            messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos
        )
    )
