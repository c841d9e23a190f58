"""The worker: the one process that runs a candidate's code. Untrusted from its first line on.

Run by the judge as `python -I worker.py HARNESS_DIR LIMITS_JSON REQUEST_FD REPLY_FD`. It lowers
its own resource limits (hard and soft: it holds no capability to raise them again), runs the
candidate's program, then answers the judge's calls: a function name and plain arguments in, a
plain value or the name of the exception raised out. Nothing it sends can pass a test by itself:
the tests, and every comparison they make, run in the judge.
"""

import importlib.util
import json
import os
import resource
import sys


def _limit(which: int, value: int) -> None:
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        # Never raise a limit: keep the lower hard limit the process already has.
        hard = resource.getrlimit(which)[1]
        if hard == resource.RLIM_INFINITY or value < hard:
            raise
        resource.setrlimit(which, (hard, hard))


def set_limits(limits: dict) -> None:
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU first, SIGKILL a second later
    _limit(resource.RLIMIT_AS, int(limits["memory_mb"]) << 20)
    _limit(resource.RLIMIT_FSIZE, int(limits["file_mb"]) << 20)
    _limit(resource.RLIMIT_NOFILE, int(limits["open_files"]))
    _limit(resource.RLIMIT_NPROC, int(limits["processes"]))
    _limit(resource.RLIMIT_CORE, 0)


def raised(exc: BaseException) -> dict:
    errno = getattr(exc, "errno", None)
    try:
        text = str(exc)[:2000]
    except BaseException:
        text = "(unprintable)"
    return {"raise": type(exc).__name__, "msg": text, "errno": errno if type(errno) is int else None}


def main() -> None:
    harness, limits, request_fd, reply_fd = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
    spec = importlib.util.spec_from_file_location("tsbench_sandbox_wire", os.path.join(harness, "wire.py"))
    assert spec is not None and spec.loader is not None
    wire = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wire)
    requests = os.fdopen(int(request_fd), "rb")
    replies = os.fdopen(int(reply_fd), "wb", buffering=0)
    set_limits(limits)
    del sys.argv[1:]

    def send(message: dict) -> None:
        try:
            replies.write(wire.dumps(message))
        except (TypeError, ValueError) as exc:  # a float nan inside a dict key, say
            replies.write(wire.dumps({"raise": "TypeError", "msg": f"reply not encodable: {exc}"}))

    first = wire.read_message(requests)
    if first is None:
        os._exit(3)
    namespace: dict = {"__name__": "__candidate__", "__builtins__": __builtins__}
    try:
        exec(compile(first["program"], "<candidate>", "exec"), namespace)
    except BaseException as exc:  # SystemExit included: a program that exits has not loaded
        send({"loaded": False, **raised(exc)})
    else:
        send({"loaded": True})
    while True:
        request = wire.read_message(requests)
        if request is None:
            os._exit(0)
        try:
            function = namespace.get(request["call"])
            if not callable(function):
                raise NameError(f"the program defines no function {request['call']!r}")
            args = wire.decode(request["args"])
            kwargs = wire.decode(request["kwargs"])
            value = function(*args, **kwargs)
            reply = {"value": wire.encode(value)}
        except BaseException as exc:
            reply = raised(exc)
        send(reply)


if __name__ == "__main__":
    main()
