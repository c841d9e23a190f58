"""Runs code jobs in a sandbox: bubblewrap where it works, else `unshare` namespaces, and rlimits.

Each job gets a process tree of its own: the judge (judge.py, trusted) and under it the worker
(worker.py, which runs the candidate). Both live in fresh PID, network, IPC, UTS and mount
namespaces with a private size-capped tmpfs as their only writable place; the worker drops to uid
65534 when tsbench runs as root (so that RLIMIT_NPROC binds: the kernel does not apply it to uid 0)
and has no capabilities. The whole tree is killed at the wall-clock limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tsbench.errors import UserError

CONTAINMENTS = ("bwrap", "unshare", "rlimits")
SANDBOX_ENV = "TSBENCH_SANDBOX"
HARNESS = Path(__file__).resolve().parent
NOBODY = 65534
SEARCH_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
# When the judge itself fails (killed by the candidate, say): keep its last words for the record.
JUDGE_TAIL = 2000


@dataclass(frozen=True)
class Limits:
    """Per-execution limits. The worker's are rlimits; wall time bounds the whole sandbox.

    Args:
        wall_s: wall-clock seconds for the whole execution, start-up included.
        cpu_s: CPU seconds of the worker (RLIMIT_CPU).
        memory_mb: the worker's address space (RLIMIT_AS).
        file_mb: largest file the worker may write (RLIMIT_FSIZE).
        disk_mb: size of each private tmpfs (the working folder, /tmp, /dev/shm).
        open_files: RLIMIT_NOFILE.
        processes: RLIMIT_NPROC: processes and threads of the sandbox user (per sandbox inside a
            user namespace of its own; as root, shared by the parallel sandboxes' uid 65534).
        output_kb: the worker's stdout and stderr are each kept up to this size.
        site_packages: let the candidate import the interpreter's third-party packages (off by
            default: the worker then starts in a third of the time, and HumanEval and MBPP need
            only the standard library).
    """

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 1024
    file_mb: int = 16
    disk_mb: int = 64
    open_files: int = 64
    processes: int = 64
    output_kb: int = 64
    site_packages: bool = False


@dataclass(frozen=True)
class CodeJob:
    """One candidate against one problem's tests.

    Args:
        program: what the worker runs: the candidate's code after any trusted prefix it may use.
        tests: what the judge runs; it calls the names in `functions`, answered by the worker.
        functions: the program's functions the tests call.
        context: trusted code the judge runs before the tests (imports, helpers the tests use).
    """

    program: str
    tests: str
    functions: tuple[str, ...]
    context: str = ""


@dataclass(frozen=True)
class ExecResult:
    """What happened to one execution.

    status: "passed", "failed" (an assertion or the test failed on what the candidate returned;
    detail names the first failing line), "error" (the program raised, did not load, or exited),
    "timeout" (wall clock) or "limit" (`limit` says which: cpu time, memory, file size,
    processes, open files). `containment` says which sandbox ran it.
    """

    status: str
    detail: str
    containment: str
    limit: str | None = None
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    calls: int = 0

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, **asdict(self)}


def _is_root() -> bool:
    return os.geteuid() == 0


def _python() -> str:
    return os.path.realpath(sys.executable)


def _python_roots() -> list[str]:
    """Folders the interpreter needs, outside /usr (a pyenv or venv prefix)."""
    found: list[str] = []
    for path in (sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(_python()).parent.parent)):
        real = os.path.realpath(path)
        if not real.startswith("/usr/") and real not in found:
            found.append(real)
    return [p for p in found if not any(p != q and p.startswith(q + "/") for q in found)]


def _worker_prefix(as_root: bool) -> list[str]:
    drop = ["--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
    if as_root:
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *drop]
    return ["setpriv", *drop]


def _bwrap(limits: Limits) -> tuple[list[str], dict[str, Any]]:
    size = str(limits.disk_mb << 20)
    command = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    command += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    root = _is_root()
    if not root:
        command.append("--unshare-user")
    for path in ("/usr", "/etc"):
        command += ["--ro-bind", path, path]
    for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            command += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            command += ["--ro-bind", path, path]
    for path in _python_roots():
        command += ["--ro-bind", path, path]
    command += ["--ro-bind", str(HARNESS), "/harness", "--proc", "/proc", "--dev", "/dev"]
    for path in ("/tmp", "/dev/shm", "/sandbox"):
        command += ["--perms", "1777", "--size", size, "--tmpfs", path]
    command += ["--chdir", "/sandbox", "--clearenv", "--setenv", "PATH", SEARCH_PATH]
    if root:  # the judge stays uid 0 with only these two, to start the worker as uid 65534
        command += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    command += ["--", _python(), "-I", "-S", "/harness/judge.py"]
    return command, {"harness": "/harness", "workdir": "/sandbox", "worker_prefix": _worker_prefix(root)}


def _reachable(path: str) -> str | None:
    """The topmost folder on the way to `path` that uid 65534 cannot enter, or None."""
    parts = Path(path).parts
    for i in range(2, len(parts) + 1):
        folder = os.path.join(*parts[:i])
        if os.path.isdir(folder) and not os.stat(folder).st_mode & 0o001:
            return folder
    return None


def _unshare(limits: Limits) -> tuple[list[str], dict[str, Any]]:
    root = _is_root()
    command = ["unshare", "--pid", "--fork", "--kill-child", "--net", "--ipc", "--uts", "--mount"]
    command += ["--mount-proc", "--propagation", "private"]
    if not root:
        command += ["--user", "--map-root-user"]
    options = f"size={limits.disk_mb}m,mode=1777"
    covered = [path for path in ("/tmp", "/dev/shm", "/var/tmp") if os.path.isdir(path)]
    needed = [*_python_roots(), str(HARNESS)]
    # An interpreter or checkout under a folder the private tmpfs covers (a venv in /tmp, as CI
    # makes) is bound aside first, on a private /mnt, and bound back once the tmpfs is in place.
    inside_covered = [p for p in needed if any(p == c or p.startswith(c + "/") for c in covered)]
    mounts: list[list[str]] = []
    if inside_covered:
        mounts.append(["mount", "-t", "tmpfs", "-o", "size=1m,mode=700", "tmpfs", "/mnt"])
        for n, path in enumerate(inside_covered):
            mounts += [["mkdir", f"/mnt/{n}", "700"], ["mount", "--rbind", path, f"/mnt/{n}"]]
    mounts += [["mount", "-t", "tmpfs", "-o", options, "tmpfs", path] for path in covered]
    for n, path in enumerate(inside_covered):
        mounts += [["mkdir", path, "755"], ["mount", "--rbind", f"/mnt/{n}", path]]
    mounts += [["mkdir", "/tmp/sandbox", "1777"], ["mkdir", "/tmp/.stash", "700"]]
    closed = sorted({f for f in map(_reachable, needed) if f is not None}) if root else []
    for n, folder in enumerate(closed):  # let uid 65534 through a closed folder, to these paths only
        stash = f"/tmp/.stash/{n}"
        mounts += [["mkdir", stash, "700"], ["mount", "--rbind", folder, stash]]
        mounts.append(["mount", "-t", "tmpfs", "-o", "size=1m,mode=755", "tmpfs", folder])
        for path in needed:
            if path.startswith(folder + "/"):
                inside = stash + path[len(folder) :]
                mounts += [["mkdir", path, "755"], ["mount", "--rbind", inside, path]]
    command += ["--", _python(), "-I", "-S", str(HARNESS / "judge.py")]
    extra = {"harness": str(HARNESS), "workdir": "/tmp/sandbox", "worker_prefix": _worker_prefix(root)}
    return command, {**extra, "mounts": mounts}


def _rlimits_only(limits: Limits, workdir: str) -> tuple[list[str], dict[str, Any]]:
    root = _is_root()
    if root:
        os.chown(workdir, NOBODY, NOBODY)
    command = [_python(), "-I", "-S", str(HARNESS / "judge.py")]
    return command, {"harness": str(HARNESS), "workdir": workdir, "worker_prefix": _worker_prefix(root)}


def _worker_env(workdir: str) -> dict[str, str]:
    """The worker's whole environment: nothing of the caller's."""
    return {
        "PATH": SEARCH_PATH,
        "HOME": workdir,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


@cache
def _works(kind: str) -> bool:
    """Whether this containment can run a trivial job here."""
    if kind != "rlimits" and shutil.which("bwrap" if kind == "bwrap" else "unshare") is None:
        return False
    if shutil.which("setpriv") is None:
        return False
    probe = CodeJob("def f():\n    return 1\n", "assert f() == 1\n", ("f",))
    try:
        return execute(probe, Limits(wall_s=30), kind).passed
    except (OSError, subprocess.SubprocessError):
        return False


def choose_containment(requested: str | None = None) -> str:
    """The containment to use: `requested`, else $TSBENCH_SANDBOX, else bwrap, else unshare.

    Raises UserError when none works (rlimits alone is never chosen unless asked for).
    """
    wanted = requested or os.environ.get(SANDBOX_ENV) or None
    if wanted is not None:
        if wanted not in CONTAINMENTS:
            raise UserError(f"{SANDBOX_ENV}={wanted}: unknown sandbox; use one of: {', '.join(CONTAINMENTS)}")
        if not _works(wanted):
            raise UserError(f"sandbox '{wanted}' does not work on this machine; {_fix()}")
        return wanted
    for kind in ("bwrap", "unshare"):
        if _works(kind):
            return kind
    raise UserError(f"no sandbox to run generated code in; {_fix()}")


def _fix() -> str:
    return (
        "install bubblewrap (`apt-get install bubblewrap`) or allow unprivileged user namespaces "
        f"(for `unshare`), or set {SANDBOX_ENV}=rlimits to run with resource limits only (unsafe: "
        "see docs/CODE_TASKS.md)"
    )


def execute(job: CodeJob, limits: Limits | None = None, containment: str | None = None) -> ExecResult:
    """Run one job in a fresh sandbox and return its structured result."""
    limits = limits or Limits()
    kind = containment or choose_containment()
    with tempfile.TemporaryDirectory(prefix="tsbench-exec-") as scratch:
        if kind == "bwrap":
            command, place = _bwrap(limits)
        elif kind == "unshare":
            command, place = _unshare(limits)
        else:
            command, place = _rlimits_only(limits, scratch)
        nonce = secrets.token_hex(16)
        payload = {
            **place,
            "nonce": nonce,
            "python": _python(),
            "program": job.program,
            "tests": job.tests,
            "context": job.context,
            "functions": list(job.functions),
            "limits": asdict(limits),
            "site_packages": limits.site_packages,
            "worker_env": _worker_env(place["workdir"]),
        }
        return _supervise(command, json.dumps(payload).encode(), nonce, kind, limits.wall_s)


def _supervise(command: list[str], payload: bytes, nonce: str, kind: str, wall_s: float) -> ExecResult:
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={"PATH": SEARCH_PATH},
        cwd="/",
    )
    try:
        out, err = process.communicate(payload, timeout=wall_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        process.communicate()
        took = time.monotonic() - started
        return ExecResult("timeout", f"ran past the wall-clock limit of {wall_s:g} s", kind, wall_s=took)
    took = time.monotonic() - started
    lines = out.decode("utf-8", "replace").splitlines()
    last = lines[-1] if lines else ""
    if process.returncode != 0 or not last.startswith(nonce + " "):
        tail = err.decode("utf-8", "replace")[-JUDGE_TAIL:]
        detail = f"the judge did not finish (exit status {process.returncode}): {tail.strip() or 'no output'}"
        return ExecResult("error", detail, kind, wall_s=took)
    found = json.loads(last[len(nonce) + 1 :])
    return ExecResult(
        status=found["status"],
        detail=found["detail"],
        containment=kind,
        limit=found.get("limit"),
        stdout=found.get("stdout", ""),
        stderr=found.get("stderr", ""),
        wall_s=took,
        calls=found.get("calls", 0),
    )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(process.pid, 9)


def execute_many(
    jobs: Sequence[CodeJob],
    limits: Limits | None = None,
    containment: str | None = None,
    parallel: int | None = None,
) -> list[ExecResult]:
    """Results of the jobs, in order, run up to `parallel` at a time (default: the core count)."""
    if not jobs:
        return []
    kind = containment or choose_containment()
    workers = max(1, min(len(jobs), parallel or os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: execute(job, limits, kind), jobs))
