"""STaR's rounds: evaluate the base model, then per round sample, filter, fine-tune, merge, evaluate.

Layout of the STaR folder (OUT, default results/star-<config hash>):
  star.json                 the configuration, the train split's size, and per round its train
                            compute, wall times and eval accuracy (rewritten after each round)
  round-0/eval/             the base model on the hf runner: a normal run folder
  round-R/adapter/          adapter_model.safetensors + adapter_config.json
  round-R/star-rR/          the merged model (config, safetensors, tokenizer): --model FOLDER
  round-R/rationales.jsonl  the kept (prompt, rationale) pairs the round trained on
  round-R/provenance.json   the round's record (adapter and weights sha256, compute, times)
  round-R/eval/             a normal run folder whose provenance.json holds `train_compute`

Round R samples with the model of round R-1 and trains from the BASE model on round R's data
only, as the paper does. A rerun of the same command reuses a round whose record matches the
configuration and whose merged weights are intact, and resumes its evaluation as `tsbench run` does.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tsbench.contracts import Problem, RunnerInfo, Task
from tsbench.errors import UserError
from tsbench.identity import digest
from tsbench.provenance import cpu_model, file_sha256, package_version
from tsbench.records import METRICS, PROVENANCE, write_atomic
from tsbench.run import Prepared, open_runner, prepare
from tsbench.spec import build_spec
from tsbench.star.ledger import RoundRecord, round_record, train_compute
from tsbench.star.lora import (
    MERGED_FILE,
    LoraSettings,
    encode,
    finetune,
    load_base,
    merge_and_save,
    save_adapter,
)
from tsbench.star.rationales import RationaleSet, SamplingSettings, sample_rationales, train_split

RUNNER = "hf"
STAR_FILE = "star.json"
RATIONALES = "rationales.jsonl"
METHOD = "STaR (Zelikman et al. 2022): LoRA fine-tuned from the base model each round on that round's kept rationales"


@dataclass(frozen=True)
class StarConfig:
    """A STaR run.

    Args:
        task, task_options: the task (it needs a train split: examples(k, seed)).
        rounds: STaR rounds R (models M_1..M_R; M_0 is the base).
        train_problems: train problems drawn per round (test questions among them are dropped).
        samples: rationales sampled per train problem (and per rationalised problem).
        train_max_tokens: token cap of a sampled rationale.
        limit, seed, strategies, budgets, max_tokens, temperature, data_dir: the test runs' spec
            fields, as `tsbench run` takes them (max_tokens None: the task's default).
        model: the base model (None: the hf runner's embedded GGUF).
        lora: fine-tuning settings (its seed is derived from `seed` and the round).
        output: the STaR folder; None for results/star-<config hash>.
        threads: CPU threads (None: the cores other processes leave idle).
        show_progress: progress bars on stderr.
    """

    task: str = "arith"
    task_options: dict[str, Any] = field(default_factory=dict)
    rounds: int = 2
    train_problems: int = 16
    samples: int = 4
    train_max_tokens: int = 96
    limit: int = 20
    seed: int = 0
    strategies: tuple[str, ...] = ("greedy", "majority")
    budgets: tuple[int, ...] = (1, 4)
    max_tokens: int | None = None
    temperature: float | None = None
    data_dir: str | None = None
    model: str | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    output: str | None = None
    threads: int | None = None
    show_progress: bool = True

    def identity(self) -> dict[str, Any]:
        """The fields that decide the results (not where they go or how fast)."""
        data = asdict(self)
        for name in ("output", "threads", "show_progress", "data_dir"):
            del data[name]
        loaded: dict[str, Any] = json.loads(json.dumps(data, default=list))
        return loaded

    def digest(self) -> str:
        return digest(self.identity())


class WithModelSha256:
    """A runner whose info() names its model's weights sha256: a merged model folder has none of
    its own, and the run identity and the generation cache must tell two trainings apart."""

    def __init__(self, runner: Any, sha256: str) -> None:
        self._runner, self._sha256 = runner, sha256
        self.__module__ = getattr(runner, "__module__", type(self).__module__)

    def info(self) -> RunnerInfo:
        return replace(self._runner.info(), model_sha256=self._sha256)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)


@dataclass
class Evaluated:
    """One round's evaluation: its run folder, metrics rows and wall time."""

    folder: Path
    rows: list[dict[str, Any]]
    seconds: float


def output_folder(config: StarConfig) -> Path:
    return Path(config.output) if config.output else Path("results") / f"star-{config.digest()[:12]}"


def eval_spec(config: StarConfig, model: str | None, output: Path) -> Prepared:
    """The test run of one round's model, validated as `tsbench run` validates it."""
    values: dict[str, Any] = {
        "task": config.task,
        "task_options": dict(config.task_options),
        "limit": config.limit,
        "seed": config.seed,
        "runner": RUNNER,
        "model": model,
        "strategies": list(config.strategies),
        "budgets": list(config.budgets),
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
        "data_dir": config.data_dir,
        "output": str(output),
        "threads": config.threads,
    }
    return prepare(build_spec({k: v for k, v in values.items() if v is not None}, "tsbench star"))


def open_eval_runner(prepared: Prepared, sha256: str | None) -> Any:
    """The hf runner on a round's model, behind the generation cache as `tsbench run` opens it."""
    from tsbench.cache import with_cache

    spec = prepared.spec
    runner = open_runner(spec, cache=False)
    if sha256:
        runner = WithModelSha256(runner, sha256)
    try:
        return with_cache(runner, spec.runner, spec.model, spec.runner_options)
    except BaseException:
        runner.close()
        raise


def evaluate(
    prepared: Prepared, runner: Any, compute: dict[str, Any], show_progress: bool, started: float
) -> Evaluated:
    """Run the test split as `tsbench run` does (prepare, generate_all, scoring, records), then
    add `train_compute` to the run folder's provenance.json. `started`: when loading the runner
    began (its wall time counts as evaluation)."""
    from tsbench.cli import run_prepared

    run_prepared(prepared, runner, not show_progress)
    seconds = time.perf_counter() - started
    folder = Path(str(prepared.spec.output))
    set_train_compute(folder, compute)
    rows = json.loads((folder / METRICS).read_text(encoding="utf-8"))["rows"]
    return Evaluated(folder, rows, seconds)


def set_train_compute(folder: Path, compute: dict[str, Any]) -> None:
    """Put `compute` into a run folder's provenance.json as `train_compute`."""
    provenance = json.loads((folder / PROVENANCE).read_text(encoding="utf-8"))
    provenance["train_compute"] = compute
    write_atomic(folder / PROVENANCE, json.dumps(provenance, indent=2, sort_keys=True) + "\n")


def check_output(out: Path, config: StarConfig) -> None:
    """Refuse a folder that holds anything but a STaR run of this same configuration."""
    star = out / STAR_FILE
    if star.is_file():
        try:
            held = json.loads(star.read_text(encoding="utf-8")).get("config_sha256")
        except ValueError:
            held = None
        if held != config.digest():
            raise UserError(
                f"output folder {out} holds a STaR run of another configuration; pass another -o or delete that folder"
            )
    elif out.is_file() or (out.is_dir() and any(out.iterdir())):
        raise UserError(f"output folder {out} exists and is not a STaR run; pass another -o")


def round_provenance(config: StarConfig, record: RoundRecord) -> dict[str, Any]:
    return {
        "config_sha256": config.digest(),
        "config": config.identity(),
        "record": record.as_dict(),
        "cpu": cpu_model(),
        "packages": {p: package_version(p) for p in ("torch", "transformers", "peft")},
    }


def resumed_round(out: Path, index: int, config: StarConfig) -> RoundRecord | None:
    """A round finished by an earlier run of this configuration, its merged weights intact."""
    file = out / f"round-{index}" / PROVENANCE
    try:
        held = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if held.get("config_sha256") != config.digest():
        return None
    record = RoundRecord(**held["record"])
    weights = Path(record.model) / MERGED_FILE
    if not weights.is_file() or file_sha256(str(weights)) != record.model_sha256:
        return None
    return record


def train_round(
    config: StarConfig, index: int, data: RationaleSet, out: Path, parameters: int
) -> RoundRecord:
    """Fine-tune the base model on the round's kept rationales; save the adapter and the merged model."""
    from tsbench.runners.cpu_load import default_threads
    from tsbench.runners.hf_loading import pad_id

    # Chosen now, not at the start: torch's threads stall one another on a core another process
    # took meanwhile (a round here trained 4x slower per token on 2 threads once one was taken).
    threads = config.threads or default_threads()

    folder = out / f"round-{index}"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(asdict(k), sort_keys=True, ensure_ascii=False) + "\n" for k in data.kept]
    write_atomic(folder / RATIONALES, "".join(lines))  # what the round trains on, for inspection
    started = time.perf_counter()
    base, tokenizer = load_base(config.model, threads)
    examples = [
        encode(tokenizer, [{"role": r, "content": c} for r, c in k.messages], k.text) for k in data.kept
    ]
    settings = replace(config.lora, seed=config.seed * 1000 + index)
    model, stats = finetune(base, examples, settings, pad_id(tokenizer, set()))
    adapter_sha = save_adapter(model, folder / "adapter")
    trained = time.perf_counter()
    merged = folder / f"star-r{index}"
    model_sha = merge_and_save(model, tokenizer, merged)
    record = round_record(index, str(merged), parameters, data, stats, settings.epochs)
    record.adapter_sha256, record.model_sha256, record.threads = adapter_sha, model_sha, threads
    record.seconds["training"] = round(trained - started, 2)
    record.seconds["merging"] = round(time.perf_counter() - trained, 2)
    return record


def _say(text: str) -> None:
    print(text, flush=True)


def run_star(config: StarConfig) -> dict[str, Any]:
    """Every round of a STaR run, each evaluated; returns what star.json holds.

    Raises:
        UserError: bad input (task, train split, spec fields, output folder).
    """
    from tsbench.star.lora import need_peft

    need_peft()
    out = output_folder(config)
    check_output(out, config)
    first = eval_spec(config, config.model, out / "round-0" / "eval")
    task: Task = first.task
    train, dropped = train_split(task, config.train_problems, config.seed, first.problems)
    summary: dict[str, Any] = {
        "method": METHOD,
        "config_sha256": config.digest(),
        "config": config.identity(),
        "output": str(out),
        "train_problems": len(train),
        "dropped_test_questions": dropped,
        "test_problems": len(first.problems),
        "rounds": [],
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_summary(out, summary)
    if dropped:
        _say(f"star: dropped {dropped} train problems whose question is a test question of this run")
    records: list[RoundRecord] = []
    _say(f"star: round 0: evaluating the base model on {len(first.problems)} test problems")
    started = time.perf_counter()
    runner = open_eval_runner(first, None)
    try:
        base = runner.info()
        base_name = f"{base.model_id} (sha256 {base.model_sha256})" if base.model_sha256 else base.model_id
        compute = train_compute([], METHOD, base_name)
        result = evaluate(first, runner, compute, config.show_progress, started)
        summary["rounds"].append(_round_summary(0, base.model_id, None, result, {}))
        _write_summary(out, summary)
        for index in range(1, config.rounds + 1):
            record = resumed_round(out, index, config)
            reused = record is not None
            if record is None:
                record = _new_round(config, index, runner, task, train, out)
            else:
                _say(f"star: round {index}: reusing the model trained by an earlier run ({record.model})")
                runner.close()
            records.append(record)
            prepared = eval_spec(config, record.model, out / f"round-{index}" / "eval")
            _say(f"star: round {index}: evaluating {Path(record.model).name}")
            started = time.perf_counter()
            runner = open_eval_runner(prepared, record.model_sha256)
            compute = train_compute(records, METHOD, base_name)
            result = evaluate(prepared, runner, compute, config.show_progress, started)
            record.seconds["evaluation"] = round(result.seconds, 2)
            compute = train_compute(records, METHOD, base_name)  # with this evaluation's time
            set_train_compute(result.folder, compute)
            write_atomic(
                out / f"round-{index}" / PROVENANCE,
                json.dumps(round_provenance(config, record), indent=2, sort_keys=True) + "\n",
            )
            entry = _round_summary(index, runner.info().model_id, record, result, compute)
            # A reused round's sampling and training times are those of the run that trained it.
            entry["reused_model"] = reused
            summary["rounds"].append(entry)
            _write_summary(out, summary)
    finally:
        runner.close()
    return summary


def _new_round(
    config: StarConfig, index: int, runner: Any, task: Task, train: list[Problem], out: Path
) -> RoundRecord:
    """Sample with the current model (then closed by the caller), fine-tune, merge, record."""
    settings = SamplingSettings(config.samples, config.train_max_tokens, config.seed)
    data = sample_rationales(runner, task, train, settings, index, config.show_progress)
    rationalised = sum(r.rationalised for r in data.kept)
    _say(
        f"star: round {index}: {len(data.kept)} rationales kept ({rationalised} rationalised) from "
        f"{data.problems} train problems, {data.spend.samples} samples in {data.spend.seconds:.1f} s"
    )
    parameters = int(runner.info().parameters)
    runner.close()  # its memory is the training's
    record = train_round(config, index, data, out, parameters)
    _say(
        f"star: round {index}: fine-tuned on {record.tokens_trained} tokens in {record.steps} steps "
        f"(loss {record.loss_first} -> {record.loss_last}) in {record.seconds['training']:.1f} s; "
        f"merged into {record.model}"
    )
    return record


def _round_summary(
    index: int, model_id: str, record: RoundRecord | None, result: Evaluated, compute: dict[str, Any]
) -> dict[str, Any]:
    seconds = dict(record.seconds) if record else {"evaluation": round(result.seconds, 2)}
    return {
        "round": index,
        "model": model_id,
        "eval_folder": str(result.folder),
        "train_flops": float(compute.get("train_flops", 0.0)),
        "round_train_flops": record.train_flops if record else 0.0,
        "record": record.as_dict() if record else None,
        "seconds": seconds,
        "wall_s": round(sum(seconds.values()), 2),
        "accuracy": [
            {
                "strategy": r["strategy"],
                "k": r["k"],
                "oracle": r["oracle"],
                "accuracy": r["accuracy"],
                "ci95": r["ci95"],
            }
            for r in result.rows
        ],
    }


def _write_summary(out: Path, summary: dict[str, Any]) -> None:
    write_atomic(out / STAR_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
