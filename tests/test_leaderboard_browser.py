"""The leaderboard site in a real headless Chromium (Debian's /usr/bin/chromium driven by
Playwright's Python package; no browser download): the index loads cleanly, sorts and filters,
a run page pages through its samples, and hostile model output shows as text and runs nothing.

The runs are made by the real run code with a TEST DOUBLE runner (tests/fixtures/leaderboard/
double.py): no real model can be made to write the hostile payloads on purpose. Screenshots of the
index, a task page and a run page are saved under $TSBENCH_SCREENSHOTS, else
<tmp>/tsbench-leaderboard-screenshots; the path is printed.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "leaderboard"))
from double import HOSTILE, HOSTILE_MODEL, make_run  # noqa: E402

from tsbench.leaderboard import build_site  # noqa: E402

CHROMIUM = Path(os.environ.get("TSBENCH_CHROMIUM", "/usr/bin/chromium"))
HOSTILE_RUN = "run<img src=x onerror=window.__pwned='folder'>"
SCREENSHOTS = Path(
    os.environ.get("TSBENCH_SCREENSHOTS", Path(tempfile.gettempdir()) / "tsbench-leaderboard-screenshots")
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("leaderboard")
    make_run(root / "results" / "double-a")
    make_run(root / "results" / HOSTILE_RUN, seed=1, runner_options={"wrong_every": 2})
    # 5 samples a problem, about 10 a page: 2 problems a page, 6 pages a run.
    build_site(root / "results", root / "site", samples_per_page=10)
    return root / "site"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set TSBENCH_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


class Page:
    """A browser tab that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any, bypass_csp: bool = False) -> None:
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=bypass_csp)
        self.tab = context.new_page()
        self.errors: list[str] = []
        self.tab.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.tab.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def open(self, path: Path) -> Any:
        self.tab.goto(path.as_uri())
        return self.tab


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    opened = Page(browser)
    yield opened
    opened.tab.context.close()


@pytest.fixture
def page_without_csp(browser: Any) -> Iterator[Page]:
    """The pages carry a Content-Security-Policy that blocks inline script; this tab ignores it,
    so the hostile-output test shows that escaping alone keeps the payloads inert."""
    opened = Page(browser, bypass_csp=True)
    yield opened
    opened.tab.context.close()


def _column(tab: Any, field: str) -> list[str]:
    return tab.locator(f'.tabulator-row .tabulator-cell[tabulator-field="{field}"]').all_inner_texts()


def _number(text: str) -> float:
    return float("inf") if text.strip() in ("-", "") else float(text)


def _shot(tab: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=False)
    print(f"screenshot: {path}")


def test_index_task_and_run_pages_load_with_no_console_errors(site: Path, page: Page) -> None:
    tab = page.open(site / "index.html")
    tab.wait_for_selector(".tabulator-row")
    assert tab.locator(".tabulator-row").count() == 16  # 2 runs x 8 arm x level rows
    _shot(tab, "index")
    tab = page.open(site / "tasks" / "arith.html")
    tab.wait_for_selector(".tabulator-row")
    _shot(tab, "task")
    tab = page.open(site / "runs" / "double-a" / "index.html")
    tab.wait_for_selector(".tabulator-row")
    _shot(tab, "run")
    tab.locator("article.problem").first.scroll_into_view_if_needed()
    _shot(tab, "run-samples")
    assert page.errors == []


def test_sorting_a_column_reorders_it(site: Path, page: Page) -> None:
    tab = page.open(site / "index.html")
    tab.wait_for_selector(".tabulator-row")
    before = _column(tab, "accuracy")
    header = tab.locator('.tabulator-col[tabulator-field="accuracy"] .tabulator-col-title')
    header.click()
    ascending = _column(tab, "accuracy")
    header.click()
    descending = _column(tab, "accuracy")
    values = [_number(v) for v in ascending]
    assert values == sorted(values) and len(set(values)) > 1
    assert [_number(v) for v in descending] == sorted(values, reverse=True)
    assert ascending != before or descending != before
    assert page.errors == []


def test_a_header_filter_hides_rows(site: Path, page: Page) -> None:
    tab = page.open(site / "index.html")
    tab.wait_for_selector(".tabulator-row")
    total = tab.locator(".tabulator-row").count()
    tab.locator('.tabulator-col[tabulator-field="strategy"] input').press_sequentially("majority")
    for _ in range(100):  # Tabulator filters after a short debounce
        if tab.locator(".tabulator-row").count() < total:
            break
        tab.wait_for_timeout(100)
    shown = _column(tab, "strategy")
    assert 0 < len(shown) < total and set(shown) == {"majority"}
    assert page.errors == []


def test_a_run_page_shows_its_samples_and_pages_through_them(site: Path, page: Page) -> None:
    tab = page.open(site / "runs" / "double-a" / "index.html")
    first = tab.locator("article.problem").evaluate_all("els => els.map(e => e.dataset.problem)")
    assert len(first) == 2
    assert tab.locator("article.problem").first.locator("pre.candidate").count() == 5
    assert "page 1 of 6" in tab.locator("nav.pager").first.inner_text()
    tab.locator('nav.pager a[rel="next"]').first.click()
    tab.wait_for_url("**/samples-0002.html")
    second = tab.locator("article.problem").evaluate_all("els => els.map(e => e.dataset.problem)")
    assert len(second) == 2 and not set(second) & set(first)
    tab.locator('nav.pager a[rel="prev"]').first.click()
    tab.wait_for_url("**/index.html")
    # The problem table's link of a problem on page 3 leads to that problem's anchor there.
    tab.wait_for_selector(".tabulator-row")
    link = tab.locator('.tabulator-cell[tabulator-field="problem"] a').nth(4)
    target = link.inner_text()
    link.click()
    tab.wait_for_url("**/samples-0003.html#*")
    assert target in tab.locator("article.problem").evaluate_all("els => els.map(e => e.dataset.problem)")
    assert page.errors == []


@pytest.mark.parametrize(
    "where", ["index.html", "tasks/arith.html", "runs/double-a/index.html", "runs/double-a/samples-0002.html"]
)
def test_hostile_output_shows_as_text_and_runs_nothing(
    site: Path, page_without_csp: Page, where: str
) -> None:
    page = page_without_csp
    tab = page.open(site / where)
    tab.wait_for_load_state("load")
    if tab.locator("div.tsb-table").count():
        tab.wait_for_selector(".tabulator-row")
    for sorted_by in ("model", "run"):  # sorting re-renders every cell
        header = tab.locator(f'.tabulator-col[tabulator-field="{sorted_by}"] .tabulator-col-title')
        if header.count():
            header.click()
    # Click every link on the page that a payload could have made.
    for link in tab.locator('a[href^="javascript:"]').all():
        link.click()
    tab.wait_for_timeout(300)  # onerror handlers fire after the image fails to load
    assert tab.evaluate("typeof window.__pwned") == "undefined"
    assert tab.locator('img[src="x"]').count() == 0
    assert tab.locator('a[href^="javascript:"]').count() == 0
    assert tab.locator("script:not([src]):not([type='application/json'])").count() == 0
    text = tab.locator("body").inner_text()
    if where.startswith("runs/"):
        shown = tab.locator("pre.candidate").first.text_content()
        assert HOSTILE in shown  # the exact characters, as text
        assert "<script>window.__pwned = 'script'</script>" in text
    else:
        assert "onerror=\"window.__pwned='model'\"" in text  # the hostile model id, as text
        assert HOSTILE_MODEL in text
    if where == "index.html":
        assert HOSTILE_RUN in text
    assert page.errors == []


def test_a_hostile_run_folder_name_gets_a_safe_page_name(site: Path) -> None:
    names = sorted(p.name for p in (site / "runs").iterdir())
    assert names == ["double-a", "run-img-src-x-onerror-window.__pwned-folder"]


@pytest.fixture(scope="module", autouse=True)
def _clean_screenshots() -> None:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)


def test_every_page_carries_a_policy_against_inline_script(site: Path) -> None:
    for html in site.rglob("*.html"):
        assert "script-src 'self';" in html.read_text(encoding="utf-8"), html
