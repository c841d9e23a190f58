"""The leaderboard builder without a browser: escaping of embedded JSON, page names, the ranking
rule, refusing bad input in one line with nothing half-written, and a 10,000-sample run.

Run folders are made by the real run code with a TEST DOUBLE runner (tests/fixtures/leaderboard/
double.py); the browser checks are in test_leaderboard_browser.py.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "leaderboard"))
from double import HOSTILE, make_run  # noqa: E402

from tsbench.cli import main  # noqa: E402
from tsbench.errors import UserError  # noqa: E402
from tsbench.leaderboard import build_site  # noqa: E402
from tsbench.leaderboard.ranking import Entry, rank  # noqa: E402
from tsbench.leaderboard.safe import script_json, slug, unique_slugs  # noqa: E402


def test_script_json_cannot_end_its_script_block_and_stays_the_same_value() -> None:
    value = {"text": HOSTILE, "<!--": ["</SCRIPT>", "a\u2028b\u2029c", "&amp;"]}
    text = str(script_json(value))
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert json.loads(text) == value


def test_page_names_are_safe_and_distinct() -> None:
    assert slug("../../etc/passwd") == "etc-passwd"
    assert slug("<script>") == "script"
    assert slug("...") == "run"
    assert unique_slugs(["a b", "a/b", "a-b"]) == ["a-b", "a-b-2", "a-b-3"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", s) for s in unique_slugs([HOSTILE, "javascript:x"]))


def _entry(scores: list[float], data: str = "d", oracle: bool = False) -> Entry:
    from tsbench.stats import wilson_interval

    mean = sum(scores) / len(scores)
    per_problem = {f"p{i}": s for i, s in enumerate(scores)}
    return Entry(mean, wilson_interval(mean, len(scores)), oracle, data, lambda: per_problem)


def test_rows_on_the_same_problems_are_ranked_by_the_paired_test() -> None:
    leader = _entry([1.0] * 27 + [0.0] * 3)
    close = _entry([1.0] * 25 + [0.0] * 5)  # 2 discordant problems: McNemar p = 0.5, tied
    far = _entry([1.0] * 10 + [0.0] * 20)  # 17 problems the leader alone solves: p < 0.001
    oracle = _entry([1.0] * 30, oracle=True)
    ranked = rank([far, oracle, close, leader])
    assert [r.rank for r in ranked] == [3, None, 1, 1]
    assert [r.tied_with_leader for r in ranked] == [False, None, True, True]
    assert ranked[0].versus_leader.startswith("mcnemar-exact p=")


def test_rows_over_different_problems_are_ranked_by_their_intervals() -> None:
    leader = _entry([1.0] * 27 + [0.0] * 3, data="a")
    apart = _entry([1.0] * 10 + [0.0] * 20, data="b")  # [0.19, 0.51] below [0.74, 0.97]
    overlapping = _entry([1.0] * 22 + [0.0] * 8, data="c")
    ranked = rank([leader, apart, overlapping])
    assert [r.rank for r in ranked] == [1, 3, 1]
    assert [r.versus_leader for r in ranked] == ["leader", "95% intervals apart", "95% intervals overlap"]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    make_run(root / "a")
    return root


def test_the_command_builds_a_site_and_lists_unfinished_runs(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unfinished = tmp_path / "results"
    unfinished.mkdir()
    (unfinished / "half").mkdir()
    (unfinished / "half" / "arms.json").write_text("[]")
    shutil.copytree(results / "a", unfinished / "a")
    assert main(["leaderboard", "build", str(unfinished), "-o", str(tmp_path / "site")]) == 0
    assert "leaderboard: 1 runs, 1 unfinished skipped, 1 tasks" in capsys.readouterr().out
    index = (tmp_path / "site" / "index.html").read_text()
    assert "<code>half</code>" in index
    csv = (tmp_path / "site" / "leaderboard.csv").read_text().split("\n")[:-1]
    assert len(csv) == 1 + 8 and csv[0].startswith("run_id,")
    assert str(tmp_path) not in "\n".join(csv)  # runs are named as on the site, not by local paths
    # A second build replaces the first one's folder.
    assert main(["leaderboard", "build", str(unfinished), "-o", str(tmp_path / "site")]) == 0


def test_an_output_folder_it_did_not_make_is_refused(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    assert main(["leaderboard", "build", str(results), "-o", str(keep)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was not made by `tsbench leaderboard build`" in err[0]
    assert (keep / "notes.txt").read_text() == "precious"


def test_a_broken_run_fails_in_one_line_and_leaves_no_half_site(results: Path, tmp_path: Path) -> None:
    broken = tmp_path / "results" / "b"
    shutil.copytree(results / "a", broken)
    (broken / "metrics.json").write_text("{not json")
    with pytest.raises(UserError, match=r"metrics.json: not valid JSON .*tsbench report"):
        build_site(tmp_path / "results", tmp_path / "site")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    with pytest.raises(UserError, match="no such folder"):
        build_site(tmp_path / "nowhere", tmp_path / "site")


def test_a_run_of_10000_samples_builds_fast_into_small_pages(tmp_path: Path) -> None:
    """625 problems x (1 greedy + 16 sampled) = 10,625 samples, made by the real run code."""
    import time

    make_run(
        tmp_path / "results" / "big",
        task_options={"levels": "1,2,3"},
        strategies=["greedy", "majority", "pass@k"],
        verifiers=[],
        budgets=[1, 4, 16],
        pool_size=16,
        limit=625,
    )
    # count "\n", not splitlines(): the outputs hold U+2028, which splitlines() also splits on
    samples = (tmp_path / "results" / "big" / "samples.jsonl").read_text().count("\n")
    assert samples == 10_625
    started = time.perf_counter()
    summary = build_site(tmp_path / "results", tmp_path / "site")
    seconds = time.perf_counter() - started
    run_pages = sorted((tmp_path / "site" / "runs" / "big").glob("*.html"))
    print(
        f"\n10,625-sample run: built in {seconds:.1f} s, {len(run_pages)} run pages, largest page "
        f"{summary['largest_page']} {summary['largest_page_bytes'] / 1e3:.0f} kB, site {summary['site_bytes'] / 1e6:.1f} MB"
    )
    assert len(run_pages) == 105  # 6 problems (102 samples) a page
    assert summary["largest_page_bytes"] < 1_000_000
    assert seconds < 120
    last = (tmp_path / "site" / "runs" / "big" / "samples-0105.html").read_text()
    assert last.count('<article class="problem"') == 1  # 625 = 104 x 6 + 1


def test_a_run_page_shows_each_search_and_its_tree(results: Path, tmp_path: Path) -> None:
    from markupsafe import escape

    build_site(results, tmp_path / "site", samples_per_page=1000)
    page = (tmp_path / "site" / "runs" / "a" / "index.html").read_text(encoding="utf-8")
    traces = [json.loads(line) for line in (results / "a" / "traces.jsonl").read_text().split("\n")[:-1]]
    assert traces and all(t["arm"] == "beam-search/oracle" for t in traces)
    assert page.count("Search beam-search/oracle at level 4") == 12  # one per problem
    assert page.count('<div class="tree">') == 12
    step = traces[0]["trace"]["chosen"]["steps"][0]
    assert str(escape(step)) in page and HOSTILE in step
