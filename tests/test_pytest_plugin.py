"""The pytest plugin from the outside: a user's test file, run by pytester, with the `tsbench`
marker and the `tsbench_gate` fixture (registered through the pytest11 entry point, not here).

Runs use the TEST DOUBLE runner of test_gate.py (registered in this process; pytester runs the
user's session in process, so the plugin sees it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_gate import FIXTURES, ONCE, make_run, spec

pytest_plugins = ["pytester"]


def spec_file(folder: Path, name: str, **fields: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec(**fields)))
    return path


def run_user_tests(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_user="import pytest\n\n" + body)
    return pytester.runpytest("-p", "no:cacheprovider", *args)


@pytest.fixture(scope="module", autouse=True)
def no_generation_cache() -> Any:
    """The doubles' samples stay out of the user's generation cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TSBENCH_GENERATION_CACHE", "off")
        yield


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("plugin-baseline"), spec())


def test_a_spec_that_costs_accuracy_fails_with_the_gate_message(
    pytester: pytest.Pytester, baseline: Path, tmp_path: Path
) -> None:
    worse = spec_file(tmp_path, "worse", runner_options={"wrong": ONCE[:8]})
    same = spec_file(tmp_path, "same")
    result = run_user_tests(
        pytester,
        f"""
@pytest.mark.tsbench(spec={str(worse)!r}, baseline={str(baseline)!r}, min_effect=0.1)
def test_worse(tsbench_gate):
    tsbench_gate.check()

@pytest.mark.tsbench(spec={str(same)!r}, baseline={str(baseline)!r})
def test_same(tsbench_gate):
    report = tsbench_gate.check()
    assert not report.failed and len(report.rows) == 3
""",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*accuracy regression: strategy greedy, verifier -, budget 1 samples: baseline 100.0%, "
            "candidate 60.0%, difference -40.0 points [[]95% CI *], p = 0.00781 (mcnemar-exact, 20 problems*",
            "*strategy*verifier*baseline %*candidate %*",
        ]
    )


def test_a_spec_runs_once_per_session_and_check_overrides_the_marker(
    pytester: pytest.Pytester, baseline: Path, tmp_path: Path
) -> None:
    worse = spec_file(tmp_path, "worse", runner_options={"wrong": ONCE[:8]})
    results = tmp_path / "runs"
    result = run_user_tests(
        pytester,
        f"""
@pytest.mark.tsbench(spec={str(worse)!r}, baseline={str(baseline)!r})
def test_lenient(tsbench_gate):
    assert not tsbench_gate.check(min_effect=0.5).failed

@pytest.mark.tsbench(spec={str(worse)!r}, baseline={str(baseline)!r})
def test_folder(tsbench_gate):
    folder = tsbench_gate.run({str(worse)!r})
    assert tsbench_gate.check(spec=None, run=folder, correction="none", min_effect=0.45).rows
""",
        "--tsbench-results",
        str(results),
    )
    result.assert_outcomes(passed=2)
    assert len([p for p in results.iterdir() if p.is_dir()]) == 1  # generated once for both tests


def test_a_baseline_over_other_problems_is_refused_in_one_line(
    pytester: pytest.Pytester, baseline: Path, tmp_path: Path
) -> None:
    fewer = spec_file(tmp_path, "fewer", limit=19)
    result = run_user_tests(
        pytester,
        f"""
@pytest.mark.tsbench(spec={str(fewer)!r}, baseline={str(baseline)!r})
def test_fewer(tsbench_gate):
    tsbench_gate.check()

def test_no_baseline(tsbench_gate):
    tsbench_gate.check(spec={str(fewer)!r})
""",
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*tsbench gate refused: baseline * and candidate * cover different problems (20 vs 19;*",
            "*tsbench gate refused: tsbench gate: give baseline= and exactly one of spec=*",
        ]
    )


def test_tokens_per_second_is_gated_against_a_baseline_measured_in_the_session(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    fast = spec_file(tmp_path, "fast", runner_options={"delay": 0.01})
    slow = spec_file(tmp_path, "slow", runner_options={"delay": 0.2})
    old = make_run(tmp_path / "old", spec(runner_options={"delay": 0.01}))
    result = run_user_tests(
        pytester,
        f"""
@pytest.mark.tsbench(spec={str(slow)!r}, baseline={str(fast)!r}, max_slowdown=0.5)
def test_slower(tsbench_gate):
    tsbench_gate.check()

def test_folder_baseline_is_measured_again(tsbench_gate, tsbench_session):
    report = tsbench_gate.check(
        spec={str(fast)!r}, baseline={str(old)!r}, max_slowdown=0.5, args=["--data-dir", {str(FIXTURES)!r}]
    )
    # Four runs generated here: slow, fast, fast with args, and the folder's spec run again, the
    # speed baseline (its figure may equal the stored one: the double's time is mostly a sleep).
    again = [p for p in tsbench_session.measured if p.parent == tsbench_session.root]
    assert report.speed is not None and {str(old)!r} not in map(str, again) and len(again) >= 4
""",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*speed regression: generated tokens/s fell from * (baseline) to *"])


def _tokens_per_s(run: Path) -> float:
    return float(json.loads((run / "performance.json").read_text())["generated_tokens_per_s"])


def test_an_unknown_marker_argument_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = run_user_tests(
        pytester,
        """
@pytest.mark.tsbench(spec="x.yaml", baseline="b", alpah=0.1)
def test_typo(tsbench_gate):
    tsbench_gate.check()
""",
    )
    result.assert_outcomes(errors=1)
    assert "tsbench marker: unknown argument(s) ['alpah']; use ['alpha', " in result.stdout.str()


def test_the_gate_generates_even_where_a_generation_cache_holds_the_samples(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TSBENCH_GENERATION_CACHE", str(tmp_path / "generations.sqlite"))
    same = spec_file(tmp_path, "same")
    warm = make_run(tmp_path / "warm", spec())
    assert json.loads((warm / "performance.json").read_text()).get("cached_samples") == 0
    again = make_run(tmp_path / "again", spec())  # outside the gate a re-run reads the cache
    assert json.loads((again / "performance.json").read_text())["cached_samples"] > 0
    result = run_user_tests(
        pytester,
        f"""
import json

def test_fresh(tsbench_gate):
    folder = tsbench_gate.run({str(same)!r})
    assert json.loads((folder / "performance.json").read_text())["cached_samples"] == 0
""",
    )
    result.assert_outcomes(passed=1)
