"""A catalogue of bad inputs: each gives one line on stderr (what, where, how to fix), exit code 2,
and leaves nothing half-written. Merely unusual inputs (a UTF-8 byte-order mark, CRLF line ends,
a trailing blank line) are read, not refused.

Servers that are down, slow, erroring or answering nonsense are a tiny http.server on loopback
(scripted, no model). The full disk is a small tmpfs where this process may mount one (root),
else an injected OSError(ENOSPC) from the results folder's writes; the test says which it used.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tsbench.cli import main

TASK = """name: mine
data: {local: mine/test.jsonl}
fields: {question: question, reference: answer}
prompt: {user: "{question}"}
extract: number
grade: numeric
"""
ROWS = [{"question": "What is 2+3?", "answer": "5"}, {"question": "What is 7-4?", "answer": "3"}]
QUICK = ["--task-arg", "levels=1", "--limit", "1", "--budget", "1", "--max-tokens", "4", "--threads", "1"]


class Server:
    """A scripted OpenAI-compatible server: `mode` decides how it misbehaves."""

    mode = "ok"

    def __init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if outer.mode == "html":
                    self._send(200, b"<html>It works!</html>", "text/html")
                else:
                    self._send(200, json.dumps({"data": [{"id": "m"}]}).encode())

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                if outer.mode == "slow":
                    time.sleep(3)
                    return
                if outer.mode == "error":
                    self._send(500, b'{"error": "out of memory"}')
                    return
                self._send(200, b"data: {this is not json\n\n", "text/event-stream")

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up on a slow answer is expected here

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    found = Server()
    yield found
    found.httpd.shutdown()


def openai(server: Server, mode: str, *extra: str) -> list[str]:
    server.mode = mode
    args = ["--runner", "openai", "--runner-arg", f"base_url={server.url}", "--runner-arg", "retries=0"]
    return [*args, "--runner-arg", "timeout_s=0.5", *QUICK, *extra]


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def data_case(tmp: Path, raw: bytes, task: str = TASK) -> list[str]:
    write(tmp / "data" / "mine" / "test.jsonl", raw)
    return ["--task", str(write(tmp / "task.yaml", task)), "--data-dir", str(tmp / "data"), "--limit", "2"]


def jsonl(rows: list[Any], end: str = "\n") -> str:
    return "".join(json.dumps(r) + end for r in rows)


def spec(tmp: Path, text: str) -> list[str]:
    return ["-c", str(write(tmp / "spec.yaml", text))]


def truncated_model(tmp: Path) -> Path:
    from tsbench.runners.embedded import embedded_gguf

    with embedded_gguf().open("rb") as handle:
        return write(tmp / "cut.gguf", handle.read(3_000_000))


# (case, argv builder, fragments the one line must hold)
Case = tuple[str, Callable[[Path, Server], list[str]], tuple[str, ...]]
CASES: list[Case] = [
    (
        "spec: bad YAML",
        lambda t, s: spec(t, "task: arith\nbudgets: [1, 2\n"),
        ("not valid YAML at line", "spec.yaml"),
    ),
    (
        "spec: unknown field",
        lambda t, s: spec(t, "tasks: arith\n"),
        ("unknown field 'tasks'", "known fields"),
    ),
    ("spec: wrong type", lambda t, s: spec(t, "limit: many\n"), ("limit", "'many'", "positive integer")),
    (
        "spec: negative budget",
        lambda t, s: spec(t, "budgets: [-1, 4]\n"),
        ("budgets", "'-1'", "positive integers"),
    ),
    ("spec: empty strategies", lambda t, s: spec(t, "strategies: []\n"), ("strategies is empty",)),
    ("spec: not a mapping", lambda t, s: spec(t, "- task\n- arith\n"), ("must be a YAML mapping",)),
    ("spec: missing file", lambda t, s: ["-c", str(t / "nope.yaml")], ("nope.yaml does not exist",)),
    ("spec: temperature", lambda t, s: spec(t, "temperature: hot\n"), ("temperature", "'hot'", "0.0 to 5.0")),
    ("spec: options", lambda t, s: spec(t, "strategy_options: 3\n"), ("strategy_options must be a mapping",)),
    (
        "name: strategy",
        lambda t, s: ["--strategy", "majorty"],
        ("unknown strategy 'majorty'", "tsbench list"),
    ),
    ("name: task", lambda t, s: ["--task", "arithmetic"], ("unknown task 'arithmetic'",)),
    ("name: runner", lambda t, s: ["--runner", "llama"], ("unknown runner 'llama'",)),
    (
        "name: verifier",
        lambda t, s: ["--strategy", "best-of-n", "--verifier", "nope", *QUICK],
        ("unknown verifier 'nope'",),
    ),
    (
        "task file: missing field",
        lambda t, s: ["--task", str(write(t / "t.yaml", TASK.replace("extract: number\n", "")))],
        ("t.yaml", "missing field 'extract'"),
    ),
    (
        "task file: unknown extractor",
        lambda t, s: ["--task", str(write(t / "t.yaml", TASK.replace("extract: number", "extract: magic")))],
        ("field 'extract' is 'magic'", "use one of"),
    ),
    (
        "task file: bad YAML",
        lambda t, s: ["--task", str(write(t / "t.yaml", "name: [mine\n"))],
        ("t.yaml is not valid YAML",),
    ),
    (
        "task file: data not a mapping",
        lambda t, s: [
            "--task",
            str(write(t / "t.yaml", TASK.replace("{local: mine/test.jsonl}", "mine.jsonl"))),
        ],
        ("field 'data'", "not a mapping"),
    ),
    (
        "task file: unknown placeholder",
        lambda t, s: data_case(t, jsonl(ROWS).encode(), TASK.replace('"{question}"', '"{question} {hint}"')),
        ("prompt.user cannot be filled", "hint"),
    ),
    (
        "data: UTF-16 with BOM",
        lambda t, s: data_case(t, jsonl(ROWS).encode("utf-16")),
        ("test.jsonl is UTF-16", "iconv"),
    ),
    (
        "data: Latin-1",
        lambda t, s: data_case(
            t, (jsonl(ROWS[:1]) + '{"question": "caf\xe9 2+2?", "answer": "4"}\n').encode("latin-1")
        ),
        ("line 2 of", "is not UTF-8 (byte 0xe9)", "iconv -f latin1"),
    ),
    (
        "data: a line that is not JSON",
        lambda t, s: data_case(t, (jsonl(ROWS) + "{question: 1+1, answer: 2}\n").encode()),
        ("line 3 of", "is not JSON", "fix or delete that line"),
    ),
    (
        "data: missing reference field",
        lambda t, s: data_case(t, jsonl([ROWS[0], {"question": "1+1?"}]).encode()),
        ("line 2 of", "has no field 'answer'"),
    ),
    (
        "data: a row that is not an object",
        lambda t, s: data_case(t, jsonl([[1, 2], ROWS[0]]).encode()),
        ("line 1 of", "not an object"),
    ),
    (
        "data: missing file",
        lambda t, s: ["--task", str(write(t / "t.yaml", TASK)), "--data-dir", str(t)],
        ("has no mine/test.jsonl",),
    ),
    ("data: empty file", lambda t, s: data_case(t, b"\n"), ("no problems to run",)),
    ("model: missing", lambda t, s: ["--model", str(t / "none.gguf"), *QUICK], ("none.gguf does not exist",)),
    (
        "model: not a GGUF",
        lambda t, s: ["--model", str(write(t / "m.gguf", "hello")), *QUICK],
        ("m.gguf could not be loaded", "pass a valid GGUF"),
    ),
    (
        "model: truncated",
        lambda t, s: ["--model", str(truncated_model(t)), *QUICK],
        ("cut.gguf could not be loaded",),
    ),
    (
        "runner option: unknown key",
        lambda t, s: ["--runner-arg", "colour=blue", *QUICK],
        ("runner_options", "colour"),
    ),
    (
        "runner option: wrong type",
        lambda t, s: ["--runner-arg", "parallel=many", *QUICK],
        ("runner llamacpp could not start with runner_options", "parallel"),
    ),
    (
        "strategy option: unknown key",
        lambda t, s: [
            "--strategy",
            "beam-search",
            "--verifier",
            "oracle",
            "--strategy-arg",
            "beam-search.beam_widht=2",
        ],
        ("strategy_options.beam-search: unknown option 'beam_widht'", "beam_width"),
    ),
    (
        "strategy option: wrong type",
        lambda t, s: [
            "--strategy",
            "beam-search",
            "--verifier",
            "oracle",
            "--strategy-arg",
            "beam-search.beam_width=wide",
        ],
        ("strategy_options.beam-search.beam_width: 'wide' is not int",),
    ),
    (
        "strategy option: malformed",
        lambda t, s: ["--strategy-arg", "beam_width=2"],
        ("must be NAME.OPTION=VALUE",),
    ),
    ("budget: zero", lambda t, s: ["--budget", "0,4"], ("budgets", "must be at least 1")),
    ("budget: not a number", lambda t, s: ["--budget", "1,x"], ("budgets", "'x'")),
    (
        "budget: pool below budget",
        lambda t, s: ["--pool-size", "2", "--budget", "4"],
        ("pool_size 2 is below the largest budget 4",),
    ),
    (
        "budget: FLOPs without a parameter count",
        lambda t, s: openai(s, "ok", "--budget-unit", "flops", "--budget", "1e11"),
        ("parameter count", "--param-count"),
    ),
    (
        "server: down",
        lambda t, s: ["--runner", "openai", "--runner-arg", "base_url=http://127.0.0.1:9/v1", *QUICK],
        ("no OpenAI-compatible server answers at http://127.0.0.1:9/v1",),
    ),
    ("server: slow", lambda t, s: openai(s, "slow"), ("did not answer in time", "timeout_s")),
    ("server: erroring", lambda t, s: openai(s, "error"), ("failed a request", "HTTP 500", "out of memory")),
    ("server: nonsense models", lambda t, s: openai(s, "html"), ("not an OpenAI-compatible",)),
    ("server: nonsense stream", lambda t, s: openai(s, "garbage"), ("not an OpenAI-compatible completion",)),
    ("output: a file", lambda t, s: ["--output", str(write(t / "out", "x")), *QUICK], ("out is a file",)),
    (
        "output: under a file",
        lambda t, s: ["--output", str(write(t / "blocker", "x") / "run"), *QUICK],
        ("a file is in the way",),
    ),
    (
        "output: not a run folder",
        lambda t, s: ["--output", str(write(t / "out" / "notes.txt", "mine").parent), *QUICK],
        ("exists and is not a tsbench run",),
    ),
    (
        "output: another run's folder",
        lambda t, s: ["--output", str(write(t / "out" / "identity.json", '{"spec": {}}').parent), *QUICK],
        ("holds samples generated under another identity",),
    ),
]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_line(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err
    lines = said(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("tsbench: error: "), (code, err)
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_clear_line(
    case: Case,
    tmp_path: Path,
    server: Server,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, build, fragments = case
    monkeypatch.chdir(tmp_path)  # a run without --output would land in ./results
    argv = build(tmp_path, server)
    if "--output" not in argv:
        argv += ["--output", str(tmp_path / "out")]
    before = snapshot(tmp_path)
    code = main(["run", *argv, "--no-progress"])
    line = one_line(capsys, code)
    for fragment in fragments:
        assert fragment in line, line
    assert snapshot(tmp_path) == before, "something was written"  # nothing half-written
    assert not (tmp_path / "results").exists()


def test_unusual_but_valid_data_files_are_read(tmp_path: Path) -> None:
    from tsbench.tasks.declared import load_task_file

    plain = jsonl(ROWS)
    variants = {
        "plain": plain.encode(),
        "utf-8 with BOM": b"\xef\xbb\xbf" + plain.encode(),
        "CRLF": jsonl(ROWS, "\r\n").encode(),
        "trailing blank lines": (plain + "\n\n").encode(),
        "no final newline": plain.rstrip("\n").encode(),
    }
    read = {}
    for name, raw in variants.items():
        data_case(tmp_path / name, raw)
        task = load_task_file(tmp_path / name / "task.yaml")
        read[name] = [(p.question, p.reference) for p in task.load(None, 0, str(tmp_path / name / "data"))]
    assert all(found == read["plain"] for found in read.values()), read
    assert read["plain"] == [("What is 2+3?", "5"), ("What is 7-4?", "3")]


def test_an_unopenable_generation_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TSBENCH_GENERATION_CACHE", str(write(tmp_path / "file", "x") / "cache.sqlite"))
    code = main(["run", *QUICK, "--output", str(tmp_path / "out"), "--no-progress"])
    assert "TSBENCH_GENERATION_CACHE=off" in one_line(capsys, code)
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes anywhere chmod forbids: use a read-only file system
        target = Path("/sys/tsbench-out")
    else:
        locked.chmod(0o500)
        target = locked / "run"
    code = main(["run", *QUICK, "--output", str(target), "--no-progress"])
    line = one_line(capsys, code)
    assert str(target) in line and "--output" in line
    assert not target.exists()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tsbench.cli", "run", *args, "--no-progress"],
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


RUN = ["--task-arg", "levels=1", "--limit", "4", "--budget", "1,2", "--max-tokens", "24", "--threads", "1"]
RUN += ["--batch-sequences", "3"]  # one problem (greedy + 2 sampled) to a group


def said(err: str) -> list[str]:
    """What tsbench wrote to stderr: llama.cpp's own log lines (its context-size notice) aside."""
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.strip() and not line.startswith("llama_")]


def wait_for(path: Path, proc: subprocess.Popen[str], lines: int = 1) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= lines:
            return
        time.sleep(0.02)
    raise AssertionError(
        f"{path} never got {lines} line(s): {proc.communicate()[1] if proc.poll() is not None else ''}"
    )


@pytest.mark.slow
def test_two_runs_of_one_spec_at_once(tmp_path: Path) -> None:
    output = tmp_path / "run"
    first = cli(*RUN, "--output", str(output))
    wait_for(output / ".lock", first)
    second = cli(*RUN, "--output", str(output))
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2, err
    lines = said(err)
    assert (
        len(lines) == 1
        and f"output folder {output} is being written by another tsbench run (pid {first.pid})" in lines[0]
    )
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    problems = [
        json.loads(line)["problem_id"] for line in (output / "problems.jsonl").read_text().splitlines()
    ]
    assert len(problems) == len(set(problems)) == 4  # counted once, not twice


@pytest.mark.slow
def test_ctrl_c_exits_130_and_leaves_a_resumable_folder(tmp_path: Path) -> None:
    output = tmp_path / "run"
    # A shell without job control starts background commands with SIGINT ignored, and an ignored
    # signal is inherited: the run must get the default, as it would from a terminal.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tsbench.cli", "run", *RUN, "--output", str(output), "--no-progress"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_for(output / "problems.jsonl", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = said(err)
    assert len(lines) == 1 and "interrupted; run the same command again to resume" in lines[0]
    done = (output / "problems.jsonl").read_text().count("\n")
    assert 1 <= done < 4 and json.loads((output / "status.json").read_text())["complete"] is False
    again = cli(*RUN, "--output", str(output))
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"resumed: {done} of 4" in out


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_resumes_once_there_is_room(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = tmp_path / "disk"
    output = disk / "run"
    if mount_tmpfs(disk, "40k"):  # room for the folder's first files and a problem or two
        try:
            proc = cli(*RUN, "--output", str(output))
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 2, err
            lines = said(err)
            assert len(lines) == 1 and "disk full writing" in lines[0] and "resume" in lines[0], err
            done = (output / "problems.jsonl").read_text().count("\n") if output.exists() else 0
            subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
            proc = cli(*RUN, "--output", str(output))
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            assert (f"resumed: {done} of 4" in out) == bool(done)
            problems = [
                json.loads(line)["problem_id"]
                for line in (output / "problems.jsonl").read_text().splitlines()
            ]
            assert len(problems) == len(set(problems)) == 4
        finally:
            subprocess.run(["umount", str(disk)], check=False)
        return
    # Not root: the second commit's samples append fails with ENOSPC, injected.
    from tsbench import records

    real = records.RunFolder._append
    calls = {"n": 0}

    def full(self: records.RunFolder, name: str, rows: Any) -> None:
        calls["n"] += 1
        if name == records.SAMPLES and calls["n"] > 4:
            raise records._write_error(self.path / name, OSError(errno.ENOSPC, "No space left on device"))
        real(self, name, rows)

    monkeypatch.setattr(records.RunFolder, "_append", full)
    code = main(["run", *RUN, "--output", str(output), "--no-progress"])
    assert "disk full writing" in one_line(capsys, code)
