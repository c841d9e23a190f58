"""Throughput of a runner under a test-time-scaling workload: a few prompts, many samples each.

    python -m tsbench.bench --runner hf --config llama-1b --dummy-weights --tokenizer TOK.gguf \\
        --prompts 8 --n 16 --max-tokens 256 --temperature 0.8 --top-p 0.95 --repeats 3

prints one JSON object: the runner, versions, hardware and the figures of bench_runner().
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tsbench.contracts import GenerationRequest, PublicTask, Runner
from tsbench.provenance import cpu_model, gpus, package_version
from tsbench.smoke import smoke_check

# Chat prompts of the kind test-time scaling samples many answers to: short problems that call for
# worked reasoning.
PROMPTS = (
    "A train leaves at 9:40 and arrives at 13:05. How long is the journey in minutes? Think step by step.",
    "If 3x + 7 = 31, what is x? Show your reasoning, then give the answer on its own line.",
    "A shop sells pens at 3 for $2. How much do 27 pens cost? Explain briefly.",
    "What is the sum of the first 20 positive odd numbers? Reason it out before answering.",
    "A rectangle has perimeter 46 cm and length 15 cm. What is its area? Work through it.",
    "Tom is twice as old as Ann. In 6 years he will be 1.5 times her age. How old is Ann now?",
    "How many ways can 5 different books be arranged on a shelf? Explain the counting.",
    "Is 221 a prime number? Check divisors step by step and state the conclusion.",
)


def build_requests(
    prompts: Sequence[str], n: int, max_tokens: int, temperature: float, top_p: float
) -> list[GenerationRequest]:
    """One request per prompt, each sample with its own seed."""
    return [
        GenerationRequest(
            messages=(("user", prompt),),
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            seeds=tuple(1000 * i + s for s in range(n)),
        )
        for i, prompt in enumerate(prompts)
    ]


def _torch_cuda() -> Any | None:
    """torch, if the runner already imported it and a CUDA device is in use; never imports it."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch


def bench_runner(
    runner: Runner,
    prompts: Sequence[str],
    n: int,
    max_tokens: int,
    temperature: float,
    top_p: float,
    repeats: int,
) -> dict[str, Any]:
    """Time `repeats` identical batches of len(prompts) requests x n samples, after one warm-up.

    Args:
        runner: any Runner.
        prompts: user messages, one request each.
        n: samples per request.
        max_tokens: cap per sample; no stop strings, so samples end at EOS or the cap.
        temperature: sampling temperature.
        top_p: nucleus mass.
        repeats: timed batches.

    Returns:
        tokens_per_s (generated tokens over wall time, median over batches), requests_per_s and
        samples_per_s (at the median batch wall), ttft_p50_s (first token of a request, from its
        batch's start), tpot_p50_s (per sample: time after its request's first token over its
        further tokens), wall_s (median batch), every batch's wall and the all-batch throughput
        (the first full-size batch can be much slower than the rest), token counts, finish reasons,
        stop reasons, the runner's own breakdown when it keeps one (last_stats), and peak GPU memory when torch
        drives a CUDA device.
    """
    requests = build_requests(prompts, n, max_tokens, temperature, top_p)
    # The first call pays one-off costs (allocator growth, kernel selection) that are not throughput.
    runner.generate([replace(requests[0], n=min(n, 2), max_tokens=min(8, max_tokens))])
    torch = _torch_cuda()
    if torch is not None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    walls: list[float] = []
    batch_tokens: list[int] = []
    prompt_tokens = computed = 0
    ttfts: list[float] = []
    tpots: list[float] = []
    finishes: Counter[str] = Counter()
    stop_reasons: Counter[str] = Counter()
    for _ in range(repeats):
        started = time.perf_counter()
        results = runner.generate(requests)
        walls.append(time.perf_counter() - started)
        batch_tokens.append(0)
        for result in results:
            prompt_tokens += result.prompt_tokens
            computed += result.prompt_tokens_computed
            first = result.ttft_s
            if first is not None:
                ttfts.append(first)
            for c in result.completions:
                batch_tokens[-1] += c.tokens
                finishes[c.finish_reason] += 1
                stop_reasons[c.stop_reason] += 1
                if first is not None and c.tokens > 1:
                    tpots.append((c.latency_s - first) / (c.tokens - 1))
    wall = statistics.median(walls)
    figures: dict[str, Any] = {
        "prompts": len(prompts),
        "n": n,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "repeats": repeats,
        "tokens_per_s": statistics.median(t / w for t, w in zip(batch_tokens, walls, strict=True)),
        "requests_per_s": len(prompts) / wall,
        "samples_per_s": len(prompts) * n / wall,
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
        "tpot_p50_s": statistics.median(tpots) if tpots else None,
        "wall_s": wall,
        "walls_s": walls,
        "tokens_per_s_all_batches": sum(batch_tokens) / sum(walls),
        "generated_tokens_per_batch": sum(batch_tokens) / repeats,
        "prompt_tokens_per_batch": prompt_tokens / repeats,
        "prompt_tokens_computed_per_batch": computed / repeats,
        "finish_reasons": dict(finishes),
        "stop_reasons": dict(stop_reasons),
        "runner_stats_last_batch": dict(getattr(runner, "last_stats", {}) or {}),
    }
    if torch is not None:
        figures["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return figures


def tree_search_bench(
    runner: Runner,
    problems: int = 4,
    beam_width: int = 2,
    budget: int = 8,
    max_step_tokens: int = 32,
    max_steps: int = 3,
) -> dict[str, Any]:
    """Time a beam search (oracle-scored, so no verifier model competes for the engine) on arith,
    every problem's search live at once in one scheduler, as in a run.

    Every step is sent as a continuation of the problem's prompt and the path so far, which is
    what a prefix cache can reuse. Returns wall time, generated tokens, and the engine's prefix
    cache hit rate over the search when the runner reports one (`cache_stats()`).
    """
    import numpy as np

    from tsbench.plugins import tasks, verifiers
    from tsbench.scheduler import Job, Scheduler, estimates
    from tsbench.strategies.base import SearchBudget
    from tsbench.strategies.beam_search import BeamSearch
    from tsbench.verifiers.base import BoundVerifier

    task = tasks.get("arith")()
    strategy = BeamSearch(beam_width=beam_width, max_step_tokens=max_step_tokens, max_steps=max_steps)
    verifier = verifiers.get("oracle")()
    stats: Any = getattr(runner, "cache_stats", dict)
    before = stats()
    jobs = []
    started = time.perf_counter()
    for problem in task.load(problems, 0, None):
        # No token bound: max_steps bounds the work, and a bound would end searches unevenly.
        bound = BoundVerifier(verifier, problem, task)
        search = strategy.search(
            problem.public(),
            PublicTask(task),
            estimates(runner, bound),
            SearchBudget(budget),
            np.random.default_rng(0),
        )
        jobs.append(Job(search, bound, problem.id))
    Scheduler(runner, int(getattr(runner, "batch_sequences", 32))).run(jobs)
    generated = sum(job.result.spend.generated_tokens for job in jobs)
    figures: dict[str, Any] = {
        "problems": problems,
        "search_s": time.perf_counter() - started,
        "generated_tokens": generated,
    }
    after = stats()
    if before and after and after["queries"] > before["queries"]:
        figures["prefix_cache_hit_rate"] = (after["hits"] - before["hits"]) / (
            after["queries"] - before["queries"]
        )
    return figures


def prefix_cache_ab(argv: Sequence[str]) -> dict[str, Any]:
    """The tree search with the runner's prefix cache on, then off, each in a fresh process.

    A fresh process per setting keeps one engine's cache and memory from touching the other's.
    """
    import subprocess
    import tempfile

    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for setting in ("true", "false"):
            out = Path(scratch) / f"{setting}.json"  # engines log to stdout too: read the file
            command = [sys.executable, "-m", "tsbench.bench", *argv, "--tree-search", "--out", str(out)]
            command += ["--opt", f"prefix_caching={setting}"]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0 or not out.exists():
                raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
            runs["on" if setting == "true" else "off"] = json.loads(out.read_text())
    on, off = runs["on"]["tree_search"], runs["off"]["tree_search"]
    return {
        "on": runs["on"],
        "off": runs["off"],
        "wall_ratio_on_over_off": on["search_s"] / off["search_s"],
        "prefix_cache_hit_rate_on": on.get("prefix_cache_hit_rate"),
        "prefix_cache_hit_rate_off": off.get("prefix_cache_hit_rate"),
    }


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """Runner options from the flags that were given, plus --opt KEY=VALUE (JSON values)."""
    options: dict[str, Any] = {}
    if args.config or args.dummy_weights:
        options["dummy_weights"] = True
    for flag in ("device", "dtype", "batch_size", "tokenizer", "sampler", "chat_template"):
        value = getattr(args, flag)
        if value is not None:
            options[flag] = value
    for item in args.opt:
        key, _, raw = item.partition("=")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    return options


def main(argv: Sequence[str] | None = None) -> int:
    from tsbench.plugins import runners

    parser = argparse.ArgumentParser(prog="python -m tsbench.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runner", default="hf")
    parser.add_argument("--model", help="model path (default: the embedded model)")
    parser.add_argument(
        "--config", help="a named random-weight architecture of the hf runner (llama-1b, llama-8b)"
    )
    parser.add_argument(
        "--dummy-weights", action="store_true", help="random weights for --model's config.json"
    )
    parser.add_argument("--tokenizer")
    parser.add_argument("--chat-template", help="Jinja chat template text for the hf runner")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--sampler", choices=("numpy", "device"))
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="more runner options")
    parser.add_argument("--prompts", type=int, default=8, help="how many of the built-in prompts (cycled)")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--smoke", action="store_true", help="run smoke_check() first and record its problems"
    )
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument(
        "--tree-search", action="store_true", help="time a beam search on arith instead (tree_search_bench)"
    )
    parser.add_argument(
        "--prefix-cache-ab",
        action="store_true",
        help="the tree search with prefix_caching on and off, in two processes; report the wall ratio",
    )
    args = parser.parse_args(argv)
    if args.prefix_cache_ab:
        given: list[str] = []
        skip_value = False
        for arg in argv if argv is not None else sys.argv[1:]:
            if skip_value or arg == "--prefix-cache-ab" or arg.startswith("--out="):
                skip_value = False
                continue
            if arg == "--out":  # each child prints its JSON; only the combined one is written
                skip_value = True
                continue
            given.append(arg)
        report_ab = prefix_cache_ab(given)
        text_ab = json.dumps(report_ab, indent=1)
        print(text_ab)
        if args.out:
            Path(args.out).write_text(text_ab + "\n")
        return 0

    started = time.perf_counter()
    runner = runners.get(args.runner)(model=args.config or args.model, threads=args.threads, **_options(args))
    report: dict[str, Any] = {"runner": asdict(runner.info()), "load_s": time.perf_counter() - started}
    report["command"] = " ".join(["python -m tsbench.bench", *(argv if argv is not None else sys.argv[1:])])
    report["machine"] = {"cpu": cpu_model(), "gpus": gpus()}
    report["versions"] = {
        p: package_version(p) for p in ("numpy", "torch", "transformers", "llama-cpp-python")
    }
    if args.tree_search:
        report["tree_search"] = tree_search_bench(runner)
        runner.close()
        print(json.dumps(report, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        return 0
    if args.smoke:
        report["smoke_problems"] = smoke_check(runner)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    report["bench"] = bench_runner(
        runner, prompts, args.n, args.max_tokens, args.temperature, args.top_p, args.repeats
    )
    runner.close()
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return 1 if report.get("smoke_problems") else 0


if __name__ == "__main__":
    sys.exit(main())
