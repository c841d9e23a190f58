"""Chat templates: render messages with the model's own Jinja template, as transformers does, or
render a request as a plain completion prompt (GenerationRequest.template False)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from tsbench.contracts import GenerationRequest, Message, plain_prompt
from tsbench.errors import UserError

# ChatML, the fallback for a model file that carries no template of its own.
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Variables the renderers set themselves (and transformers' apply_chat_template arguments): an
# option of the same name would clash with them.
RESERVED = frozenset(
    {
        "messages",
        "add_generation_prompt",
        "bos_token",
        "eos_token",
        "tokenize",
        "chat_template",
        "continue_final_message",
        "return_dict",
        "tools",
        "documents",
    }
)


def _raise(message: str) -> None:
    raise ValueError(message)


@lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def render(
    template: str | None,
    messages: list[Message],
    bos: str = "",
    eos: str = "",
    options: dict[str, Any] | None = None,
) -> str:
    """The prompt text for `messages`, ending with the assistant turn's opening.

    Args:
        template: a Jinja chat template; None for ChatML.
        messages: the chat.
        bos, eos: the model's BOS and EOS texts, as templates read them.
        options: extra template variables (template_options(request)).
    """
    return str(
        _compiled(template or CHATML).render(
            messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos, **(options or {})
        )
    )


def template_options(request: GenerationRequest) -> dict[str, Any]:
    """A request's chat-template variables as keyword arguments for the template.

    Raises:
        UserError: options given with template=False (no template would read them), or a name
            that is not an identifier or that the renderers set themselves.
    """
    options = dict(request.template_options)
    if options and not request.template:
        raise UserError(
            f"template_options {sorted(options)} were given with template=False: a plain prompt renders "
            "no chat template; drop the options or set template=True"
        )
    bad = [
        name for name in options if not isinstance(name, str) or not name.isidentifier() or name in RESERVED
    ]
    if bad:
        raise UserError(
            f"template_options names {bad} cannot be chat-template variables (not identifiers, or set by "
            f"the runner: {', '.join(sorted(RESERVED))}); rename them"
        )
    return options


def prompt_text(request: GenerationRequest, chat: Callable[[list[Message], dict[str, Any]], str]) -> str:
    """The text a request is evaluated as: `chat(messages, options)` (the runner's chat template)
    plus the continuation, or the plain prompt when request.template is False."""
    options = template_options(request)
    if not request.template:
        return plain_prompt(request)
    return chat(request.message_dicts(), options) + request.continuation
