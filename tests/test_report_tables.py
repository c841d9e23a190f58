"""`tsbench report RUN... --format`: the pandas report table against the run's own records.

Run folders are made by the real run loop and scoring with a scripted runner (tests/run_doubles.py:
no model can run in a unit test's time); every figure is checked against the files on disk.
"""

from __future__ import annotations

import io
import json
import statistics
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
from run_doubles import make_run

from tsbench.cli import main
from tsbench.records import read_jsonl
from tsbench.report import render
from tsbench.tables import COLUMNS, report_table


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "seed0": make_run(root / "seed0"),
        "seed1": make_run(root / "seed1", seed=1),
        "other": make_run(root / "other", budgets="1,2", seed=0),
    }


def test_every_row_is_the_runs_own_metrics_and_truncation(runs: dict[str, Path]) -> None:
    frame = report_table([runs["seed0"]])
    assert list(frame.columns) == list(COLUMNS)
    metrics = json.loads((runs["seed0"] / "metrics.json").read_text())
    assert len(frame) == len(metrics["rows"]) == 13  # greedy 1 + four arms x three levels
    samples = list(read_jsonl(runs["seed0"] / "samples.jsonl"))
    cut: dict[str, list[bool]] = defaultdict(list)
    for s in samples:
        cut[s["pool"]].append(s["stop_reason"] == "length")
    assert 0 < sum(cut["sampled"]) < len(cut["sampled"])  # the double does cut some samples
    for row, m in zip(frame.itertuples(), metrics["rows"], strict=True):
        assert (row.arm, row.level, row.problems) == (m["strategy"], m["k"], m["problems"])
        assert (row.accuracy, row.ci_low, row.ci_high) == (m["accuracy"], *m["ci95"])
        assert row.generated_tokens_per_problem == m["generated_tokens_per_problem"]
        assert row.tokens_per_problem == m["tokens_per_problem"]
        assert row.oracle == m["oracle"]
        pool = "greedy" if row.arm == "greedy" else "sampled"
        assert row.truncated == pytest.approx(sum(cut[pool]) / len(cut[pool]))
    assert set(frame["verifier"]) == {"", "self-certainty", "oracle"}
    assert frame.loc[frame["arm"] == "best-of-n/oracle", "strategy"].eq("best-of-n").all()


def test_runs_differing_only_in_seed_report_mean_and_spread(runs: dict[str, Path]) -> None:
    frame = report_table([runs["seed0"], runs["seed1"], runs["other"]])
    by_run = {run: group for run, group in frame.groupby("run_id")}
    assert by_run["seed0"]["seed_group"].iloc[0] == by_run["seed1"]["seed_group"].iloc[0]
    assert by_run["other"]["seed_group"].iloc[0] != by_run["seed0"]["seed_group"].iloc[0]
    for arm, level in (("majority", 4), ("pass@k", 2), ("greedy", 1)):
        rows = frame[(frame["arm"] == arm) & (frame["level"] == level) & (frame["run_id"] != "other")]
        values = rows["accuracy"].tolist()
        assert rows["seeds"].tolist() == [2, 2]
        assert rows["seed_mean_accuracy"].iloc[0] == pytest.approx(statistics.mean(values))
        assert rows["seed_sd_accuracy"].iloc[0] == pytest.approx(statistics.stdev(values))
    alone = by_run["other"]
    assert (alone["seeds"] == 1).all() and alone["seed_sd_accuracy"].isna().all()
    # The same folder named twice counts once.
    assert len(report_table([runs["seed0"], runs["seed0"]])) == 13


def test_every_format_renders_the_same_numbers(runs: dict[str, Path]) -> None:
    frame = report_table([runs["seed0"], runs["seed1"]])
    back = pd.read_csv(io.StringIO(render(frame, "csv")))
    assert back["accuracy"].tolist() == frame["accuracy"].tolist()
    assert back["arm"].tolist() == frame["arm"].tolist()
    records = json.loads(render(frame, "json"))
    assert [r["ci_high"] for r in records] == frame["ci_high"].tolist()
    md = render(frame, "md")
    row = frame[(frame["arm"] == "majority") & (frame["level"] == 4)].iloc[0]
    cell = f"{100 * row.accuracy:.1f} [{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}]"
    assert cell in md and "seeds: mean ± sd %" in md and "pass@k (oracle)" in md
    assert "task arith (levels=1,2,3)" in md.splitlines()[0]
    latex = render(frame, "latex")
    assert "\\begin{tabular}" in latex and "accuracy \\% [95\\% CI]" in latex
    assert "<th>accuracy % [95% CI]</th>" in render(frame, "html")


def test_html_latex_and_markdown_escape_what_they_show(runs: dict[str, Path]) -> None:
    frame = report_table([runs["seed0"]], rescore=False)
    frame.loc[0, "arm"] = "<script>alert(1)</script>|x&y_%"
    html = render(frame, "html")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "|x\\&y\\_\\%" in render(frame, "latex")  # & and % would break or end the LaTeX row
    assert "\\|x&y" in render(frame, "md")  # a pipe in a cell would split the markdown row


def test_cli_report_formats_plots_and_the_terminal_table(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(runs["seed0"])]) == 0
    out = capsys.readouterr().out
    assert out.startswith("budgets in samples") and "best-of-n/oracle (oracle)" in out
    assert main(["report", str(runs["seed0"]), str(runs["seed1"]), "--format", "csv"]) == 0
    assert len(pd.read_csv(io.StringIO(capsys.readouterr().out))) == 26
    assert main(["report", str(runs["seed0"]), "--plots", str(tmp_path / "plots")]) == 0
    assert "plots:" in capsys.readouterr().out
    assert sorted(p.suffix for p in (tmp_path / "plots").iterdir()).count(".svg") >= 5


def test_bad_input_is_one_line_and_exit_2(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    for argv, says in (
        (["report", str(tmp_path / "nowhere")], "is not a tsbench run folder"),
        (
            ["report", str(runs["seed0"]), str(tmp_path / "empty"), "--format", "md"],
            "empty is not a tsbench run",
        ),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1


def test_cli_prints_the_compute_optimal_policy(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from tsbench.compute_optimal import for_run
    from tsbench.tables import load_run

    assert main(["report", str(runs["seed0"]), "--format", "md", "--compute-optimal"]) == 0
    out = capsys.readouterr().out
    result = for_run(load_run(runs["seed0"], rescore=False))
    assert f"scored on the other {len(result.evaluation)}" in out
    for row in result.levels.to_dict("records"):
        assert f"{100 * row['policy_accuracy']:.1f} [{100 * row['policy_ci_low']:.1f}" in out
        assert row["policy"] in out
