"""Bad input: one line naming the problem and the fix, exit code 2, no results folder left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tsbench.errors import UserError
from tsbench.spec import build_spec

FIXTURES = Path(__file__).parent.parent / "tasks" / "fixtures"


def tsbench(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("TSBENCH_DATA_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "tsbench.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args,expected",
    [
        (["run", "--task", "nope"], "unknown task 'nope'"),
        (["run", "--strategy", "majority,nope"], "unknown strategy 'nope'"),
        (["run", "--runner", "nope"], "unknown runner 'nope'"),
        (["run", "--budget", "0"], "budgets: '0' must be at least 1"),
        (["run", "--budget", "1,x"], "budgets: 'x' is not a positive integer"),
        (["run", "--limit", "-3"], "limit: '-3' is not a positive integer"),
        (["run", "--temperature", "hot"], "temperature: 'hot' is not a number"),
        (["run", "--model", "missing.gguf", "--limit", "1"], "model file missing.gguf does not exist"),
        (["run", "--task", "gsm8k", "--data-dir", "empty"], "has no gsm8k/test.jsonl"),
        (["run", "--task", "gsm8k"], "pass --data-dir DIR (or set TSBENCH_DATA_DIR=DIR)"),
        (["run", "-c", "bad.yaml"], "is not valid YAML at line 3"),
        (["run", "-c", "unknown.yaml"], "unknown field 'budget'"),
        (["run", "-c", "missing.yaml"], "spec file missing.yaml does not exist"),
        (["run", "--task-arg", "levels"], "is not KEY=VALUE"),
        (["run", "--task-arg", "levels=9"], "levels from 1 to 5"),
        (["report", "nowhere"], "nowhere is not a tsbench run folder"),
        (["run", "--param-count", "lots"], "param_count: 'lots' is not a positive parameter count"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], expected: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.yaml").write_text("task: arith\nbudgets: [1, 2\n")
    (tmp_path / "unknown.yaml").write_text("task: arith\nbudget: 4\n")
    result = tsbench(args, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not (tmp_path / "results").exists()


def test_list_shows_one_line_per_plugin(tmp_path: Path) -> None:
    for what, name in (("tasks", "gsm8k"), ("runners", "llamacpp"), ("strategies", "pass@k")):
        result = tsbench(["list", what], tmp_path)
        assert result.returncode == 0
        assert any(
            line.startswith(name + " ") and len(line.split()) > 1 for line in result.stdout.splitlines()
        )


def test_spec_values_are_validated_in_one_place() -> None:
    spec = build_spec({"budgets": "16,1,4", "strategies": "majority, pass@k"}, "test")
    assert spec.budgets == (1, 4, 16) and spec.strategies == ("majority", "pass@k")
    with pytest.raises(UserError, match="strategies is empty"):
        build_spec({"strategies": ""}, "test")
    with pytest.raises(UserError, match="top_p"):
        build_spec({"top_p": 2}, "test")


def test_run_id_ignores_where_and_how_fast_but_not_what() -> None:
    base = build_spec({}, "t")
    assert base.run_id() == build_spec({"output": "x", "threads": 1, "data_dir": "d"}, "t").run_id()
    assert base.run_id() != build_spec({"seed": 1}, "t").run_id()
    assert base.run_id() != build_spec({"temperature": 0.8}, "t").run_id()
