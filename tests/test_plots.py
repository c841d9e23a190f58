"""Plots read back: the points drawn (returned data and matplotlib's own artists) equal the metrics;
the coverage power law recovers known parameters; the compute-optimal choice is made on one half
and scored on the other. Run folders come from the real run loop with a scripted runner
(tests/run_doubles.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from math import comb
from pathlib import Path

import numpy as np
import pytest
from run_doubles import make_run

from tsbench.compute_optimal import compute_optimal, for_run, split_halves
from tsbench.coverage import coverage_curve, fit_power_law, unbiased_pass_at_k
from tsbench.plots import (
    accuracy_by_difficulty,
    accuracy_vs_compute,
    frontier,
    throughput_latency,
    write_plots,
)
from tsbench.tables import load_run, report_table


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("plots") / "run", limit=18, budgets="1,2,4")


@pytest.mark.parametrize("x,column", [("samples", "samples_per_problem"), ("tokens", "tokens_per_problem")])
def test_accuracy_vs_compute_draws_the_tables_points(run: Path, x: str, column: str) -> None:
    table = report_table([run])
    plot = accuracy_vs_compute(table, x)
    merged = plot.data.merge(table, on=["arm", "level"], suffixes=("", "_table"))
    assert len(merged) == len(table) == len(plot.data)
    assert np.allclose(merged["x"], merged[column]) and np.allclose(
        merged["accuracy"], merged["accuracy_table"]
    )
    assert np.allclose(merged["ci_low"], merged["ci_low_table"])
    ax = plot.figure.axes[0]
    assert ax.get_xscale() == "log"
    drawn = {line.get_label(): line.get_xydata() for line in ax.lines if not line.get_label().startswith("_")}
    for arm, group in table.groupby("arm"):
        label = arm + (" (oracle)" if group["oracle"].iloc[0] else "")
        group = group.sort_values(column)
        assert np.allclose(drawn[label][:, 0], group[column])
        assert np.allclose(drawn[label][:, 1], 100 * group["accuracy"])


def test_power_law_fit_recovers_known_parameters() -> None:
    ks = np.arange(1, 65)
    exact = np.exp(-1.3 * ks**-0.45)
    fit = fit_power_law(ks, exact)
    assert fit is not None
    assert fit.a == pytest.approx(-1.3, abs=1e-9) and fit.b == pytest.approx(-0.45, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0)
    # Noisy coverage, as measured on a few hundred problems: still close to the truth.
    rng = np.random.default_rng(7)
    noisy = np.clip(exact * (1 + rng.normal(0, 0.01, len(ks))), 1e-6, 1 - 1e-6)
    rough = fit_power_law(ks, noisy)
    assert rough is not None
    assert rough.a == pytest.approx(-1.3, rel=0.1) and rough.b == pytest.approx(-0.45, rel=0.15)
    assert fit_power_law([1, 2], [0.0, 1.0]) is None  # nothing strictly between 0 and 1 to fit


def test_coverage_is_the_unbiased_pass_at_k_and_matches_the_pass_at_k_rows(run: Path) -> None:
    grades = [{"problem_id": "a", "pool": "sampled", "correct": c} for c in (True, False, False, True)] + [
        {"problem_id": "b", "pool": "sampled", "correct": c} for c in (False, False, False, True)
    ]
    curve = coverage_curve(grades)
    # By hand: pass@k = 1 - C(n - c, k) / C(n, k); problem a has c = 2 of 4, b has c = 1 of 4.
    expected = [(1 - comb(2, k) / comb(4, k) + 1 - comb(3, k) / comb(4, k)) / 2 for k in (1, 2, 3, 4)]
    assert np.allclose(curve["coverage"], expected)
    assert unbiased_pass_at_k(4, 1, 2) == pytest.approx(0.5)
    table = report_table([run], rescore=False)
    measured = coverage_curve(load_run(run, rescore=False).grades()).set_index("k")["coverage"]
    rows = table[table["arm"] == "pass@k"].set_index("level")["accuracy"]
    for k, accuracy in rows.items():  # pass@k over every k-subset of a pool of 4 is the same figure
        assert measured[k] == pytest.approx(accuracy, abs=1e-6)


def test_split_is_seeded_disjoint_and_stratified() -> None:
    ids = [f"p{i:02d}" for i in range(20)]
    levels = {p: f"level {1 + i % 2}" for i, p in enumerate(ids)}
    sel, ev = split_halves(ids, 3, levels)
    assert split_halves(ids, 3, levels) == (sel, ev)
    assert split_halves(ids, 4, levels) != (sel, ev)
    assert not set(sel) & set(ev) and set(sel) | set(ev) == set(ids)
    assert sorted(levels[p] for p in sel) == sorted(levels[p] for p in ev)


def test_compute_optimal_chooses_on_one_half_and_scores_on_the_other() -> None:
    ids = [f"p{i:02d}" for i in range(16)]
    bins = {p: "level 1" if i < 8 else "level 2" for i, p in enumerate(ids)}
    sel, ev = split_halves(ids, 0, bins)
    spend = {"prompt_tokens": 10, "generated_tokens": 10, "verifier_tokens": 0}
    scores = []
    for p in ids:
        # On the selection half "x" is always right and "y" always wrong; on the evaluation half the
        # reverse. An honest policy picks x and scores 0; one that peeked would pick y and score 1.
        x_right = p in sel
        scores += [
            {"problem_id": p, "arm": "x", "level": 4, "accuracy": float(x_right), "spend": spend},
            {"problem_id": p, "arm": "y", "level": 4, "accuracy": float(not x_right), "spend": spend},
            {"problem_id": p, "arm": "oracle-arm", "level": 4, "accuracy": 1.0, "spend": spend},
        ]
    result = compute_optimal(scores, bins, sel, ev, {"oracle-arm"})
    [row] = result.levels.to_dict("records")
    assert set(result.choices["arm"]) == {"x"} and row["baseline_arm"] == "x"
    assert row["policy_accuracy"] == 0.0 and row["evaluation_problems"] == len(ev) == 8
    assert result.arms.set_index("arm").loc["y", "evaluation_accuracy"] == 1.0  # it was there to peek at
    with pytest.raises(ValueError, match="overlap"):
        compute_optimal(scores, bins, sel, [*ev, sel[0]])


def test_compute_optimal_per_bin_beats_one_arm_when_bins_differ() -> None:
    ids = [f"p{i:02d}" for i in range(20)]
    bins = {p: "level 1" if i < 10 else "level 2" for i, p in enumerate(ids)}
    sel, ev = split_halves(ids, 1, bins)
    spend = {"generated_tokens": 5}
    scores = []
    for p in ids:  # "easy" wins level 1, "hard" wins level 2, on both halves alike
        easy = bins[p] == "level 1"
        scores += [
            {"problem_id": p, "arm": "easy", "level": 1, "accuracy": float(easy), "spend": spend},
            {"problem_id": p, "arm": "hard", "level": 1, "accuracy": float(not easy), "spend": spend},
        ]
    result = compute_optimal(scores, bins, sel, ev)
    [row] = result.levels.to_dict("records")
    assert row["policy_accuracy"] == 1.0 and row["baseline_accuracy"] == 0.5
    assert row["policy"] == "level 1: easy; level 2: hard"
    plot = frontier(result, "t", "stem")
    drawn = plot.data.set_index("series")
    assert drawn.loc["compute-optimal", "accuracy"] == 1.0 and drawn.loc["best single arm", "accuracy"] == 0.5


def test_record_plots_of_a_run_equal_its_scores(run: Path) -> None:
    data = load_run(run, rescore=False)
    result = for_run(data)
    assert result.difficulty == "level" and not set(result.selection) & set(result.evaluation)
    assert result.levels["level"].tolist() == [1, 2, 4]
    plot = accuracy_by_difficulty(data.scores, result.bins, set(), "t", "stem")
    for row in plot.data.itertuples():
        mine = [
            s["accuracy"]
            for s in data.scores
            if s["arm"] == row.arm and s["level"] == row.level and result.bins[s["problem_id"]] == row.bin
        ]
        assert row.accuracy == pytest.approx(sum(mine) / len(mine)) and row.problems == len(mine)
    table = report_table([run], rescore=False)
    speed = throughput_latency(table)
    assert speed.data["tokens_per_s"].tolist() == table["tokens_per_s"].tolist()


def test_write_plots_writes_png_and_repeatable_svg(run: Path, tmp_path: Path) -> None:
    table = report_table([run], rescore=False)
    first = write_plots(table, tmp_path / "a")
    second = write_plots(table, tmp_path / "b", formats=("svg",))
    stems = {p.stem.rsplit("-", 2)[0] for p in first}
    assert {"accuracy-vs-samples", "accuracy-vs-tokens", "throughput-latency", "compute-optimal"} <= stems
    assert {"accuracy-by-difficulty", "coverage"} <= stems
    for path in first:
        data = path.read_bytes()
        if path.suffix == ".png":
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
        else:
            ET.fromstring(data)  # well-formed SVG
    svg_a = {p.name: p.read_bytes() for p in first if p.suffix == ".svg"}
    svg_b = {p.name: p.read_bytes() for p in second}
    assert svg_a == svg_b  # no dates, fixed ids: a rebuilt site does not churn
