"""Counting a text's tokens with the model's own tokenizer, apart from generating.

The ledger counts a completion's thinking tokens apart from its answer tokens by counting each
part's text; every built-in runner can (CountsTokens). Counts are of the text alone: no BOS or
other special token is added, while special tokens written in the text (e.g. "<think>") count as
the single tokens they are, as they do in a prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from tsbench.errors import UserError


@runtime_checkable
class CountsTokens(Protocol):
    """A runner that counts a text's tokens as its model's tokenizer splits it."""

    def count_tokens(self, text: str) -> int:
        """The number of tokens of `text`, without special tokens added (no BOS)."""
        ...


def tokenizer_count(tokenizer: Any, text: str) -> int:
    """CountsTokens.count_tokens with a transformers tokenizer (hf, vllm and sglang runners)."""
    return len(tokenizer(text, add_special_tokens=False).input_ids)


# Tokenizer routes of OpenAI-compatible servers, tried in this order: vLLM's and SGLang's
# (beside /v1, not under it), then llama-cpp-python's.
TOKENIZE_ROUTES = ("/tokenize", "/extras/tokenize")


class ServerTokenizer:
    """count_tokens for a server, through whichever tokenizer route it answers.

    Args:
        post: posts a JSON body to a route under the server's root and returns the decoded answer;
            raises RuntimeError (an HTTP error) where the route does not exist.
        model: the served model's id.
    """

    def __init__(self, post: Callable[[str, dict[str, Any]], Any], model: str) -> None:
        self.post, self.model = post, model
        self.route: str | None = None
        self.added = 0  # tokens the route adds to any text (llama-cpp-python's BOS)

    def count(self, text: str) -> int:
        """Tokens of `text` alone.

        Raises:
            UserError: the server answers none of TOKENIZE_ROUTES.
        """
        if not text:
            return 0
        if self.route is None:
            self.route = self._find_route()
        return self._ask(self.route, text) - self.added

    def _ask(self, route: str, text: str) -> int:
        if route == "/tokenize":
            body = {"model": self.model, "prompt": text, "add_special_tokens": False}
            answer = self.post(route, body)
            return int(answer["count"]) if "count" in answer else len(answer["tokens"])
        # llama-cpp-python always adds the BOS where the model does: its count of "" is taken off.
        return len(self.post(route, {"model": self.model, "input": text})["tokens"])

    def _find_route(self) -> str:
        failures = []
        for route in TOKENIZE_ROUTES:
            try:
                self.added = self._ask(route, "") if route != "/tokenize" else 0
                self._ask(route, "a")
                return route
            except RuntimeError as exc:
                failures.append(f"{route}: {str(exc)[:80]}")
        raise UserError(
            f"the server answers no tokenizer route ({'; '.join(failures)}); counting a text's tokens "
            "needs vLLM's or SGLang's /tokenize or llama-cpp-python's /extras/tokenize"
        )
