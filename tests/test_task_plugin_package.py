"""A third party adds a task in a package of its own: the package declares a `tsbench.tasks` entry
point, is pip-installed into a fresh venv (beside, not into, the tsbench under test), and tsbench
lists it, grades with it and runs it. This is the recipe of docs/TASKS.md, "A task in a package of
your own", executed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = {
    "pyproject.toml": """\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "acme-tsbench-tasks"
        version = "0.1.0"
        dependencies = ["tsbench"]

        [project.entry-points."tsbench.tasks"]
        acme = "acme_tasks"

        [tool.setuptools]
        packages = ["acme_tasks"]

        [tool.setuptools.package-data]
        acme_tasks = ["*.yaml", "data/*/*"]
        """,
    # A task with logic of its own, in Python.
    "acme_tasks/__init__.py": '''\
        """Acme's tasks for tsbench."""

        from dataclasses import dataclass
        from pathlib import Path

        from tsbench.contracts import Problem, Verdict
        from tsbench.plugins import tasks
        from tsbench.tasks.declared import load_task_file

        HERE = Path(__file__).parent


        @dataclass
        class Doubling:
            """Acme doubling: what is twice N? Answer on a line 'Answer: <n>'."""

            name: str = "acme-doubling"
            description: str = "what is twice N (Acme)"
            stop = ("Question:",)  # ends a sample that runs on into a new question
            generation = {"max_tokens": 16}

            def load(self, limit, seed, data_dir):
                count = limit or 5
                return [Problem(f"acme-{n}", f"What is twice {n}?", str(2 * n)) for n in range(1, count + 1)]

            def messages(self, problem):
                return [{"role": "user", "content": problem.question + " Reply 'Answer: <number>'."}]

            def extract(self, text):
                found = [w.strip(".") for w in text.replace(":", " ").split() if w.strip(".").isdigit()]
                return found[-1] if found else None

            def canonical(self, answer):
                return answer.strip()

            def verdict(self, answer, problem):
                if answer is None:
                    return Verdict(False, "no_answer")
                return Verdict(answer.strip() == problem.reference)

            def grade(self, answer, problem):
                return self.verdict(answer, problem).correct


        @tasks.register("acme-doubling", "Acme doubling: what is twice N")
        def doubling(**options):
            return Doubling()


        # A task declared in YAML, shipped inside the package with its data.
        @tasks.register("acme-capitals", "Acme capitals (YAML-declared, packaged data)")
        def capitals(**options):
            return load_task_file(HERE / "capitals.yaml")
        ''',
    "acme_tasks/capitals.yaml": """\
        name: acme-capitals
        description: Acme capitals
        data: {local: capitals/test.jsonl}
        fields: {question: q, reference: a}
        prompt: {user: "{question} Reply with the number of letters as 'Answer: <n>'."}
        extract: number
        grade: numeric
        generation: {max_tokens: 16, stop: ["Question:"]}
        """,
    "acme_tasks/data/capitals/test.jsonl": """\
        {"q": "How many letters are in the word Paris?", "a": "5"}
        {"q": "How many letters are in the word Rome?", "a": "4"}
        """,
}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv that sees the tsbench under test (system site-packages) and holds the plugin."""
    root = tmp_path_factory.mktemp("plugin")
    for name, text in PACKAGE.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    # Without a pip of its own, the venv uses the system's pip and setuptools (ensurepip's older
    # setuptools could not build a wheel without the `wheel` package, and nothing is downloaded).
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(root / "venv")],
        check=True,
    )
    python = root / "venv" / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         str(root / "pkg")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    yield python


def in_venv(python: Path, *args: str, code: str | None = None) -> str:
    command = [str(python), "-c", code] if code else [str(python), "-m", "tsbench.cli", *args]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_installed_package_is_listed_and_grades(venv: Path) -> None:
    listed = in_venv(venv, "list", "tasks")
    assert "acme-doubling  Acme doubling: what is twice N" in listed
    assert "acme-capitals  Acme capitals (YAML-declared, packaged data)" in listed
    assert "arc-challenge" in listed and "countdown" in listed  # the built-in ones are still there
    # The plugin came from the venv, not from a path this test process can see.
    with pytest.raises(ImportError):
        __import__("acme_tasks")
    checked = in_venv(
        venv,
        code=textwrap.dedent(
            """
            import json
            from importlib.resources import files
            from tsbench import plugins
            from tsbench.contracts import task_stop
            t = plugins.tasks.get("acme-doubling")()
            p = t.load(3, 0, None)[2]
            c = plugins.tasks.get("acme-capitals")()
            data = str(files("acme_tasks") / "data")
            q = c.load(None, 0, data)
            print(json.dumps([t.grade(t.extract("Answer: 6"), p), t.grade(t.extract("Answer: 7"), p),
                              task_stop(t), c.grade(c.extract("Answer: 5"), q[0]), task_stop(c), len(q)]))
            """
        ),
    )
    assert json.loads(checked) == [True, False, ["Question:"], True, ["Question:"], 2]


@pytest.mark.slow
def test_a_run_of_the_plugin_task_with_the_real_model(venv: Path, tmp_path: Path) -> None:
    out = in_venv(
        venv, "run", "--task", "acme-doubling", "--limit", "2", "--strategy", "greedy", "--budget", "1",
        "--threads", "1", "--output", str(tmp_path / "run"), "--no-progress",
    )  # fmt: skip
    assert "greedy" in out
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [s["problem_id"] for s in samples] == ["acme-1", "acme-2"]
    identity = json.loads((tmp_path / "run" / "identity.json").read_text())
    assert identity["task_stop"] == ["Question:"]
