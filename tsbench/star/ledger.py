"""STaR's train-time ledger: what each round spent making its model, kept apart from test time.

train FLOPs of a round = 6 x parameters x tokens trained (each sequence's tokens, prompt and
rationale, times epochs; Kaplan et al. 2020's forward + backward) + the FLOPs of sampling its
rationales (tsbench.ledger.forward_flops of prompt + generated tokens, a request's prompt charged
once). A round's model costs every round before it too, so what goes beside its evaluation
(`train_compute` in the eval run's provenance.json) is cumulative.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tsbench.star.lora import TrainStats
from tsbench.star.rationales import RationaleSet

TRAIN_FLOPS_PER_TOKEN = 6  # forward (2) + backward (4) per parameter per token


def finetune_flops(parameters: int, tokens_trained: int) -> float:
    return float(TRAIN_FLOPS_PER_TOKEN * parameters * tokens_trained)


@dataclass
class RoundRecord:
    """One round's training data, compute and wall time (seconds per phase)."""

    round: int
    model: str
    parameters: int
    train_problems: int = 0
    solved: int = 0
    rationalised_problems: int = 0
    examples_kept: int = 0
    examples_rationalised: int = 0
    correct_samples: int = 0
    hinted_correct_samples: int = 0
    sampling_requests: int = 0
    sampling_samples: int = 0
    sampling_prompt_tokens: int = 0
    sampling_generated_tokens: int = 0
    sampling_tokens: int = 0
    sampling_flops: float = 0.0
    epochs: int = 0
    steps: int = 0
    tokens_trained: int = 0
    target_tokens: int = 0
    finetune_flops: float = 0.0
    train_flops: float = 0.0
    loss_first: float | None = None
    loss_last: float | None = None
    adapter_sha256: str | None = None
    model_sha256: str | None = None
    threads: int = 0  # CPU threads fine-tuning ran on
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def round_record(
    index: int, model: str, parameters: int, data: RationaleSet, stats: TrainStats, epochs: int
) -> RoundRecord:
    """A trained round's record (hashes and wall times are filled in by the loop)."""
    spend = data.spend
    tuned = finetune_flops(parameters, stats.tokens_trained)
    sampled = spend.flops(parameters)
    return RoundRecord(
        round=index,
        model=model,
        parameters=parameters,
        train_problems=data.problems,
        solved=data.solved,
        rationalised_problems=data.rationalised,
        examples_kept=len(data.kept),
        examples_rationalised=sum(r.rationalised for r in data.kept),
        correct_samples=data.correct_samples,
        hinted_correct_samples=data.hinted_correct_samples,
        sampling_requests=spend.requests,
        sampling_samples=spend.samples,
        sampling_prompt_tokens=spend.prompt_tokens,
        sampling_generated_tokens=spend.generated_tokens,
        sampling_tokens=spend.tokens,
        sampling_flops=sampled,
        epochs=epochs,
        steps=stats.steps,
        tokens_trained=stats.tokens_trained,
        target_tokens=stats.target_tokens,
        finetune_flops=tuned,
        train_flops=tuned + sampled,
        loss_first=stats.losses[0] if stats.losses else None,
        loss_last=stats.losses[-1] if stats.losses else None,
        seconds={"sampling": round(spend.seconds, 2), "training": round(stats.seconds, 2)},
    )


CUMULATIVE = (
    "train_flops",
    "finetune_flops",
    "sampling_flops",
    "tokens_trained",
    "sampling_tokens",
    "examples_kept",
    "examples_rationalised",
)


def train_compute(records: list[RoundRecord], method: str, base_model: str) -> dict[str, Any]:
    """What went into the model of the last of `records`: totals over its rounds, and each round.

    Args:
        records: rounds 1..r (empty for the base model, round 0).
        method: a line saying how the model was made.
        base_model: the model round 1 started from.

    Returns:
        train_flops (fine-tuning + sampling) and the other totals of CUMULATIVE, the adapter's
        sha256 of the last round, and the per-round records.
    """
    totals: dict[str, Any] = {name: sum(getattr(r, name) for r in records) for name in CUMULATIVE}
    for name in ("train_flops", "finetune_flops", "sampling_flops"):
        totals[name] = float(totals[name])
    last = records[-1] if records else None
    return {
        "method": method,
        "base_model": base_model,
        "rounds": len(records),
        **totals,
        "adapter_sha256": last.adapter_sha256 if last else None,
        "per_round": [r.as_dict() for r in records],
    }
