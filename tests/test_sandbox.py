"""Hostile programs, one test each, under every containment that works here: each is contained,
graded as a failure (never a pass), and the next execution still grades right.

The problem is f(x) = x + 1. A hostile program answers right only where its attack succeeded, so a
pass would mean the sandbox let it through; the tests also check on the host that nothing got out.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tsbench.sandbox import CodeJob, ExecResult, Limits, execute
from tsbench.sandbox.runner import _works

TESTS = "assert f(1) == 2\nassert f(41) == 42\n"
LIMITS = Limits(wall_s=8, cpu_s=2, memory_mb=512, file_mb=8, disk_mb=32, processes=32)
GOOD = "def f(x):\n    return x + 1\n"


def _available(kind: str) -> object:
    reason = {
        "bwrap": "bubblewrap cannot run here (apt-get install bubblewrap; needs user namespaces or root)",
        "unshare": "the `unshare` fallback failed its probe here (it needs root or unprivileged user namespaces)",
    }[kind]
    return pytest.param(kind, marks=pytest.mark.skipif(not _works(kind), reason=reason))


CONTAINMENTS = [_available("bwrap"), _available("unshare")]


def run(program: str, kind: str, limits: Limits = LIMITS) -> ExecResult:
    result = execute(CodeJob(program, TESTS, ("f",)), limits, kind)
    assert result.containment == kind
    assert not result.passed, result
    assert execute(CodeJob(GOOD, TESTS, ("f",)), LIMITS, kind).passed  # the next one still works
    return result


def _processes_matching(text: str) -> list[str]:
    found = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if text in line and "ps -eo" not in line]


@pytest.mark.parametrize("kind", CONTAINMENTS)
def test_an_honest_program_passes_and_a_wrong_one_fails_at_its_first_failing_assertion(kind: str) -> None:
    assert execute(CodeJob(GOOD, TESTS, ("f",)), LIMITS, kind).passed
    wrong = execute(CodeJob("def f(x):\n    return 2\n", TESTS, ("f",)), LIMITS, kind)
    assert (wrong.status, wrong.detail) == ("failed", "assertion failed at line 2: assert f(41) == 42")


@pytest.mark.parametrize("kind", CONTAINMENTS)
def test_fork_bomb(kind: str) -> None:
    program = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n" + GOOD
    )
    started = time.monotonic()
    result = run(program, kind)
    assert result.status in ("timeout", "limit")
    assert time.monotonic() - started < 30
    time.sleep(0.5)
    assert not _processes_matching("/harness/worker.py") and not _processes_matching("sandbox/worker.py")


@pytest.mark.parametrize("kind", CONTAINMENTS)
def test_infinite_loop(kind: str) -> None:
    result = run("def f(x):\n    while True:\n        pass\n", kind)
    assert (result.status, result.limit) == ("limit", "cpu time")


@pytest.mark.parametrize("kind", CONTAINMENTS)
def test_memory_bomb(kind: str) -> None:
    result = run("def f(x):\n    hog = bytearray(8 << 30)\n    return x + 1\n", kind)
    assert (result.status, result.limit) == ("limit", "memory")


@pytest.mark.parametrize("kind", CONTAINMENTS)
def test_ten_gigabyte_file_write(kind: str) -> None:
    program = (
        "def f(x):\n    with open('big.bin', 'wb') as out:\n        for _ in range(10 * 1024):\n"
        "            out.write(b'0' * (1 << 20))\n    return x + 1\n"
    )
    result = run(program, kind)
    assert (result.status, result.limit) == ("limit", "file size")


@pytest.mark.parametrize("kind", CONTAINMENTS)
def test_writing_outside_the_temporary_folder(kind: str, tmp_path: Path) -> None:
    tmp_path.chmod(0o777)  # not the file mode: the sandbox must be what stops it
    targets = [tmp_path / "escaped.txt", Path(__file__).parent / "escaped-from-sandbox.txt"]
    program = (
        f"TARGETS = {[str(t) for t in targets]!r}\n"
        "def f(x):\n    wrote = 0\n    for target in TARGETS:\n        try:\n"
        "            with open(target, 'w') as out:\n                out.write('escaped')\n"
        "            wrote += 1\n        except OSError:\n            pass\n"
        "    return x + 1 if wrote else None\n"
    )
    result = run(program, kind)
    assert result.status == "failed"
    assert not any(t.exists() for t in targets)


@pytest.mark.parametrize("kind", CONTAINMENTS)
def test_opening_a_network_connection(kind: str) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connected: list[object] = []

    def accept() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not connected:
            with contextlib.suppress(OSError):
                connected.append(server.accept())

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    program = (
        "import socket\ndef f(x):\n    try:\n"
        f"        socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')\n"
        "        socket.create_connection(('1.1.1.1', 53), timeout=2)\n"
        "        return x + 1\n    except OSError:\n        return None\n"
    )
    result = run(program, kind)
    connected.append("done") if not connected else None
    thread.join()
    server.close()
    assert result.status == "failed"
    assert connected == ["done"]  # nothing ever reached the host's loopback server


@pytest.mark.parametrize("kind", CONTAINMENTS)
def test_killing_the_parent_and_everything_it_can_see(kind: str) -> None:
    program = (
        "import os, signal\ndef f(x):\n    for pid in [os.getppid(), 1] + list(range(2, 2000)):\n"
        "        if pid != os.getpid():\n            try:\n                os.kill(pid, signal.SIGKILL)\n"
        "            except OSError:\n                pass\n    return None\n"
    )
    result = run(program, kind)
    assert result.status in ("failed", "error")
    assert os.getppid() > 1  # this test process and its parent are alive


@pytest.mark.parametrize("kind", CONTAINMENTS)
def test_reading_environment_secrets(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSBENCH_TEST_SECRET", "hunter2-secret")
    program = (
        "import os, glob\ndef f(x):\n    seen = str(dict(os.environ))\n"
        "    for path in glob.glob('/proc/*/environ'):\n        try:\n"
        "            seen += open(path, 'rb').read().decode('latin-1')\n        except OSError:\n"
        "            pass\n    print(seen)\n    return x + 1 if 'hunter2' in seen else None\n"
    )
    result = run(program, kind)
    assert result.status == "failed"
    assert "hunter2" not in result.stdout + result.stderr + result.detail


@pytest.mark.parametrize("kind", CONTAINMENTS)
@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)"])
def test_exiting_before_the_tests_run(kind: str, exit_call: str) -> None:
    result = run(exit_call + "\n" + GOOD, kind)
    assert result.status == "error"
    # ... and inside the function under test, when the tests call it:
    result = run(f"def f(x):\n    {exit_call.replace(chr(10), '; ')}\n", kind)
    assert result.status == "error"


@pytest.mark.parametrize("kind", CONTAINMENTS)
def test_monkeypatching_the_harness_and_builtins(kind: str) -> None:
    program = (
        "import builtins, gc, sys\n"
        "class Never(Exception):\n    pass\n"
        "builtins.AssertionError = Never\n"
        "builtins.isinstance = lambda *a: True\n"
        "builtins.type = lambda *a: int\n"
        "for module in list(sys.modules.values()):\n"
        "    for name in ('encode', 'dumps', 'decode'):\n"
        "        if hasattr(module, name) and 'wire' in getattr(module, '__name__', ''):\n"
        "            setattr(module, name, lambda *a, **k: True)\n"
        "for thing in gc.get_objects():\n"
        "    if isinstance(thing, dict) and 'send' in thing and 'namespace' in thing:\n"
        "        thing['send'] = lambda *a: None\n"
        "def f(x):\n    return None\n"
    )
    result = run(program, kind)
    assert result.status in ("failed", "error")


@pytest.mark.parametrize("kind", CONTAINMENTS)
@pytest.mark.parametrize("base", ["object", "int", "str", "dict"])
def test_an_object_whose_eq_is_always_true(kind: str, base: str) -> None:
    program = (
        f"class Equal({base}):\n    def __eq__(self, other):\n        return True\n"
        "    def __ne__(self, other):\n        return False\n    __hash__ = object.__hash__\n"
        "def f(x):\n    return Equal()\n"
    )
    result = run(program, kind)
    assert result.status == "failed"


@pytest.mark.parametrize("kind", CONTAINMENTS)
def test_a_process_that_forks_and_outlives_its_parent(kind: str, tmp_path: Path) -> None:
    program = (
        "import os\ndef f(x):\n    if os.fork() == 0:\n        os.setsid()\n"
        "        os.execv('/bin/sleep', ['/bin/sleep', '31337'])\n    return None\n"
    )
    started = time.monotonic()
    result = run(program, kind)
    assert result.status == "failed"
    assert time.monotonic() - started < LIMITS.wall_s  # nobody waited for the child
    time.sleep(0.5)
    assert _processes_matching("sleep 31337") == []
