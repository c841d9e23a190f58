"""`tsbench leaderboard build [results/] -o site/`: a static site from finished run folders.

site/index.html           one sortable, filterable table per task, ranked by RULE
site/leaderboard.csv      every row of every table
site/tasks/<task>.html    a task's plots, table and runs (plots in site/tasks/<task>/)
site/runs/<run>/          a run's spec, provenance, metrics and sample browser (index.html is page 1)
site/static/              the vendored table library and the site's own script and style

The site is built in a temporary folder beside the output and moved into place at the end, so an
interrupted build never leaves half a site; an existing output folder is replaced only if an
earlier build made it.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from tsbench.errors import UserError
from tsbench.leaderboard.ranking import RULE, Entry, rank
from tsbench.leaderboard.runs import Run, find_runs, load_run
from tsbench.leaderboard.safe import script_json, unique_slugs
from tsbench.leaderboard.samples import SAMPLES_PER_PAGE, page_file, pager, paginate, problem_views

PACKAGE = Path(__file__).parent
MARKER = ".tsbench-site"
TABULATOR_VERSION = "6.5.3"

INDEX_COLUMNS = [
    {
        "title": "rank",
        "field": "rank",
        "kind": "number",
        "tip": "1 + rows significantly better (see the rule)",
    },
    {"title": "tied", "field": "tied", "kind": "text", "tip": "statistically tied with the leader?"},
    {"title": "strategy", "field": "strategy", "kind": "text"},
    {"title": "verifier", "field": "verifier", "kind": "text"},
    {"title": "budget", "field": "level", "kind": "number"},
    {"title": "unit", "field": "budget_unit", "kind": "text"},
    {"title": "accuracy %", "field": "accuracy", "kind": "percent"},
    {"title": "CI low", "field": "ci_low", "kind": "percent", "tip": "95% Wilson interval"},
    {"title": "CI high", "field": "ci_high", "kind": "percent", "tip": "95% Wilson interval"},
    {"title": "problems", "field": "problems", "kind": "number"},
    {"title": "model", "field": "model", "kind": "text"},
    {"title": "engine", "field": "engine", "kind": "text"},
    {"title": "task options", "field": "task_options", "kind": "text"},
    {"title": "oracle", "field": "oracle", "kind": "text", "tip": "reads the reference: not ranked"},
    {"title": "cut %", "field": "truncated", "kind": "percent", "tip": "samples cut by the token cap"},
    {"title": "tokens/prob", "field": "tokens_per_problem", "kind": "number"},
    {"title": "FLOPs/prob", "field": "flops_per_problem", "kind": "number"},
    {"title": "tok/s", "field": "tokens_per_s", "kind": "number"},
    {"title": "p50 s", "field": "latency_p50_s", "kind": "number"},
    {"title": "seeds", "field": "seeds", "kind": "number"},
    {"title": "vs leader", "field": "versus_leader", "kind": "text"},
    {"title": "run", "field": "run", "kind": "link", "href": "href"},
]
PROBLEM_COLUMNS = [
    {"title": "problem", "field": "problem", "kind": "link", "href": "href"},
    {"title": "level", "field": "level", "kind": "text"},
    {"title": "question", "field": "question", "kind": "text"},
    {"title": "reference", "field": "reference", "kind": "text"},
    {"title": "greedy", "field": "greedy", "kind": "text"},
    {"title": "correct samples", "field": "correct", "kind": "text"},
    {"title": "cut by cap", "field": "truncated", "kind": "number"},
]


@dataclass
class TaskView:
    name: str
    slug: str
    runs: list[Run]
    rows: list[dict[str, Any]]
    units: str

    def payload(self, root: str) -> dict[str, Any]:
        # Ranked rows first, best first; the order is the data's, so no header shows a sort arrow.
        ordered = sorted(
            self.rows, key=lambda r: (r["rank"] is None, r["rank"] or 0, -r["accuracy"], r["_row"])
        )
        return {"columns": INDEX_COLUMNS, "rows": [dict(r, href=root + r["href"]) for r in ordered]}


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, numpy scalars plain Python."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PACKAGE / "templates"),
        autoescape=True,  # every template is HTML; model output is hostile input
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["script_json"] = script_json
    env.filters["tojson_text"] = lambda value: json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False)
    return env


def _table(paths: list[Path], rescore: bool) -> pd.DataFrame:
    from tsbench.tables import report_table

    return report_table(paths, rescore=rescore)


def _empty_table() -> pd.DataFrame:
    from tsbench.tables import COLUMNS

    return pd.DataFrame(columns=list(COLUMNS))


def _task_rows(frame: pd.DataFrame, runs: dict[str, Run]) -> list[dict[str, Any]]:
    """A task's rows with ranks; per-problem scores are read only for the pairs a rank needs."""
    per_problem: dict[str, dict[tuple[str, int], dict[str, float]]] = {}

    def loader(run_dir: str, arm: str, level: int) -> Any:
        def load() -> dict[str, float]:
            if run_dir not in per_problem:
                per_problem[run_dir] = runs[run_dir].per_problem()
            return per_problem[run_dir].get((arm, level), {})

        return load

    records = [{k: _clean(v) for k, v in r.items()} for r in frame.to_dict("records")]
    entries = [
        Entry(
            accuracy=float(r["accuracy"]),
            ci95=(float(r["ci_low"]), float(r["ci_high"])),
            oracle=bool(r["oracle"]),
            data=str(runs[r["run_dir"]].identity.get("data_sha256") or ""),
            scores=loader(r["run_dir"], r["arm"], int(r["level"])),
        )
        for r in records
    ]
    out = []
    for i, (r, ranked) in enumerate(zip(records, rank(entries), strict=True)):
        run = runs[r["run_dir"]]
        tied = "oracle" if r["oracle"] else ("tied with leader" if ranked.tied_with_leader else "")
        out.append(
            dict(
                r,
                _row=i,
                rank=ranked.rank,
                tied=tied,
                versus_leader=ranked.versus_leader,
                oracle="oracle" if r["oracle"] else "",
                engine=run.engine,
                run=run.name,
                href=f"runs/{run.slug}/index.html",
            )
        )
    return out


def _plots(frame: pd.DataFrame, out: Path, slug: str) -> tuple[list[dict[str, Any]], str]:
    """The task's plots as written by tsbench.plots, grouped by name (PNG shown, SVG linked)."""
    try:
        from tsbench.plots import write_plots
    except ImportError:
        return [], "No plots: this tsbench has no tsbench.plots module."
    folder = out / "tasks" / slug
    folder.mkdir(parents=True, exist_ok=True)
    try:
        paths = write_plots(frame, folder, formats=("png", "svg"))
    except Exception as exc:  # a plot bug must not take the tables and sample pages down with it
        print(f"tsbench leaderboard: warning: plots of task {slug} failed: {exc!r}", file=sys.stderr)
        return [], f"The plots of this task could not be drawn: {exc!r}."
    by_name: dict[str, dict[str, str]] = {}
    for path in paths:
        by_name.setdefault(Path(path).stem, {})[Path(path).suffix.lstrip(".")] = f"{slug}/{Path(path).name}"
    plots = []
    for name, files in sorted(by_name.items()):
        shown = files.get("png") or files.get("svg") or next(iter(files.values()))
        others = [{"format": fmt, "href": href} for fmt, href in sorted(files.items())]
        title = re.sub(r"-[0-9a-f]{6}$", "", name).replace("-", " ")
        plots.append({"title": title, "src": shown, "href": shown, "others": others})
    return plots, "" if plots else "The rows of this task gave no plot."


def _write(path: Path, text: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


def _run_pages(
    env: jinja2.Environment, out: Path, run: Run, task_slug: str, common: dict[str, Any], per_page: int
) -> None:
    views = problem_views(run)
    pages = paginate(views, per_page)
    page_of = {v.problem_id: n for n, chunk in enumerate(pages, 1) for v in chunk}
    perf = {(r["strategy"], int(r["k"])): r for r in run.performance.get("rows", [])}
    metric_rows = [dict(r, perf=perf.get((r["strategy"], int(r["k"])), {})) for r in run.metrics["rows"]]
    problems_payload = {
        "columns": PROBLEM_COLUMNS,
        "rows": [dict(v.summary(page_file(page_of[v.problem_id])), _row=i) for i, v in enumerate(views)],
        "page_size": 25,
    }
    folder = out / "runs" / run.slug
    base = dict(common, root="../../", run=run, task_slug=task_slug, pages=len(pages))
    for number, chunk in enumerate(pages, 1):
        context = dict(base, page=number, problems=chunk, pager=pager(number, len(pages)))
        if number == 1:
            context.update(
                title=f"run {run.name}",
                metric_rows=metric_rows,
                identity=run.identity,
                problems_payload=problems_payload,
                problem_count=len(views),
                sample_count=sum(len(v.candidates) for v in views),
            )
            _write(folder / "index.html", env.get_template("run.html").render(context))
        else:
            context["title"] = f"run {run.name}, samples {number}"
            _write(folder / page_file(number), env.get_template("samples.html").render(context))


def _prepare_output(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise UserError(
            f"-o {out}: exists and was not made by `tsbench leaderboard build`; give a new or empty folder"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))


def build_site(
    results: Path, out: Path, *, rescore: bool = False, samples_per_page: int = SAMPLES_PER_PAGE
) -> dict[str, Any]:
    """Build the static leaderboard site.

    Args:
        results: folder holding run folders at any depth (results/).
        out: the site's folder; replaced whole if an earlier build made it.
        rescore: re-score every run with the installed code first (rewrites their derived files;
            needs each task's data); by default the stored metrics are shown as they are.
        samples_per_page: about how many samples each page of a run's sample browser holds.

    Returns:
        A summary: runs, tasks, pages written, seconds, the largest page and its size in bytes.

    Raises:
        UserError: no such results folder, an unreadable run, or an output folder not made by a build.
    """
    started = time.perf_counter()
    finished, unfinished = find_runs(results)
    # A run folder given as the results folder itself is named by its own name.
    names = [p.resolve().name if p == results else p.relative_to(results).as_posix() for p in finished]
    slugs = unique_slugs(names)
    tmp = _prepare_output(out)
    try:
        runs = {str(p): load_run(p, n, s) for p, n, s in zip(finished, names, slugs, strict=True)}
        frame = _table(finished, rescore) if finished else _empty_table()
        env = _environment()
        common = {"built_with": "", "tabulator_version": TABULATOR_VERSION, "rule": RULE}
        try:
            from importlib.metadata import version

            common["built_with"] = f"(tsbench {version('tsbench')})"
        except Exception:  # an uninstalled checkout still builds
            pass
        tasks = []
        for name, task_slug in zip(
            sorted({r.task for r in runs.values()}),
            unique_slugs(sorted({r.task for r in runs.values()})),
            strict=True,
        ):
            task_runs = [r for r in runs.values() if r.task == name]
            subset = frame[frame["run_dir"].isin([str(r.path) for r in task_runs])].reset_index(drop=True)
            units = ", ".join(sorted({str(r.metrics.get("budget_unit", "samples")) for r in task_runs}))
            tasks.append(TaskView(name, task_slug, task_runs, _task_rows(subset, runs), units))
            plots, note = _plots(subset, tmp, task_slug)
            page = env.get_template("task.html").render(
                common, root="../", title=name, task=tasks[-1], plots=plots, plots_note=note
            )
            _write(tmp / "tasks" / f"{task_slug}.html", page)
            for run in task_runs:
                _run_pages(env, tmp, run, task_slug, common, samples_per_page)
        index = env.get_template("index.html").render(
            common,
            root="",
            title="index",
            runs=list(runs.values()),
            tasks=tasks,
            source=str(results),
            skipped=[p.relative_to(results).as_posix() for p in unfinished],
        )
        _write(tmp / "index.html", index)
        # The CSV names runs as the site does, not by this machine's paths.
        names_by_dir = {d: r.name for d, r in runs.items()}
        shown = frame.assign(run_dir=frame["run_dir"].map(names_by_dir)) if len(frame) else frame
        shown.to_csv(tmp / "leaderboard.csv", index=False)
        shutil.copytree(PACKAGE / "static", tmp / "static")
        (tmp / MARKER).write_text("made by tsbench leaderboard build\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pages = sorted(out.rglob("*.html"), key=lambda p: p.stat().st_size)
    return {
        "runs": len(runs),
        "skipped": len(unfinished),
        "tasks": len(tasks),
        "pages": len(pages),
        "seconds": round(time.perf_counter() - started, 3),
        "largest_page": str(pages[-1].relative_to(out)) if pages else "",
        "largest_page_bytes": pages[-1].stat().st_size if pages else 0,
        "site_bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
    }
