"""The compute ledger: what each strategy spent per problem, in samples, tokens and FLOPs."""

from __future__ import annotations

from dataclasses import asdict, dataclass


def forward_flops(parameters: int, tokens: float) -> float:
    """About 2 x parameters FLOPs per token through a dense decoder (Kaplan et al. 2020)."""
    return 2.0 * parameters * tokens


@dataclass(frozen=True)
class Spend:
    """Compute spent on one problem by one strategy at one budget.

    Costs are canonical, the same on every engine: a request's prompt (messages and any
    continuation) is charged once however many samples it asks for, whatever a cache saved (what
    the engine really evaluated is kept apart in the run's timings). Verifier spend is kept apart
    from the policy's and is included in flops.
    """

    samples: float = 0.0
    prompt_tokens: float = 0.0
    generated_tokens: float = 0.0
    verifier_tokens: float = 0.0
    flops: float = 0.0
    # Of generated_tokens, those inside the thinking (tsbench.thinking); already in generated_tokens.
    thinking_tokens: float = 0.0

    @property
    def tokens(self) -> float:
        """Everything counted in tokens: policy prompt + generated + verifier."""
        return self.prompt_tokens + self.generated_tokens + self.verifier_tokens

    @property
    def policy_tokens(self) -> float:
        return self.prompt_tokens + self.generated_tokens

    def __add__(self, other: Spend) -> Spend:
        return Spend(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[float, ...]:
        return (
            self.samples,
            self.prompt_tokens,
            self.generated_tokens,
            self.verifier_tokens,
            self.flops,
            self.thinking_tokens,
        )

    def as_dict(self) -> dict[str, float]:
        found = {k: round(v, 3) for k, v in asdict(self).items()}
        if not self.thinking_tokens:  # left out at 0, so that records from before it keep their bytes
            del found["thinking_tokens"]
        return found


def policy_spend(parameters: int, samples: float, prompt_tokens: float, generated_tokens: float) -> Spend:
    return Spend(
        samples=samples,
        prompt_tokens=prompt_tokens,
        generated_tokens=generated_tokens,
        flops=forward_flops(parameters, prompt_tokens + generated_tokens),
    )
