"""Plots of a report table, PNG and SVG, each returning the data it drew so tests can read it back.

Figures are built on `matplotlib.figure.Figure` (no pyplot, no global state, no display needed).
Every plot function returns a `Plot`: its figure and a DataFrame of exactly the points drawn.

The coverage plot shows the power law fitted by `tsbench.coverage` (Brown et al. 2024).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tsbench.coverage import coverage_curve, fit_power_law
from tsbench.stats import wilson_interval

X_COLUMNS = {
    "samples": ("samples_per_problem", "policy samples per problem"),
    "tokens": ("tokens_per_problem", "tokens per problem (prompt + generated + verifier)"),
    "flops": ("flops_per_problem", "FLOPs per problem"),
}
SETTING = ["task", "task_options", "model", "runner", "engine"]


@dataclass
class Plot:
    """A drawn figure and the points behind it.

    Attributes:
        name: file stem, e.g. "accuracy-vs-samples-arith-3f2a1c".
        figure: the matplotlib figure.
        data: one row per plotted point (columns depend on the plot; each documents its own).
        fit: fitted parameters where the plot shows a fit.
    """

    name: str
    figure: Figure
    data: pd.DataFrame
    fit: dict[str, float] = field(default_factory=dict)


def _slug(*parts: Any) -> str:
    text = "-".join(str(p) for p in parts if str(p))
    short = re.sub(r"[^A-Za-z0-9]+", "-", str(parts[0]))[:24].strip("-") if parts else "plot"
    return f"{short}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def _label(row: Any, many_seeds: bool, many_models: bool = False) -> str:
    return (
        str(row["arm"])
        + (f" [{row['model']} on {row['runner']}]" if many_models else "")
        + (" (oracle)" if row["oracle"] else "")
        + (f" seed {row['seed']}" if many_seeds else "")
    )


MARKERS = "os^Dv<>ph*XP"


def accuracy_vs_compute(table: pd.DataFrame, x: str = "samples") -> Plot:
    """Accuracy against mean compute per problem (log x), one line per arm, 95% interval bands.

    Returns data with columns series, arm, oracle, seed, level, x, accuracy, ci_low, ci_high.
    """
    column, axis_label = X_COLUMNS[x]
    many_seeds = table["seed"].nunique() > 1
    many_models = table[["model", "runner"]].drop_duplicates().shape[0] > 1
    figure = Figure(figsize=(9.5, 5.4) if many_models else (7.5, 4.8))
    ax = figure.add_subplot()
    # Colours and markers both cycle, so that a dozen arms stay told apart.
    colours = [matplotlib.colormaps["tab20"](i) for i in range(20)]
    rows = []
    for i, (_, group) in enumerate(table.groupby(["model", "runner", "arm", "seed"], sort=False)):
        group = group.sort_values(column)
        label = _label(group.iloc[0], many_seeds, many_models)
        xs, ys = group[column].to_numpy(float), 100 * group["accuracy"].to_numpy(float)
        (line,) = ax.plot(
            xs,
            ys,
            marker=MARKERS[i % len(MARKERS)],
            color=colours[i % len(colours)],
            label=label,
            linestyle="--" if group["oracle"].iloc[0] else "-",
        )
        if len(group) > 1:
            ax.fill_between(
                xs, 100 * group["ci_low"], 100 * group["ci_high"], alpha=0.08, color=line.get_color()
            )
        else:  # one point has no band to draw: an error bar instead
            ax.errorbar(
                xs,
                ys,
                # Float rounding can leave a Wilson bound a hair past the mean at 0% or 100%.
                yerr=[
                    (ys - 100 * group["ci_low"]).clip(lower=0),
                    (100 * group["ci_high"] - ys).clip(lower=0),
                ],
                color=line.get_color(),
                capsize=3,
            )
        for _, r in group.iterrows():
            rows.append(
                {"series": label, "arm": r["arm"], "oracle": r["oracle"], "seed": r["seed"], "level": r["level"],
                 "x": float(r[column]), "accuracy": float(r["accuracy"]), "ci_low": float(r["ci_low"]),
                 "ci_high": float(r["ci_high"])}
            )  # fmt: skip
    if (table[column] > 0).all():
        _log_x(ax)
    ax.set_xlabel(axis_label + " (log)")
    ax.set_ylabel("accuracy % (95% CI band)")
    ax.set_title(_title(table, f"accuracy vs {x}"))
    if many_models:  # long labels: the legend beside the axes, not over the points
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    stem = f"accuracy-vs-{x}-{_slug(*table[SETTING].iloc[0])}"
    return Plot(stem + ("-all-models" if many_models else ""), figure, pd.DataFrame(rows))


def _log_x(ax: Any, ticks: Sequence[float] = ()) -> None:
    """Log x with plain tick labels (4, 16, 2.4k, 1.2T) rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from tsbench.report import _si

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}" if v < 1000 else _si(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if len(ticks):  # budget levels: label each one, not only the decades
        ax.set_xticks(sorted(set(ticks)))


def _title(table: pd.DataFrame, what: str) -> str:
    first = table.iloc[0]
    task = first["task"] + (f" ({first['task_options']})" if first["task_options"] else "")
    if table[["model", "runner"]].drop_duplicates().shape[0] > 1:
        return f"{what}: {task}, every model and runner"
    return f"{what}: {task}, {first['model']} on {first['runner']}"


def frontier(result: Any, title: str, stem: str) -> Plot:
    """The compute-optimal policy against the best single arm, both scored on the evaluation half,
    with each non-oracle arm's evaluation-half accuracy behind them.

    Returns data with columns series, level, accuracy, ci_low, ci_high (NaN for single arms).
    """
    figure = Figure(figsize=(7.5, 4.8))
    ax = figure.add_subplot()
    rows = []
    for i, (arm, group) in enumerate(result.arms.groupby("arm", sort=True)):
        label = "each non-oracle arm alone" if i == 0 else None
        ax.plot(
            group["level"],
            100 * group["evaluation_accuracy"],
            color="0.75",
            linewidth=1,
            marker=".",
            label=label,
        )
        rows += [
            {"series": arm, "level": lv, "accuracy": acc, "ci_low": np.nan, "ci_high": np.nan}
            for lv, acc in zip(group["level"], group["evaluation_accuracy"], strict=True)
        ]
    levels = result.levels
    for series, prefix, style in (("compute-optimal", "policy", "-"), ("best single arm", "baseline", "--")):
        ax.plot(
            levels["level"], 100 * levels[f"{prefix}_accuracy"], linestyle=style, marker="o", label=series
        )
        ax.fill_between(
            levels["level"], 100 * levels[f"{prefix}_ci_low"], 100 * levels[f"{prefix}_ci_high"], alpha=0.15
        )
        rows += [
            {"series": series, "level": lv, "accuracy": acc, "ci_low": lo, "ci_high": hi}
            for lv, acc, lo, hi in zip(
                levels["level"], levels[f"{prefix}_accuracy"], levels[f"{prefix}_ci_low"],
                levels[f"{prefix}_ci_high"], strict=True,
            )
        ]  # fmt: skip
    if len(levels) > 1:
        _log_x(ax, levels["level"].tolist())
    n_sel, n_eval = len(result.selection), len(result.evaluation)
    ax.set_xlabel("budget level (log)")
    ax.set_ylabel(f"accuracy % on the evaluation half ({n_eval} problems)")
    ax.set_title(
        f"{title}\nchosen per {result.difficulty} bin on {n_sel} problems, scored on the other {n_eval}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return Plot(stem, figure, pd.DataFrame(rows))


def accuracy_by_difficulty(
    scores: Sequence[dict[str, Any]], bins: dict[str, str], oracle_arms: set[str], title: str, stem: str
) -> Plot:
    """Accuracy per difficulty bin, one line per arm at its largest budget level, 95% Wilson bars.

    Returns data with columns arm, level, bin, problems, accuracy, ci_low, ci_high.
    """
    top: dict[str, int] = {}
    for s in scores:
        top[s["arm"]] = max(top.get(s["arm"], 0), int(s["level"]))
    by: dict[tuple[str, str], list[float]] = {}
    for s in scores:
        if int(s["level"]) == top[s["arm"]]:
            by.setdefault((s["arm"], bins[s["problem_id"]]), []).append(float(s["accuracy"]))
    names = sorted(set(bins.values()))
    figure = Figure(figsize=(7.5, 4.8))
    ax = figure.add_subplot()
    rows = []
    for arm in top:
        found = [(i, name, by[(arm, name)]) for i, name in enumerate(names) if (arm, name) in by]
        means = [float(np.mean(v)) for _, _, v in found]
        intervals = [wilson_interval(m, len(v)) for m, (_, _, v) in zip(means, found, strict=True)]
        label = f"{arm}@{top[arm]}" + (" (oracle)" if arm in oracle_arms else "")
        ax.errorbar(
            [i for i, _, _ in found], [100 * m for m in means],
            yerr=[[max(0.0, 100 * (m - lo)) for m, (lo, _) in zip(means, intervals, strict=True)],
                  [max(0.0, 100 * (hi - m)) for m, (_, hi) in zip(means, intervals, strict=True)]],
            marker="o", capsize=3, label=label, linestyle="--" if arm in oracle_arms else "-",
        )  # fmt: skip
        rows += [
            {
                "arm": arm,
                "level": top[arm],
                "bin": name,
                "problems": len(v),
                "accuracy": m,
                "ci_low": lo,
                "ci_high": hi,
            }
            for (_, name, v), m, (lo, hi) in zip(found, means, intervals, strict=True)
        ]
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("accuracy % (95% CI)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return Plot(stem, figure, pd.DataFrame(rows))


def coverage_plot(curve: pd.DataFrame, title: str, stem: str) -> Plot:
    """Coverage (pass@k, oracle) against k on log x, with the fitted power law and its parameters.

    Returns data with columns series ("measured" or "fit"), k, coverage; `fit` holds a, b, r2.
    """
    fit = fit_power_law(curve["k"], curve["coverage"])
    figure = Figure(figsize=(7.5, 4.8))
    ax = figure.add_subplot()
    ax.plot(curve["k"], 100 * curve["coverage"], marker="o", linestyle="", label="pass@k (oracle), unbiased")
    rows = [
        {"series": "measured", "k": float(k), "coverage": float(c)}
        for k, c in zip(curve["k"], curve["coverage"], strict=True)
    ]
    params: dict[str, float] = {}
    if fit is not None:
        ks = np.geomspace(1, max(float(curve["k"].max()), 1.0) * 4, 50)
        ax.plot(ks, 100 * fit(ks), label=f"fit exp(a·k^b): a={fit.a:.3f}, b={fit.b:.3f}, R²={fit.r2:.3f}")
        rows += [
            {"series": "fit", "k": float(k), "coverage": float(c)} for k, c in zip(ks, fit(ks), strict=True)
        ]
        params = {"a": fit.a, "b": fit.b, "r2": fit.r2, "points": float(fit.points)}
    _log_x(ax)
    ax.set_xlabel("k samples (log)")
    ax.set_ylabel("coverage % (oracle)")
    ax.set_title(
        title if fit else title + "\n(too few k with coverage strictly between 0 and 1 to fit)", fontsize=9
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return Plot(stem, figure, pd.DataFrame(rows), params)


def throughput_latency(table: pd.DataFrame) -> Plot:
    """Generated tokens/s and latency p50 (solid) / p95 (dotted) against the budget level, per arm.

    Returns data with columns arm, seed, level, tokens_per_s, latency_p50_s, latency_p95_s.
    """
    figure = Figure(figsize=(11, 4.4))
    speed, latency = figure.subplots(1, 2)
    timed = table.dropna(subset=["tokens_per_s"])
    many_seeds = table["seed"].nunique() > 1
    for _, group in timed.groupby(["arm", "seed"], sort=False):
        group = group.sort_values("level")
        label = _label(group.iloc[0], many_seeds)
        (line,) = speed.plot(group["level"], group["tokens_per_s"], marker="o", label=label)
        latency.plot(group["level"], group["latency_p50_s"], marker="o", color=line.get_color(), label=label)
        latency.plot(group["level"], group["latency_p95_s"], linestyle=":", color=line.get_color())
    for ax, what in (
        (speed, "generated tokens/s"),
        (latency, "latency per problem, s (p50 solid, p95 dotted)"),
    ):
        if len(timed) and (timed["level"] > 0).all() and timed["level"].nunique() > 1:
            _log_x(ax, timed["level"].tolist())
        ax.set_xlabel(f"budget level ({table['budget_unit'].iloc[0]})")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    speed.legend(fontsize=7)
    figure.suptitle(_title(table, "throughput and latency"), fontsize=10)
    data = timed[["arm", "seed", "level", "tokens_per_s", "latency_p50_s", "latency_p95_s"]].reset_index(
        drop=True
    )
    return Plot(f"throughput-latency-{_slug(*table[SETTING].iloc[0])}", figure, data)


def run_plots(run_dir: Path) -> list[Plot]:
    """The plots that need a run's per-problem records: the compute-optimal frontier, accuracy by
    difficulty and coverage. None when the folder is gone or was never scored."""
    from tsbench.compute_optimal import for_run
    from tsbench.errors import UserError
    from tsbench.tables import load_run

    try:
        run = load_run(run_dir, rescore=False)
    except (UserError, OSError):
        return []
    label = f"{run.spec.get('task')}, {run.identity.get('model_id')}, run {run_dir.name}"
    slug = _slug(run.spec.get("task", "run"), run_dir.name)
    plots = []
    result = for_run(run)
    if not result.levels.empty:
        plots.append(frontier(result, f"compute-optimal: {label}", f"compute-optimal-{slug}"))
    oracles = {
        a["strategy"] if not a["verifier"] else f"{a['strategy']}/{a['verifier']}"
        for a in run.arms
        if a["oracle"]
    }
    plots.append(
        accuracy_by_difficulty(
            run.scores,
            result.bins,
            oracles,
            f"accuracy by difficulty ({result.difficulty}): {label}",
            f"accuracy-by-difficulty-{slug}",
        )
    )
    curve = coverage_curve(run.grades())
    if len(curve):
        plots.append(coverage_plot(curve, f"coverage: {label}", f"coverage-{slug}"))
    return plots


def all_plots(table: pd.DataFrame) -> list[Plot]:
    """Every plot of a report table: per setting (task x model x runner), accuracy vs samples,
    tokens and FLOPs (where counted) and throughput/latency; per run, the record-based plots."""
    plots: list[Plot] = []
    for _, group in table.groupby(SETTING, sort=False):
        for x in ("samples", "tokens", "flops"):
            if (group[X_COLUMNS[x][0]] > 0).all():
                plots.append(accuracy_vs_compute(group, x))
        if group["tokens_per_s"].notna().any():
            plots.append(throughput_latency(group))
    # Several models or runners on one task (a STaR round's model beside the base model's
    # strategies): one more plot with every row on the tokens axis.
    for _, group in table.groupby(["task", "task_options"], sort=False):
        if (
            group[["model", "runner"]].drop_duplicates().shape[0] > 1
            and (group["tokens_per_problem"] > 0).all()
        ):
            plots.append(accuracy_vs_compute(group, "tokens"))
    for run_dir in dict.fromkeys(table["run_dir"]):
        plots += run_plots(Path(run_dir))
    return plots


def write_plots(table: pd.DataFrame, out_dir: Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Draw every plot of a report table and write each in every format.

    Args:
        table: the report table from `tsbench.tables.report_table` (its columns are documented there).
        out_dir: created if missing.
        formats: any of "png", "svg" (and other formats matplotlib writes).

    Returns:
        The files written, in order. SVGs carry no date and a fixed id salt, so they repeat to the byte.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with matplotlib.rc_context({"svg.hashsalt": "tsbench", "svg.fonttype": "path"}):
        for plot in all_plots(table):
            plot.figure.tight_layout()
            for fmt in formats:
                path = out_dir / f"{plot.name}.{fmt}"
                metadata = {"Date": None} if fmt == "svg" else {"Software": None} if fmt == "png" else None
                plot.figure.savefig(path, format=fmt, dpi=110, metadata=metadata, bbox_inches="tight")
                written.append(path)
    return written
