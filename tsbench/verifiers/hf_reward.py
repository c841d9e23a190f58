"""HuggingFace reward models, loaded with transformers: outcome (ORM) and process (PRM) scorers.

Four input shapes cover the public models; `kind` picks one (known ids pick it themselves):

- "orm": a sequence-classification model scores the whole (question, solution) chat; a single
  logit goes through a sigmoid, two labels through a softmax (index 1 = good).
  e.g. Skywork/Skywork-Reward-Llama-3.1-8B-v0.2.
- "step-tag": a causal LM reads "question step1 <tag>\\nstep2 <tag>" and, at each tag, the softmax
  over its "+"/"-" (good/bad) token logits gives P(good) (Math-Shepherd).
  e.g. peiyi9979/math-shepherd-mistral-7b-prm (tag "ки").
- "chat-turns": a causal LM reads a chat in which each step is a user turn answered "+" by the
  assistant; the logits at the position that predicts each "+" give P(good) (RLHFlow).
  e.g. RLHFlow/Llama3.1-8B-PRM-Deepseek-Data, RLHFlow/Llama3.1-8B-PRM-Mistral-Data.
- "token-head": a token-classification head (2 labels, index 1 = good) is read at the step
  separator token that ends each step of the assistant turn (Qwen2.5-Math-PRM; its modeling code
  ships with the checkpoint, so pass trust_remote_code=true).
  e.g. Qwen/Qwen2.5-Math-PRM-7B, Qwen/Qwen2.5-Math-PRM-72B (separator "<extra_0>").

A PRM scores a whole solution by aggregating its step scores (`aggregate`, default min, as
Math-Shepherd ranks solutions); an ORM scores a partial solution's steps by scoring each prefix.
A PRM scores the paths of every live search in batched forward passes (`batch_size` sequences,
right-padded under an attention mask, so positions are exact); an ORM runs each sequence alone,
so its pooling is exact.
Spend: the tokens fed to the model, and forward_flops(model parameters, tokens). Nothing is
remembered between calls, so `cost_bound` is the tokens of each path's input built with its last
step empty, + `extra_tokens` for that step + SLACK_TOKENS for re-tokenisation where it meets the
text around it (an ORM: every prefix's input, the last one so grown).
torch and transformers are imported only when a model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tsbench.contracts import AnyProblem, Problem, Runner, Task
from tsbench.errors import UserError
from tsbench.ledger import forward_flops
from tsbench.plugins import verifiers

from .base import (
    SLACK_TOKENS,
    STEP_DELIMITER,
    Scored,
    StepJob,
    VerifierSpend,
    aggregate,
    as_bool,
    join_steps,
    split_steps,
)

KINDS = ("orm", "step-tag", "chat-turns", "token-head")
QWEN_PRM = {
    "kind": "token-head",
    "step_tag": "<extra_0>",
    "system": "Please reason step by step, and put your final answer within \\boxed{}.",
    "trust_remote_code": True,
}
RLHFLOW_PRM = {"kind": "chat-turns", "good": "+", "bad": "-"}
PRESETS: dict[str, dict[str, Any]] = {
    "peiyi9979/math-shepherd-mistral-7b-prm": {"kind": "step-tag", "step_tag": "ки", "good": "+", "bad": "-"},
    "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data": RLHFLOW_PRM,
    "RLHFlow/Llama3.1-8B-PRM-Mistral-Data": RLHFLOW_PRM,
    "Qwen/Qwen2.5-Math-PRM-7B": QWEN_PRM,
    "Qwen/Qwen2.5-Math-PRM-72B": QWEN_PRM,
    "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2": {"kind": "orm"},
}


def guess_kind(architectures: Sequence[str]) -> str | None:
    """The kind a checkpoint's architecture implies; None when it takes a step tag to know."""
    for arch in architectures:
        if arch.endswith("ForSequenceClassification"):
            return "orm"
        if arch.endswith("ForTokenClassification") or "ProcessRewardModel" in arch:
            return "token-head"
    return None


class HFReward:
    """A reward model from a local folder or hub id (the hub needs network; HF_HUB_OFFLINE=1 here).

    Args:
        model: folder or hub id.
        kind: one of KINDS; None to take it from PRESETS or the architecture.
        step_tag: step tag (step-tag) or separator token (token-head).
        good, bad: the tokens whose logits are compared (step-tag, chat-turns).
        system: system message for chat inputs (token-head), or None.
        aggregate: how a PRM's step scores make a solution's score: last, min, prod or mean.
        delimiter: splits a whole solution into steps for a PRM's outcome score.
        device, dtype: torch device ("cpu", "cuda") and dtype name ("float32", "bfloat16").
        trust_remote_code: let transformers run the checkpoint's own modeling code.
    """

    name = "hf-reward"
    oracle = False

    def __init__(
        self,
        model: str,
        kind: str | None = None,
        step_tag: str | None = None,
        good: str = "+",
        bad: str = "-",
        system: str | None = None,
        aggregate: str = "min",
        delimiter: str = STEP_DELIMITER,
        device: str = "cpu",
        dtype: str = "float32",
        trust_remote_code: bool = False,
        batch_size: int = 8,
    ) -> None:
        import torch
        import transformers

        preset = PRESETS.get(model, {})
        trust_remote_code = trust_remote_code or preset.get("trust_remote_code", False)
        config = transformers.AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
        kind = kind or preset.get("kind") or guess_kind(getattr(config, "architectures", None) or [])
        if kind is None and step_tag is not None:
            kind = "step-tag"
        if kind not in KINDS:
            raise UserError(
                f"verifier hf-reward: cannot tell how to read {model}; pass kind= one of {', '.join(KINDS)}"
            )
        self.kind = kind
        self.step_tag = step_tag or preset.get("step_tag") or ("<extra_0>" if kind == "token-head" else "ки")
        self.good, self.bad = preset.get("good", good), preset.get("bad", bad)
        self.system = system if system is not None else preset.get("system")
        self.aggregate = aggregate
        self.delimiter = delimiter
        self.torch = torch
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            model, trust_remote_code=trust_remote_code
        )
        loader = {
            "orm": transformers.AutoModelForSequenceClassification,
            "step-tag": transformers.AutoModelForCausalLM,
            "chat-turns": transformers.AutoModelForCausalLM,
            "token-head": transformers.AutoModelForTokenClassification,
        }[kind]
        # Qwen2.5-Math-PRM registers its PRM class under AutoModel in its own code.
        if kind == "token-head" and "AutoModel" in (getattr(config, "auto_map", None) or {}):
            loader = transformers.AutoModel
        self.model = loader.from_pretrained(
            model, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
        ).to(device)
        self.model.eval()
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.parameters = int(self.model.num_parameters())
        self.model_id = model

    # -- tokens ---------------------------------------------------------------------------------

    def _token_id(self, text: str) -> int:
        return int(self.tokenizer.encode(text, add_special_tokens=False)[-1])

    def _chat_ids(self, messages: list[dict[str, str]], generation_prompt: bool = False) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _logits(self, ids: list[int]) -> Any:
        """Logits of one sequence: (positions, classes) for token models, (classes,) for an ORM."""
        return self._logits_many([ids])[0]

    def _logits_many(self, sequences: Sequence[list[int]]) -> list[Any]:
        """Logits of each sequence, `batch_size` sequences per forward pass.

        Sequences are padded on the right under an attention mask, so a real token's position and
        what it attends to are those of the sequence alone; an ORM reads its score at the last
        real token."""
        torch, found = self.torch, []
        for start in range(0, len(sequences), self.batch_size):
            chunk = sequences[start : start + self.batch_size]
            width = max(len(ids) for ids in chunk)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            ids = torch.tensor([list(x) + [pad] * (width - len(x)) for x in chunk], device=self.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in chunk], device=self.device)
            with torch.inference_mode():
                output = self.model(input_ids=ids, attention_mask=mask)
            logits = (output.logits if hasattr(output, "logits") else output[0]).float()
            for row, x in enumerate(chunk):
                found.append(logits[row] if logits.dim() == 2 else logits[row, : len(x)])
        return found

    # -- scoring --------------------------------------------------------------------------------

    def _orm_ids(self, question: str, solution: str) -> list[int]:
        if self.tokenizer.chat_template:
            return self._chat_ids(
                [{"role": "user", "content": question}, {"role": "assistant", "content": solution}]
            )
        return list(self.tokenizer(f"{question}\n\n{solution}")["input_ids"])

    def _orm(self, question: str, solution: str) -> tuple[float, int]:
        ids = self._orm_ids(question, solution)
        logits = self._logits(ids)
        if logits.shape[-1] == 1:
            return float(self.torch.sigmoid(logits[0])), len(ids)
        return float(logits.softmax(-1)[1]), len(ids)

    def _step_ids(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """A PRM's input for a path, and the positions its step scores are read at."""
        steps = [step.replace(self.step_tag, "").strip() for step in steps]
        if self.kind == "step-tag":
            tag = self._token_id(self.step_tag)
            text = f"{question} " + "".join(f"{step} {self.step_tag}\n" for step in steps).rstrip("\n")
            ids = list(self.tokenizer(text)["input_ids"])
            return ids, [i for i, t in enumerate(ids) if t == tag]
        if self.kind == "chat-turns":
            chat: list[dict[str, str]] = []
            positions = []
            for i, step in enumerate(steps):
                chat.append({"role": "user", "content": f"{question} {step}" if i == 0 else step})
                # The position before the assistant's "+" is the one that predicts it.
                positions.append(len(self._chat_ids(chat, generation_prompt=True)) - 1)
                chat.append({"role": "assistant", "content": self.good})
            return self._chat_ids(chat), positions
        tag = self._token_id(self.step_tag)
        answer = "".join(f"{step}{self.step_tag}" for step in steps)
        chat = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if self.system:
            chat.insert(0, {"role": "system", "content": self.system})
        ids = self._chat_ids(chat)
        return ids, [i for i, t in enumerate(ids) if t == tag]

    def _steps(self, question: str, steps: Sequence[str]) -> tuple[list[float], int]:
        """One score per step from one forward pass."""
        return self._steps_many([(question, steps)])[0]

    def _steps_many(self, paths: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[list[float], int]]:
        """One score per step of each (question, steps), in batched forward passes."""
        inputs = [self._step_ids(question, steps) for question, steps in paths]
        for (_, steps), (_, positions) in zip(paths, inputs, strict=True):
            if len(positions) != len(steps):
                raise ValueError(
                    f"hf-reward ({self.kind}): found {len(positions)} step marks for {len(steps)} steps in "
                    f"{self.model_id}'s tokens; the step tag {self.step_tag!r} does not tokenize to one known token"
                )
        found = []
        for (ids, positions), all_logits in zip(
            inputs, self._logits_many([i for i, _ in inputs]), strict=True
        ):
            logits = all_logits[positions]
            if self.kind == "token-head":
                found.append((logits.softmax(-1)[:, 1].tolist(), len(ids)))
            else:
                pair = logits[:, [self._token_id(self.good), self._token_id(self.bad)]]
                found.append((pair.softmax(-1)[:, 0].tolist(), len(ids)))
        return found

    def _spend(self, tokens: int) -> VerifierSpend:
        return VerifierSpend(tokens, forward_flops(self.parameters, tokens))

    def score(self, problem: Problem, task: Task, solutions: Sequence[str]) -> Scored:
        scores, spent = [], VerifierSpend()
        for solution in solutions:
            if self.kind == "orm":
                value, tokens = self._orm(problem.question, solution)
            else:
                steps = split_steps(solution, self.delimiter) or [solution]
                step_scores, tokens = self._steps(problem.question, steps)
                value = aggregate(step_scores, self.aggregate)
            scores.append(value)
            spent = spent + self._spend(tokens)
        return Scored(scores, spent)

    def score_steps_many(self, jobs: Sequence[StepJob]) -> list[list[Scored]]:
        """Every search's paths in batched forward passes (BatchesSteps); a PRM remembers nothing."""
        if self.kind == "orm":
            return [self.score_steps(job.problem, job.task, job.paths) for job in jobs]
        paths = [(job.problem.question, path) for job in jobs for path in job.paths if path]
        found = iter(self._steps_many(paths))
        results = []
        for job in jobs:
            scored = []
            for path in job.paths:
                values, tokens = next(found) if path else ([], 0)
                scored.append(Scored(values, self._spend(tokens)))
            results.append(scored)
        return results

    def score_steps(self, problem: Problem, task: Task, steps: Sequence[Sequence[str]]) -> list[Scored]:
        scored = []
        for path in steps:
            if not path:
                scored.append(Scored([], VerifierSpend()))
            elif self.kind == "orm":
                prefixes = [join_steps(path[: i + 1], self.delimiter) for i in range(len(path))]
                scored.append(self.score(problem, task, prefixes))
            else:
                values, tokens = self._steps(problem.question, path)
                scored.append(Scored(values, self._spend(tokens)))
        return scored

    def cost_bound(
        self, problem: AnyProblem, task: Any, steps: Sequence[Sequence[str]], extra_tokens: int
    ) -> VerifierSpend:
        """At least what score_steps(problem, task, paths) would spend, each path being one of
        `steps` whose last step is longer by up to extra_tokens tokens (CostBounded)."""
        tokens = 0
        for path in steps:
            if not path:
                continue
            if self.kind == "orm":
                prefixes = [join_steps(path[: i + 1], self.delimiter) for i in range(len(path))]
                tokens += sum(len(self._orm_ids(problem.question, prefix)) for prefix in prefixes)
            else:
                tokens += len(self._step_ids(problem.question, path)[0])
            tokens += extra_tokens + SLACK_TOKENS
        return self._spend(tokens)


@verifiers.register("hf-reward", "a HuggingFace reward model (ORM or PRM) run with transformers")
def create(
    runner: Runner | None = None,
    model: str | None = None,
    kind: str | None = None,
    step_tag: str | None = None,
    good: str = "+",
    bad: str = "-",
    system: str | None = None,
    aggregate: str = "min",
    delimiter: str = STEP_DELIMITER,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: Any = False,
    batch_size: Any = 8,
    **options: Any,
) -> HFReward:
    if options:
        raise UserError(
            f"verifier hf-reward: unknown option(s) {', '.join(sorted(options))}; it takes: model, kind, "
            "step_tag, good, bad, system, aggregate, delimiter, device, dtype, trust_remote_code, batch_size"
        )
    if not model:
        raise UserError(
            "verifier hf-reward needs model=<folder or hub id>, e.g. model=Qwen/Qwen2.5-Math-PRM-7B"
        )
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise UserError(
            "verifier hf-reward needs torch and transformers: pip install torch transformers"
        ) from None
    return HFReward(
        model,
        kind,
        step_tag,
        good,
        bad,
        system,
        aggregate,
        delimiter,
        device,
        dtype,
        as_bool(trust_remote_code),
        int(batch_size),
    )
