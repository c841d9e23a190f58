"""Sweeps: expansion into cells, the plan's prices, and the local and Ray executors on the real
embedded model (the Ray test starts a real local cluster on loopback and kills an actor mid-sweep)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from tsbench.cli import main
from tsbench.errors import UserError
from tsbench.sweep.cells import Engines, check_cells, run_local
from tsbench.sweep.plan import price_sweep
from tsbench.sweep.spec import expand

# 2 tasks x 2 strategies x 2 budgets; one problem per engine group (batch_sequences 1), so a
# cell commits problem by problem and can be cut between two of them.
SMALL = {
    "limit": 3,
    "max_tokens": 12,
    "task_options": {"levels": 1},
    "batch_sequences": 1,
    "tasks": ["arith", "countdown"],
    "strategies": ["greedy", "majority"],
    "budgets": [1, 2],
}
RECORDS = ("identity.json", "samples.jsonl", "problems.jsonl", "grades.jsonl", "scores.jsonl")


def sweep_of(tmp_path: Path, name: str, **changes: object) -> object:
    return expand({**SMALL, **changes, "results": str(tmp_path / name)}, "sweep.yaml")


def test_axes_expand_into_their_cross_product_in_order() -> None:
    sweep = expand({**SMALL, "seeds": [0, 1], "budgets": [1, [2, 4]]}, "s.yaml")
    assert len(sweep.cells) == 2 * 2 * 2 * 2
    first, last = sweep.cells[0].spec, sweep.cells[-1].spec
    assert (first.task, first.strategies, first.budgets, first.seed) == ("arith", ("greedy",), (1,), 0)
    assert (last.task, last.strategies, last.budgets, last.seed) == ("countdown", ("majority",), (2, 4), 1)
    assert len({c.spec.run_id() for c in sweep.cells}) == len(sweep.cells)


def test_a_model_entry_that_names_a_runner_pairs_only_with_it() -> None:
    values = {
        **SMALL,
        "runners": ["llamacpp", "hf"],
        "models": [{"model": "a.gguf", "runner": "llamacpp"}, None],
    }
    cells = expand(values, "s.yaml").cells
    pairs = {(c.spec.runner, c.spec.model) for c in cells}
    assert pairs == {("llamacpp", "a.gguf"), ("llamacpp", None), ("hf", None)}


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"output": "x"}, "use results: DIR, not output"),
        ({"colour": 1}, "unknown field 'colour'"),
        ({"budgets": [1, 1]}, "is the same run as"),
        ({"tasks": []}, "axis tasks is empty"),
        ({"seeds": ["x"]}, "seed 'x' is not an integer"),
        ({"runners": [{"name": "llamacpp"}]}, "runners entry"),
    ],
)
def test_bad_sweep_specs_are_refused_in_one_line(change: dict[str, object], said: str) -> None:
    with pytest.raises(UserError, match=said.replace("(", r"\(")):
        expand({**SMALL, **change}, "s.yaml")


def test_the_plan_prices_pools_and_searches_by_their_budgets(tmp_path: Path) -> None:
    sweep = expand(
        {
            "limit": 2,
            "max_tokens": 10,
            "task_options": {"levels": 1},
            "strategies": [["greedy", "majority"], "beam-search"],
            "verifiers": ["oracle"],
            "budget_unit": "tokens",
            "budgets": [[300, 600]],
            "pool_size": 4,
            "results": str(tmp_path / "r"),
        },
        "s.yaml",
    )
    prices, sources = price_sweep(sweep, check_cells(sweep), {"*": 50.0})
    pools, search = prices
    assert pools.generated_tokens == 2 * (1 + 4) * 10  # greedy + a pool of 4, at most max_tokens each
    assert search.generated_tokens == 2 * (300 + 600)  # a tokens level bounds a search's whole spend
    assert pools.bounded and search.bounded
    assert search.wall_s == pytest.approx(1800 / 50.0)
    assert list(sources.values()) == ["50 tok/s given"]


def test_the_plan_takes_throughput_and_parameters_measured_under_the_results_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({**SMALL, "limit": 1, "tasks": ["arith"], "results": str(tmp_path / "r")}))
    assert main(["sweep", str(spec), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sweep", str(spec), "--plan", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "median of 4 run folders of this machine under" in out and "cells: 4;" in out
    assert "? (param_count)" not in out and "on 2 (cells spread evenly" in out
    # A folder from another machine gives the model's size, not this machine's speed.
    for folder in sorted((tmp_path / "r").iterdir())[:3]:
        origin = json.loads((folder / "provenance.json").read_text())
        (folder / "provenance.json").write_text(json.dumps({**origin, "cpu": "another CPU"}))
    assert main(["sweep", str(spec), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "median of 1 run folders of this machine" in out and "? (param_count)" not in out
    assert "every cell priced whole: the generation cache is off" in out  # as the tests run
    monkeypatch.setenv("TSBENCH_GENERATION_CACHE", str(tmp_path / "cache.sqlite"))
    assert main(["sweep", str(spec), "--plan"]) == 0
    assert "the local executor runs cells in order" in capsys.readouterr().out
    # Ray may run two cells that share samples at once: no reuse is priced there.
    assert main(["sweep", str(spec), "--plan", "--executor", "ray"]) == 0
    assert "every cell priced whole: on Ray" in capsys.readouterr().out


def test_the_local_executor_keeps_one_engine_and_a_second_sweep_resumes_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = []
    real_get = Engines.get

    def counting_get(self: Engines, cell: object) -> object:
        if getattr(cell, "engine", None) != self.key:
            opened.append(cell)
        return real_get(self, cell)  # type: ignore[arg-type]

    monkeypatch.setattr(Engines, "get", counting_get)
    sweep = sweep_of(tmp_path, "local")
    results = run_local(sweep, show_progress=False)  # type: ignore[arg-type]
    assert len(results) == 8 and len(opened) == 1
    before = {r.run_id: (tmp_path / "local" / r.run_id / "samples.jsonl").read_bytes() for r in results}
    again = run_local(sweep, show_progress=False)  # type: ignore[arg-type]
    assert all(r.done_before == r.problems == 3 for r in again)
    assert {r.run_id: (tmp_path / "local" / r.run_id / "samples.jsonl").read_bytes() for r in again} == before


def _kill_an_actor_mid_cell(root: Path, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the process that holds a cell's folder once it has committed some problems but
    not all: an actor dying mid-cell. Records the pid killed."""
    while not stop.is_set() and not killed:
        for folder in root.glob("*"):
            problems = folder / "problems.jsonl"
            try:
                committed = len(problems.read_text().splitlines())
                pid = int((folder / ".lock").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if 1 <= committed < SMALL["limit"] and pid != os.getpid():  # type: ignore[operator]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.002)


@pytest.mark.slow
def test_a_ray_sweep_survives_a_killed_actor_and_equals_the_local_executor(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'tsbench[ray]'")
    from tsbench.sweep.ray_executor import Placement, run_on_ray

    local = sweep_of(tmp_path, "local")
    on_ray = sweep_of(tmp_path, "ray")
    reference = run_local(local, show_progress=False)  # type: ignore[arg-type]
    env = {"TSBENCH_GENERATION_CACHE": "off", "HF_HUB_OFFLINE": "1"}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": env},
        log_to_driver=False,
    )
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_an_actor_mid_cell, args=(tmp_path / "ray", killed, stop))
    watcher.start()
    try:
        results = run_on_ray(on_ray, Placement(workers=2, cpus=1), show_progress=False)  # type: ignore[arg-type]
    finally:
        stop.set()
        watcher.join()
        ray.shutdown()
    assert killed, "no actor was caught mid-cell; the test did not test a death"
    assert any(0 < r.done_before < r.problems for r in results)  # the killed cell resumed its records
    assert [r.run_id for r in results] == [r.run_id for r in reference]
    for result in results:
        for name in RECORDS:
            ours = (tmp_path / "ray" / result.run_id / name).read_bytes()
            assert ours == (tmp_path / "local" / result.run_id / name).read_bytes(), (result.run_id, name)


def test_plan_throughput_comes_per_model_from_flags_and_bench_files(tmp_path: Path) -> None:
    from tsbench.sweep.cli import given_rates

    bench = tmp_path / "h100.json"
    bench.write_text(
        '{"runner": {"model_id": "Qwen/Qwen2.5-7B-Instruct"}, "bench": {"tokens_per_s": 2500.5}}'
    )
    rates = given_rates(["120", "tiny=900"], [str(bench)])
    assert rates == {"*": 120.0, "tiny": 900.0, "Qwen/Qwen2.5-7B-Instruct": 2500.5}
    with pytest.raises(UserError, match="give a positive rate"):
        given_rates(["fast"], [])
    bench.write_text("{}")
    with pytest.raises(UserError, match="not a `tsbench bench` JSON"):
        given_rates([], [str(bench)])


def test_pool_samples_an_earlier_cell_drew_are_priced_once_unless_the_cache_is_off(tmp_path: Path) -> None:
    sweep = expand({**SMALL, "tasks": ["arith"], "strategies": ["majority"], "budgets": [2, 4]}, "s.yaml")
    prepared = check_cells(sweep)
    shared, _ = price_sweep(sweep, prepared, {"*": 1.0})
    whole, _ = price_sweep(sweep, prepared, {"*": 1.0}, reuse=False)
    assert [p.generated_tokens for p in whole] == [3 * 2 * 12, 3 * 4 * 12]
    assert [p.generated_tokens for p in shared] == [3 * 2 * 12, 3 * 2 * 12]  # only samples 3 and 4 are new


@pytest.mark.slow
def test_bad_input_met_inside_a_ray_actor_is_one_line_naming_the_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'tsbench[ray]'")
    spec = tmp_path / "dead.yaml"
    dead = {"runner": "openai", "runner_options": {"base_url": "http://127.0.0.1:9/v1"}}
    spec.write_text(yaml.safe_dump({**SMALL, "tasks": ["arith"], "runners": [dead], "budgets": [1]}))
    code = main(["sweep", str(spec), "--executor", "ray", "--results", str(tmp_path / "r"), "--no-progress"])
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tsbench: error:")]
    assert code == 2 and len(said) == 1
    assert "cell 1 (arith, greedy" in said[0] and "no OpenAI-compatible server answers at" in said[0]
    assert "ray::" not in said[0]


def test_a_free_actor_takes_its_own_engine_first_then_one_no_other_actor_holds() -> None:
    from collections import deque

    from tsbench.sweep.ray_executor import _next_cell

    values = {**SMALL, "tasks": ["arith"], "strategies": ["greedy"], "budgets": [1]}
    cells = expand({**values, "models": ["a.gguf", "b.gguf", "c.gguf"], "seeds": [0, 1]}, "s.yaml").cells
    a0, a1, b0, b1, c0, c1 = cells
    pending = deque(cells)
    assert _next_cell(pending, b0.engine, {a0.engine}) is b0  # its own engine
    assert _next_cell(pending, b0.engine, {a0.engine, b0.engine}) is b1
    assert _next_cell(pending, None, {a0.engine}) is c0  # an engine nobody holds, not a's
    assert _next_cell(pending, None, {a0.engine, c0.engine}) is a0  # then anything left
    assert list(pending) == [a1, c1]


@pytest.mark.slow
def test_an_actor_the_cluster_could_never_place_is_refused_not_waited_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'tsbench[ray]'")
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**SMALL, "tasks": ["arith"], "budgets": [1]}))
    args = [
        "sweep",
        str(spec),
        "--executor",
        "ray",
        "--gpus-per-worker",
        "1000",
        "--results",
        str(tmp_path / "r"),
    ]
    assert main(args) == 2
    assert "--gpus-per-worker 1000: the Ray cluster has" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
