"""pytest plugin (entry point `pytest11`): a regression gate inside a test.

    @pytest.mark.tsbench(spec="ci/arith.yaml", baseline="results/ci-reference/run", min_effect=0.05)
    def test_accuracy_holds(tsbench_gate):
        tsbench_gate.check()

`check()` runs the spec (or loads a finished run folder given as `run=`), compares it with the
baseline row by row (tsbench.gate) and fails the test with one message per regression. Keyword
arguments of `check()` override the marker's. Specs run once per session, in this process, into
a session folder (or `--tsbench-results DIR`); a baseline given as a spec is run in the session
too, so `max_slowdown` compares tokens/s measured here, on this machine. A baseline given as a
folder is gated on accuracy as it is; for speed its spec.yaml is run again here. The gate's runs
never read the generation cache: what they report was generated in this session.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tsbench.errors import UserError

if TYPE_CHECKING:
    from tsbench.gate import GateReport

# Loaded in every pytest session of an environment holding tsbench: scipy and the run machinery
# are imported when a gate runs, not here.
CACHE_ENV = "TSBENCH_GENERATION_CACHE"  # tsbench.cache.ENV, named here to keep this import light
SpecLike = str | Path | Mapping[str, Any]
OPTIONS = ("alpha", "min_effect", "max_slowdown", "correction")
KNOWN = {"spec", "run", "baseline", "args", *OPTIONS}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tsbench")
    group.addoption(
        "--tsbench-results",
        default=None,
        help="folder for the runs the tsbench gate makes (default: a session temporary folder)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "tsbench(spec=None, run=None, baseline=None, alpha=0.05, min_effect=0.0, max_slowdown=None, "
        "correction='holm', args=()): what the tsbench_gate fixture compares; see docs/GATES.md",
    )


@contextlib.contextmanager
def generation_cache_off() -> Iterator[None]:
    """A gate's runs generate: samples read back from the generation cache would carry another
    session's timings, and would hide a change the cache's key does not see."""
    held = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = "off"
    try:
        yield
    finally:
        if held is None:
            del os.environ[CACHE_ENV]
        else:
            os.environ[CACHE_ENV] = held


class GateSession:
    """Runs specs once per pytest session and remembers which runs generated (were timed) here."""

    def __init__(self, root: Path, base: Path) -> None:
        self.root, self.base = root, base
        self.runs: dict[str, Path] = {}
        self.measured: set[Path] = set()

    def path(self, value: str | Path) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.base / path

    def run(self, spec: SpecLike, args: tuple[str, ...] = ()) -> Path:
        """The run folder of a spec (a YAML file or a mapping of spec fields), generated once."""
        if isinstance(spec, Mapping):
            text = yaml.safe_dump(dict(spec), sort_keys=True)
        else:
            file = self.path(spec)
            if not file.is_file():
                raise UserError(f"tsbench marker: spec file {file} does not exist; give a YAML spec")
            text = file.read_text(encoding="utf-8")
        key = hashlib.sha256(json.dumps([text, list(args)]).encode()).hexdigest()[:12]
        if key not in self.runs:
            file = self.root / f"{key}.yaml"
            file.write_text(text, encoding="utf-8")
            from tsbench.gate_cli import run_spec

            output = self.root / key
            fresh = not (output / "metrics.json").exists()
            with generation_cache_off():
                self.runs[key] = run_spec(file, output, tuple(args))
            if fresh:
                self.measured.add(self.runs[key])
        return self.runs[key]


@pytest.fixture(scope="session")
def tsbench_session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> GateSession:
    """The session's runs: where they go, and which were generated in this session."""
    chosen = request.config.getoption("--tsbench-results")
    root = Path(chosen) if chosen else tmp_path_factory.mktemp("tsbench-gate")
    root.mkdir(parents=True, exist_ok=True)
    return GateSession(root.resolve(), Path(request.config.rootpath))


class Gate:
    """The `tsbench_gate` fixture: run or load a candidate, gate it against a baseline."""

    def __init__(self, session: GateSession, marked: Mapping[str, Any]) -> None:
        unknown = sorted(set(marked) - KNOWN)
        if unknown:
            pytest.fail(f"tsbench marker: unknown argument(s) {unknown}; use {sorted(KNOWN)}", pytrace=False)
        self.session, self.marked = session, dict(marked)

    def run(self, spec: SpecLike, *args: str) -> Path:
        """Run a spec once in this session (extra `tsbench run` flags after it); its folder."""
        return self.session.run(spec, tuple(args))

    def _folder(self, value: SpecLike, args: tuple[str, ...]) -> Path:
        if not isinstance(value, Mapping) and self.session.path(value).is_dir():
            return self.session.path(value)
        return self.session.run(value, args)

    def check(self, **overrides: Any) -> GateReport:
        """Gate the candidate (`spec=` to run, or `run=` a folder) against `baseline=`; fails the
        test on a regression, with the table below the messages; returns the report otherwise.

        Args:
            overrides: the marker's arguments (spec, run, baseline, alpha, min_effect,
                max_slowdown, correction, args) for this call.
        """
        from tsbench.gate_cli import table

        given = {**self.marked, **overrides}
        unknown = sorted(set(given) - KNOWN)
        if unknown:
            pytest.fail(
                f"tsbench_gate.check: unknown argument(s) {unknown}; use {sorted(KNOWN)}", pytrace=False
            )
        args = tuple(given.get("args", ()))
        try:
            report = self._gate(given, args)
        except UserError as exc:
            refused = f"tsbench gate refused: {exc}"
        else:
            if not report.failed:
                return report
            refused = "\n".join(report.failures()) + "\n\n" + table(report, verdict=False)
        pytest.fail(refused, pytrace=False)

    def _gate(self, given: dict[str, Any], args: tuple[str, ...]) -> GateReport:
        from tsbench.gate import GateOptions, gate

        if given.get("baseline") is None or (given.get("spec") is None) == (given.get("run") is None):
            raise UserError(
                "tsbench gate: give baseline= and exactly one of spec= (to run) or run= (a folder)"
            )
        candidate = self._folder(given["run"] if given.get("run") is not None else given["spec"], args)
        baseline = self._folder(given["baseline"], args)
        options = GateOptions(**{k: given[k] for k in OPTIONS if given.get(k) is not None})
        speed_baseline = None
        if options.max_slowdown is not None and baseline not in self.session.measured:
            try:
                speed_baseline = self.session.run(baseline / "spec.yaml", args)
            except UserError as exc:
                raise UserError(
                    f"max_slowdown: the baseline's spec.yaml, run again to measure its speed in this session, "
                    f"failed ({exc}); pass the flags it needs as args=[...] (e.g. ['--data-dir', DIR])"
                ) from None
        measured = {candidate, speed_baseline or baseline} <= self.session.measured
        return gate(candidate, baseline, options, same_session=measured, speed_baseline=speed_baseline)


@pytest.fixture
def tsbench_gate(request: pytest.FixtureRequest, tsbench_session: GateSession) -> Gate:
    """Gate a run against a baseline; reads the test's `@pytest.mark.tsbench(...)` if any."""
    marker = request.node.get_closest_marker("tsbench")
    return Gate(tsbench_session, marker.kwargs if marker else {})
