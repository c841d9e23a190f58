"""Token sampling from a batch of logits rows, in numpy, one seeded generator per sequence.

Sampling here (not in the engine) gives every engine the same per-sample seeds, top-p rule and
logprobs, so a sample is reproducible on its own whatever else shares its batch. Beside it, what
every runner shares about how a sample ends: the min_tokens rule (vLLM's), stop strings, and
reading what engines and servers say ended a sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tsbench.contracts import Completion, GenerationRequest
from tsbench.errors import UserError

TOP_CANDIDATES = 512  # top-p is applied within the top candidates; their mass is nearly always > p


@dataclass
class Draw:
    token: int
    logprob: float  # under the model's distribution (temperature 1), as engines report it
    top: dict[int, float]  # top alternatives' logprobs, when asked


def log_softmax(rows: np.ndarray) -> np.ndarray:
    shifted = rows - rows.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def draw(
    logits: np.ndarray,
    temperature: float,
    top_p: float,
    rng: np.random.Generator,
    top_logprobs: int = 0,
    banned: Sequence[int] = (),
) -> Draw:
    """Sample one token from one row of logits.

    Args:
        logits: shape (vocab,), float32.
        temperature: 0 for argmax.
        top_p: nucleus mass, 1.0 for none.
        rng: this sequence's own generator.
        top_logprobs: how many alternatives to report.
        banned: token ids that may not be drawn (logit -inf), e.g. EOS below min_tokens; logprobs
            stay the model's own, as vLLM reports them.
    """
    logprobs = log_softmax(logits.astype(np.float64))
    if len(banned):
        logits = logits.copy()
        logits[list(banned)] = -np.inf
    if temperature <= 0:
        token = int(np.argmax(logits))
    else:
        scaled = logits.astype(np.float64) / temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        if top_p >= 1.0:
            token = int(rng.choice(probs.shape[0], p=probs))
        else:
            k = min(TOP_CANDIDATES, probs.shape[0])
            candidates = np.argpartition(-probs, k - 1)[:k]
            if probs[candidates].sum() < top_p:  # a flat distribution: rank the whole vocabulary
                candidates = np.arange(probs.shape[0])
            candidates = candidates[np.argsort(-probs[candidates], kind="stable")]
            kept = probs[candidates]
            keep = int(np.searchsorted(np.cumsum(kept), top_p)) + 1
            candidates, kept = candidates[:keep], kept[:keep]
            token = int(candidates[rng.choice(keep, p=kept / kept.sum())])
    top: dict[int, float] = {}
    if top_logprobs:
        best = np.argpartition(-logprobs, top_logprobs - 1)[:top_logprobs]
        top = {int(t): float(logprobs[t]) for t in best[np.argsort(-logprobs[best], kind="stable")]}
    return Draw(token, float(logprobs[token]), top)


def find_stop(text: str, stops: Sequence[str], since: int) -> tuple[int, str] | None:
    """The earliest stop string in `text` that ends after `since` (the text before was checked).

    Returns (where it starts, which stop), or None.
    """
    found: tuple[int, str] | None = None
    for stop in stops:
        at = text.find(stop, max(0, since - len(stop) + 1))
        if at >= 0 and (found is None or at < found[0]):
            found = (at, stop)
    return found


def check_min_tokens(request: GenerationRequest) -> None:
    """Raise UserError for a min_tokens the runners cannot honour (a negative one)."""
    if request.min_tokens < 0:
        raise UserError(
            f"min_tokens={request.min_tokens} is negative; pass 0 (no floor) or a positive number of tokens"
        )


def eos_allowed(request: GenerationRequest, generated: int) -> bool:
    """Whether a sample with `generated` tokens may draw EOS next (vLLM's min_tokens rule)."""
    return generated >= request.min_tokens


def stops_checked(request: GenerationRequest, generated: int) -> bool:
    """Whether the token that brought a sample to `generated` tokens may complete a stop string.

    As in vLLM (v1 detokenizer), the first min_tokens tokens never end a sample: a stop string
    must be completed by a later token, though it may begin inside them.
    """
    return generated > request.min_tokens


def short_of_min_tokens(completion: Completion, request: GenerationRequest, slack: int = 0) -> bool:
    """Whether an engine ended a sample by EOS or a stop string before request.min_tokens, which a
    server that ignores min_tokens (or checks stop strings below it) does; `slack`: how many tokens
    its count may miss."""
    return completion.stop_reason != "length" and completion.tokens + slack < request.min_tokens


def completion_of(seq: Any, request: GenerationRequest, started: float) -> Completion:
    """The Completion of a sequence decoded by a hand-written loop (llamacpp, hf).

    Args:
        seq: the runner's per-sample state: sample, text, tokens (without the EOS token), finish,
            stop_string, logprobs, top, finished_at.
        request: the request it was drawn for.
        started: when its wave started; latency counts from there.
    """
    # The EOS token took a decode step like any other, and engines that report usage count it.
    eos = seq.finish == "eos"
    return Completion(
        text=seq.text,
        tokens=len(seq.tokens) + int(eos),
        stop_reason=seq.finish or "length",
        seed=request.seed_for(seq.sample),
        logprobs=seq.logprobs if request.logprobs is not None else None,
        top_logprobs=seq.top if request.logprobs else None,
        latency_s=seq.finished_at - started,
        stop_string=seq.stop_string if seq.finish == "stop" else None,
    )


def engine_stop(finish: str | None, matched: object) -> tuple[str, str | None]:
    """(stop_reason, stop_string) from an engine's finish reason and what it says ended the sample.

    vLLM (CompletionOutput.stop_reason, its server's `stop_reason`) and SGLang (`matched`, its
    server's `matched_stop`) give the stop string that matched, or the token id of a stop token
    (an end-of-sequence token other than the model's main one), or None for the EOS token.

    Raises:
        RuntimeError: the engine aborted the sample (or ended it for a reason outside the contract).
    """
    if finish == "length":
        return "length", None
    if finish == "stop":
        return ("stop", matched) if isinstance(matched, str) else ("eos", None)
    raise RuntimeError(
        f"the engine ended a sample with finish reason {finish!r}, neither 'stop' nor 'length'"
    )


# A token a server streamed: its text, its logprob and its top alternatives.
StreamedToken = tuple[str, float, dict[str, float]]


def stream_choice(choice: dict[str, Any]) -> tuple[str, list[StreamedToken]]:
    """(new text, its tokens) of one streamed choice: a chat chunk's delta and logprobs.content, or
    a completion chunk's text and legacy logprobs (tokens, token_logprobs, top_logprobs)."""
    logprobs = choice.get("logprobs") or {}
    if "text" not in choice:
        items = logprobs.get("content") or []
        entries = [
            (
                str(i.get("token", "")),
                float(i["logprob"]),
                {a["token"]: float(a["logprob"]) for a in i.get("top_logprobs", [])},
            )
            for i in items
        ]
        return str((choice.get("delta") or {}).get("content") or ""), entries
    tokens, chosen = logprobs.get("tokens") or [], logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    entries = [
        (str(t), float(lp), {str(k): float(v) for k, v in (alt or {}).items()})
        for t, lp, alt in zip(tokens, chosen, tops, strict=False)
    ]
    return str(choice.get("text") or ""), entries


def stop_streamed_past(text: str, streamed: str, stops: Sequence[str]) -> str | None:
    """The requested stop string that the streamed tokens ran into past the text, if any."""
    extra = streamed[len(text) :] if streamed.startswith(text) else ""
    for stop in stops:
        if extra and (stop.startswith(extra) or extra.startswith(stop)):
            return stop
    return None


def device_draws(
    logits: Any,
    temperatures: list[float],
    top_ps: list[float],
    uniforms: list[float],
    k: int,
    banned: Sequence[Sequence[int]] = (),
) -> list[Draw]:
    """runners.sampling.draw's rule for a batch of rows, computed in torch where the logits are.

    Greedy rows take the first argmax. Other rows invert the CDF of their tempered distribution at
    their uniform, as numpy's Generator.choice does: over the whole vocabulary in token order when
    top_p >= 1, else over the smallest prefix of the tokens sorted by probability whose mass reaches
    top_p. Logprobs are under the untempered distribution. Results match draw()'s up to float
    rounding, which moves a token only when a uniform falls within ~1e-12 of a CDF step, and up to
    the order of exactly tied probabilities.

    Args:
        logits: (rows, vocab) tensor on any device.
        temperatures: per row; 0 means greedy.
        top_ps: per row.
        uniforms: per row, in [0, 1); ignored for greedy rows.
        k: top alternatives to report per row.
        banned: per row, token ids that may not be drawn (draw()'s `banned`); () for none.

    Returns:
        One Draw per row, its `top` holding k alternatives, best first.
    """
    import torch

    x = logits.double()
    logp = torch.log_softmax(x, dim=-1)
    x = _without(x, banned)
    vocab = x.shape[-1]
    tokens = torch.argmax(x, dim=-1)
    temp = torch.tensor(temperatures, dtype=torch.float64, device=x.device)
    nucleus = torch.tensor(top_ps, dtype=torch.float64, device=x.device)
    u = torch.tensor(uniforms, dtype=torch.float64, device=x.device)
    whole = [r for r, t in enumerate(temperatures) if t > 0 and top_ps[r] >= 1.0]
    if whole:
        idx = torch.tensor(whole, device=x.device)
        cdf = torch.softmax(x[idx] / temp[idx, None], dim=-1).cumsum(dim=-1)
        cdf = cdf / cdf[:, -1:]
        tokens[idx] = (cdf <= u[idx, None]).sum(dim=-1).clamp(max=vocab - 1)
    part = [r for r, t in enumerate(temperatures) if t > 0 and top_ps[r] < 1.0]
    if part:
        idx = torch.tensor(part, device=x.device)
        probs, order = torch.softmax(x[idx] / temp[idx, None], dim=-1).sort(
            dim=-1, descending=True, stable=True
        )
        keep = ((probs.cumsum(dim=-1) < nucleus[idx, None]).sum(dim=-1, keepdim=True) + 1).clamp(max=vocab)
        inside = torch.arange(vocab, device=x.device)[None, :] < keep
        kept = torch.where(inside, probs, torch.zeros_like(probs))
        cdf = (kept / kept.sum(dim=-1, keepdim=True)).cumsum(dim=-1)
        cdf = cdf / cdf[:, -1:]
        pick = ((cdf <= u[idx, None]) & inside).sum(dim=-1, keepdim=True)
        pick = torch.minimum(pick, keep - 1)
        tokens[idx] = order.gather(-1, pick).squeeze(-1)
    chosen = logp.gather(-1, tokens[:, None]).squeeze(-1)
    token_list, chosen_list = tokens.tolist(), chosen.tolist()
    if k:
        top_values, top_ids = logp.topk(min(k, vocab), dim=-1)
        alternatives = [
            dict(zip(i, v, strict=True)) for i, v in zip(top_ids.tolist(), top_values.tolist(), strict=True)
        ]
    else:
        alternatives = [{} for _ in token_list]
    return [Draw(int(t), float(c), a) for t, c, a in zip(token_list, chosen_list, alternatives, strict=True)]


def _without(x: Any, banned: Sequence[Sequence[int]]) -> Any:
    """`x` with the banned ids of each row at -inf (a copy; `x` itself when none is banned)."""
    if not any(banned):
        return x
    x = x.clone()
    for row, ids in enumerate(banned):
        if ids:
            x[row, list(ids)] = float("-inf")
    return x
