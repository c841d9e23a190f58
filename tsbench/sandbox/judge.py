"""The judge: runs a problem's tests against a candidate that lives in another process.

Run inside the sandbox as `python -I -S judge.py HARNESS_DIR`, the job on stdin (read whole, then
closed). It starts the worker (worker.py) with the candidate's program, then runs the trusted
test code here, where the function under test is a proxy: each call goes to the worker as plain
data and its plain result comes back, so the test's assertions and comparisons are the judge's
own. The judge prints one line at the end, `NONCE RESULT_JSON`; the caller believes a result only
from a judge that exited 0 and printed the nonce it was given, which the worker cannot read (it
never held it: the judge is not dumpable, so the worker cannot read its memory, and the worker's
stdout is the judge's pipe, not the caller's).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as errnos
import json
import os
import signal
import subprocess
import sys
import threading
import traceback
from typing import Any

PR_SET_DUMPABLE = 4
LIMIT_ERRNOS = {errnos.EAGAIN: "processes", errnos.EMFILE: "open files", errnos.EFBIG: "file size"}
LIMIT_SIGNALS = {signal.SIGXCPU: "cpu time", signal.SIGKILL: "cpu time", signal.SIGXFSZ: "file size"}


class WorkerGone(Exception):
    """The worker died, or sent what no honest worker sends."""


class CandidateRaised(Exception):
    """The candidate's function raised; the test sees this instead."""

    def __init__(self, reply: dict) -> None:
        super().__init__(f"{reply.get('raise')}: {reply.get('msg')}")
        self.reply = reply


class Capture:
    """Reads a stream to its end, keeping the first `cap` bytes."""

    def __init__(self, stream: Any, cap: int) -> None:
        self.kept, self.dropped, self.cap = bytearray(), 0, cap
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        while chunk := stream.read1(65536):
            room = self.cap - len(self.kept)
            self.kept += chunk[: max(0, room)]
            self.dropped += max(0, len(chunk) - max(0, room))

    def text(self) -> str:
        note = f"\n[... {self.dropped} more bytes dropped]" if self.dropped else ""
        return self.kept.decode("utf-8", "replace") + note


def load_wire(harness: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tsbench_sandbox_wire", os.path.join(harness, "wire.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def not_dumpable() -> None:
    """No ptrace, no /proc/PID/mem, fd or environ of this process for the worker."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def mount_setup(steps: list) -> None:
    """The unshare fallback's mounts, made by the judge as root of its own namespaces."""
    for step in steps:
        if step[0] == "mkdir":
            os.makedirs(step[1], exist_ok=True)
            os.chmod(step[1], int(step[2], 8))
        else:
            subprocess.run(
                ["mount", *step[1:]], check=True, capture_output=True, env={"PATH": "/usr/bin:/bin"}
            )


class Worker:
    def __init__(self, job: dict, wire: Any) -> None:
        self.wire = wire
        request_r, self.request_w = os.pipe()
        self.reply_r, reply_w = os.pipe()
        site = [] if job["site_packages"] else ["-S"]
        argv = [
            *job["worker_prefix"],
            job["python"],
            "-I",
            "-u",
            *site,
            os.path.join(job["harness"], "worker.py"),
        ]
        argv += [job["harness"], json.dumps(job["limits"]), str(request_r), str(reply_w)]
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(request_r, reply_w),
            cwd=job["workdir"],
            env=job["worker_env"],
            start_new_session=True,
        )
        os.close(request_r)
        os.close(reply_w)
        self.requests = os.fdopen(self.request_w, "wb", buffering=0)
        self.replies = os.fdopen(self.reply_r, "rb")
        cap = int(job["limits"]["output_kb"]) << 10
        self.stdout, self.stderr = Capture(self.process.stdout, cap), Capture(self.process.stderr, cap)
        self.calls = 0

    def exchange(self, message: dict) -> dict:
        try:
            self.requests.write(self.wire.dumps(message))
            reply = self.wire.read_message(self.replies)
        except (OSError, ValueError, RecursionError) as exc:
            raise WorkerGone(f"broken reply: {exc}") from None
        if reply is None:
            raise WorkerGone("the worker closed its reply pipe")
        return reply

    def load(self, program: str) -> dict:
        return self.exchange({"program": program})

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        self.calls += 1
        wire = self.wire
        reply = self.exchange({"call": name, "args": wire.encode(list(args)), "kwargs": wire.encode(kwargs)})
        if "value" in reply:
            try:
                return wire.decode(reply["value"])
            except (ValueError, TypeError, RecursionError) as exc:
                raise WorkerGone(f"malformed value: {exc}") from None
        if "raise" in reply:
            raise CandidateRaised(reply)
        raise WorkerGone("reply is neither a value nor an exception")

    def exit_status(self) -> int | None:
        try:
            return self.process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for capture in (self.stdout, self.stderr):
            capture.thread.join(0.5)  # a forked child may hold the pipe open: do not wait for it


def proxy(worker: Worker, name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        return worker.call(name, args, kwargs)

    call.__name__ = name
    return call


def raised_outcome(reply: dict) -> dict:
    name, code = reply.get("raise"), reply.get("errno")
    detail = f"{name}: {reply.get('msg')}"
    if name == "MemoryError":
        return {"status": "limit", "limit": "memory", "detail": detail}
    if name in ("BlockingIOError", "OSError", "PermissionError") and code in LIMIT_ERRNOS:
        return {"status": "limit", "limit": LIMIT_ERRNOS[code], "detail": detail}
    return {"status": "error", "detail": detail}


def gone_outcome(worker: Worker, why: str) -> dict:
    status = worker.exit_status()
    if status is not None and status < 0 and -status in LIMIT_SIGNALS:
        limit = LIMIT_SIGNALS[signal.Signals(-status)]
        return {
            "status": "limit",
            "limit": limit,
            "detail": f"worker killed by {signal.Signals(-status).name}",
        }
    shown = "still running" if status is None else f"exit status {status}"
    return {"status": "error", "detail": f"{why} ({shown})"}


def failing_line(exc: BaseException, source: str) -> str:
    lines = source.splitlines()
    number = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == "<tests>":
            number = line
    text = lines[number - 1].strip() if number and 0 < number <= len(lines) else "?"
    message = str(exc)
    return f"line {number}: {text}" + (f" ({message[:300]})" if message else "")


def run_tests(job: dict, worker: Worker) -> dict:
    loaded = worker.load(job["program"])
    if not loaded.get("loaded"):
        if "raise" in loaded:
            outcome = raised_outcome(loaded)
            outcome["detail"] = "program did not load: " + outcome["detail"]
            return outcome
        raise WorkerGone("no load reply")
    namespace = {"__name__": "__tests__"}
    exec(compile(job["context"], "<context>", "exec"), namespace)
    for name in job["functions"]:
        namespace[name] = proxy(worker, name)
    try:
        exec(compile(job["tests"], "<tests>", "exec"), namespace)
    except AssertionError as exc:
        return {"status": "failed", "detail": "assertion failed at " + failing_line(exc, job["tests"])}
    except CandidateRaised as exc:
        return raised_outcome(exc.reply)
    except WorkerGone:
        raise
    except Exception as exc:  # the test itself raised on what the candidate returned
        return {"status": "failed", "detail": f"{type(exc).__name__} at " + failing_line(exc, job["tests"])}
    return {"status": "passed", "detail": ""}


def main() -> None:
    job = json.loads(sys.stdin.buffer.read())
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)  # fd 0 again: a pipe made later must not take it
    not_dumpable()
    sys.set_int_max_str_digits(100_000)
    mount_setup(job.get("mounts", []))
    wire = load_wire(job["harness"])
    worker = Worker(job, wire)
    try:
        outcome = run_tests(job, worker)
    except WorkerGone as exc:
        outcome = gone_outcome(worker, str(exc))
    except RecursionError:
        outcome = {"status": "error", "detail": "recursion too deep in the tests"}
    worker.stop()
    outcome.update(stdout=worker.stdout.text(), stderr=worker.stderr.text(), calls=worker.calls)
    sys.stdout.write(job["nonce"] + " " + json.dumps(outcome) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
