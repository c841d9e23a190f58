"""`tsbench compare`: McNemar's exact test against tables computed by hand, and the command on real
run folders (made by the real run loop with a scripted runner, tests/run_doubles.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_doubles import make_run

from tsbench.cli import main
from tsbench.compare import parse_row
from tsbench.errors import UserError
from tsbench.paired import compare_scores
from tsbench.records import read_jsonl


def _outcomes(both: int, b_only: int, a_only: int, neither: int) -> tuple[dict[str, float], dict[str, float]]:
    """Per-problem 0/1 outcomes with the given 2x2 McNemar table."""
    cells = [(1.0, 1.0)] * both + [(0.0, 1.0)] * b_only + [(1.0, 0.0)] * a_only + [(0.0, 0.0)] * neither
    a = {f"p{i:02d}": x for i, (x, _) in enumerate(cells)}
    b = {f"p{i:02d}": y for i, (_, y) in enumerate(cells)}
    return a, b


@pytest.mark.parametrize(
    "table,p_by_hand",
    [
        # 7 discordant, 6 favour B: p = 2 * P(X <= 1 | Bin(7, 1/2)) = 2 * (1 + 7) / 2**7
        ((10, 6, 1, 3), 2 * (1 + 7) / 128),
        # 10 discordant, 8 favour B: p = 2 * (C(10,0) + C(10,1) + C(10,2)) / 2**10
        ((5, 8, 2, 5), 2 * (1 + 10 + 45) / 1024),
        # 4 discordant, all favour A: p = 2 * (1/2)**4
        ((12, 0, 4, 4), 2 / 16),
        # a tie in discordant pairs is p = 1 (the two-sided tail covers everything)
        ((3, 2, 2, 3), 1.0),
    ],
)
def test_mcnemar_exact_matches_tables_computed_by_hand(
    table: tuple[int, int, int, int], p_by_hand: float
) -> None:
    both, b_only, a_only, neither = table
    a, b = _outcomes(*table)
    result = compare_scores(a, b)
    n = sum(table)
    assert result.test == "mcnemar-exact"
    assert (result.b_only, result.a_only, result.problems) == (b_only, a_only, n)
    assert result.p_value == pytest.approx(p_by_hand, abs=1e-12)
    assert result.difference == pytest.approx((b_only - a_only) / n)
    low, high = result.ci95
    assert low <= result.difference <= high


def test_fractional_scores_take_the_paired_permutation_test() -> None:
    a = {f"p{i}": 0.25 for i in range(10)}
    b = {f"p{i}": 0.75 for i in range(10)}
    result = compare_scores(a, b)  # 2**10 sign flips <= 2000 resamples: scipy enumerates them all
    # Every sign flip but the observed and its mirror gives a smaller |mean|: p = 2 / 2**10 exactly.
    assert result.test == "paired-permutation" and result.p_value == pytest.approx(2 / 1024)
    assert result.ci95 == (pytest.approx(0.5), pytest.approx(0.5))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    return {
        "seed0": make_run(root / "seed0"),
        "again": make_run(root / "again", temperature=0.6),  # same problems, other samples
        "seed1": make_run(root / "seed1", seed=1),  # same ids, other problems
        "fewer": make_run(root / "fewer", limit=8),
    }


def _scores(run: Path, arm: str, level: int) -> dict[str, float]:
    return {
        s["problem_id"]: s["accuracy"]
        for s in read_jsonl(run / "scores.jsonl")
        if s["arm"] == arm and s["level"] == level
    }


def test_compare_reads_the_rows_of_scores_jsonl(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", str(runs["seed0"]), "--a", "greedy@1", "--b", "pass@k@4", "--json"]
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    a, b = _scores(runs["seed0"], "greedy", 1), _scores(runs["seed0"], "pass@k", 4)
    assert set(b.values()) <= {0.0, 1.0}  # pass@4 from a pool of 4 is 0 or 1 per problem
    assert got["test"] == "mcnemar-exact"
    assert got["b_only"] == sum(b[p] == 1 and a[p] == 0 for p in a)
    assert got["a_only"] == sum(a[p] == 1 and b[p] == 0 for p in a)
    assert got["accuracy_b"] == pytest.approx(sum(b.values()) / len(b))
    assert (
        main(["compare", str(runs["seed0"]), "--a", "majority@4", "--b", "best-of-n/self-certainty@4"]) == 0
    )
    out = capsys.readouterr().out
    assert "paired permutation test" in out and "B - A:" in out and "problems" in out
    assert (
        main(["compare", str(runs["seed0"]), str(runs["again"]), "--a", "majority@2", "--b", "majority@2"])
        == 0
    )
    assert "A from seed0, B from again" in capsys.readouterr().out


def test_row_names() -> None:
    assert parse_row("beam-search/llm-judge@16", "--a") == ("beam-search/llm-judge", 16.0)
    assert parse_row("pass@k@4 (oracle)", "--a") == ("pass@k", 4.0)
    assert parse_row("majority@1e3", "--a") == ("majority", 1000.0)
    with pytest.raises(UserError, match="write ARM@LEVEL"):
        parse_row("majority", "--b")


@pytest.mark.parametrize(
    "argv,says",
    [
        (["{seed0}", "--a", "majority@3", "--b", "greedy@1"], "--a: no row 'majority@3'"),
        (["{seed0}", "--a", "majority@4", "--b", "beam-search/oracle@4"], "--b: no row"),
        (["{seed0}", "--a", "majority", "--b", "greedy@1"], "not a row name"),
        (
            ["{seed0}", "{seed1}", "--a", "greedy@1", "--b", "greedy@1"],
            "different problems under the same id",
        ),
        (
            ["{seed0}", "{fewer}", "--a", "greedy@1", "--b", "greedy@1"],
            "needs the same problems in both arms",
        ),
        (["{missing}", "--a", "greedy@1", "--b", "greedy@1"], "is not a tsbench run folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    paths = {**{k: str(v) for k, v in runs.items()}, "missing": str(tmp_path / "missing")}
    assert main(["compare", *(a.format(**paths) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
