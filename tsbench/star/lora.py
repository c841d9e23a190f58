"""STaR's training step: LoRA on (prompt, rationale) pairs from the base model, saved and merged.

The prompt is rendered with the model's chat template exactly as the hf runner renders it at
inference (add_generation_prompt, the same BOS rule); the target is what the template puts after
it for the assistant's turn (the rationale and the end-of-turn marker). Loss is taken on target
tokens only. Every round starts from the BASE model, as the paper does (it never fine-tunes the
previous round's model), so a round's model depends only on that round's data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsbench.contracts import Message
from tsbench.errors import UserError
from tsbench.provenance import file_sha256

ADAPTER_FILE = "adapter_model.safetensors"
MERGED_FILE = "model.safetensors"
# Every linear layer of a Llama-style block: STaR changes how the model reasons, not one head.
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA fine-tuning: rank, alpha, learning rate (AdamW), epochs, sequences per step, seed."""

    rank: int = 8
    alpha: int = 16
    learning_rate: float = 3e-4
    epochs: int = 1
    batch_size: int = 8
    seed: int = 0
    targets: tuple[str, ...] = TARGETS


@dataclass(frozen=True)
class Encoded:
    """One training sequence: the prompt's token ids, then the target's (loss on those only)."""

    prompt: tuple[int, ...]
    target: tuple[int, ...]

    @property
    def ids(self) -> list[int]:
        return [*self.prompt, *self.target]


@dataclass
class TrainStats:
    """What fine-tuning did: steps, tokens (each sequence's, prompt and target, times epochs;
    padding not counted), losses per step, wall time."""

    steps: int = 0
    tokens_trained: int = 0
    target_tokens: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def need_peft() -> Any:
    """torch, transformers and peft, or one line saying how to install them."""
    try:
        import peft
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"tsbench star needs torch, transformers and peft ({exc.name} is missing); "
            "run: pip install -e '.[hf]'"
        ) from None
    return peft, torch


def load_base(model: str | None, threads: int) -> tuple[Any, Any]:
    """The base model in fp32 on the CPU and its tokenizer, loaded as the hf runner loads them
    (model None: the embedded GGUF, dequantized)."""
    _, torch = need_peft()
    from tsbench.runners.hf_loading import load_model, load_tokenizer

    torch.set_num_threads(threads)
    loaded = load_model(torch, model, torch.device("cpu"), torch.float32)
    tokenizer = load_tokenizer(None, model, loaded.path, False)
    return loaded.model, tokenizer


def encode(tokenizer: Any, messages: Sequence[Message], rationale: str) -> Encoded:
    """A (prompt, rationale) pair as token ids, with the chat template applied as at inference.

    Args:
        tokenizer: the model's tokenizer (its chat template; ChatML when it has none, as the runner).
        messages: the prompt, without any hint.
        rationale: the assistant's text.

    Returns:
        The prompt's ids (the hf runner's prompt_tokens) and the target's: the template's
        assistant turn after the prompt, ending with its end-of-turn marker.
    """
    from tsbench.runners.chat import render
    from tsbench.runners.hf_loading import adds_bos

    dialog = [dict(m) for m in messages]
    template = tokenizer.chat_template
    if template:
        prompt_text = str(tokenizer.apply_chat_template(dialog, add_generation_prompt=True, tokenize=False))
        full = str(
            tokenizer.apply_chat_template(
                [*dialog, {"role": "assistant", "content": rationale}], tokenize=False
            )
        )
    else:
        prompt_text = render(None, dialog)
        full = prompt_text + rationale + "<|im_end|>\n"
    end = tokenizer.eos_token or ""
    # A template that rewrites past turns (e.g. drops thinking) gives no common prefix: the
    # rationale and the EOS token then stand for the turn.
    target_text = full[len(prompt_text) :] if full.startswith(prompt_text) else rationale + end
    target_text = target_text.rstrip("\n")
    prompt = list(tokenizer(prompt_text, add_special_tokens=False).input_ids)
    bos = tokenizer.bos_token or ""
    if adds_bos(tokenizer) and not (bos and prompt_text.startswith(bos)):
        prompt.insert(0, int(tokenizer.bos_token_id))
    target = list(tokenizer(target_text, add_special_tokens=False).input_ids)
    return Encoded(tuple(prompt), tuple(target))


def _batch(torch: Any, rows: Sequence[Encoded], pad: int) -> dict[str, Any]:
    """Right-padded ids, their mask, and labels that are -100 on prompt and padding."""
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, row in enumerate(rows):
        seq = row.ids
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
        labels[i, len(row.prompt) : len(seq)] = torch.tensor(row.target, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def finetune(
    base: Any, examples: Sequence[Encoded], settings: LoraSettings, pad: int
) -> tuple[Any, TrainStats]:
    """LoRA fine-tune `base` (modified in place) on `examples`.

    Args:
        base: the base model, freshly loaded (fp32, CPU).
        examples: the encoded pairs.
        settings: rank, alpha, learning rate, epochs, batch size, seed.
        pad: the padding token id (masked out of attention and loss).

    Returns:
        (the PEFT model, its TrainStats).
    """
    peft, torch = need_peft()
    if not examples:
        raise UserError("no training example was kept; raise --samples or --train-problems")
    started = time.perf_counter()
    torch.manual_seed(settings.seed)  # LoRA's A matrices are initialised from it
    config = peft.LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=0.0,
        target_modules=list(settings.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = peft.get_peft_model(base, config)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.0)
    order = torch.Generator().manual_seed(settings.seed)
    stats = TrainStats()
    for _ in range(settings.epochs):
        permutation = torch.randperm(len(examples), generator=order).tolist()
        for at in range(0, len(permutation), settings.batch_size):
            rows = [examples[i] for i in permutation[at : at + settings.batch_size]]
            loss = model(**_batch(torch, rows, pad)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            stats.steps += 1
            stats.losses.append(round(float(loss.detach()), 4))
            stats.tokens_trained += sum(len(r.ids) for r in rows)
            stats.target_tokens += sum(len(r.target) for r in rows)
    model.eval()
    stats.seconds = time.perf_counter() - started
    return model, stats


def save_adapter(model: Any, folder: Path) -> str:
    """Write adapter_model.safetensors and adapter_config.json into `folder`; returns the
    adapter file's sha256."""
    _write_folder(folder, lambda staging: model.save_pretrained(str(staging)))
    return file_sha256(str(folder / ADAPTER_FILE))


def merge_and_save(model: Any, tokenizer: Any, folder: Path) -> str:
    """Merge the adapter into the weights (merge_and_unload) and write a model folder the hf
    runner loads with --model FOLDER: config, generation config, safetensors, tokenizer with its
    chat template. Returns the weights file's sha256."""
    merged = model.merge_and_unload()

    def write(staging: Path) -> None:
        merged.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))

    _write_folder(folder, write)
    if not (folder / MERGED_FILE).is_file():
        raise RuntimeError(f"transformers did not write {MERGED_FILE} into {folder}")
    return file_sha256(str(folder / MERGED_FILE))


def _write_folder(folder: Path, write: Any) -> None:
    """Write a folder whole into a staging folder beside it, then rename it over the old one, so
    that a killed run never leaves half a model where a later one would load it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        write(staging)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
