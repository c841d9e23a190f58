"""The OpenAI-compatible servers behind one runner: HTTP calls to them with retries, which one
takes the next request, which are down, when a down one is tried again, and the one line a failed
call becomes.

Requests go to the live endpoint with the fewest requests in flight (ties: the first listed), so a
slow server gets fewer. An endpoint whose call failed for good (connection refused or reset, timed
out, a stream cut off, a 5xx after its retries) is taken out; after `revive_s` the next request
that finds no better choice probes it (GET /models) and puts it back if it answers.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tsbench.errors import UserError

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
RETRY_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)
NONSENSE = (ValueError, KeyError, TypeError, IndexError, AttributeError)


class EndpointDown(RuntimeError):
    """A server kept answering a retryable status (429, 5xx) after every retry."""


class StreamCut(RuntimeError):
    """A stream ended before its finish_reason: the server went away mid-sample."""


class ServerError(UserError, RuntimeError):
    """The server stopped answering, failed a request or answered nonsense: one line for the
    user (exit code 2); finished problems stay in the run folder, so a rerun resumes."""


def server_error(base_url: str, exc: BaseException) -> ServerError:
    """The one line a failed call becomes, by what went wrong."""
    if isinstance(exc, ServerError):
        return exc
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return ServerError(
            f"the server at {base_url} did not answer in time ({exc}); check it is not overloaded or raise "
            "the runner option timeout_s, then run the same command again to resume"
        )
    if isinstance(exc, RETRY_ERRORS + (OSError, StreamCut)):
        reason = getattr(exc, "reason", None) or exc
        return ServerError(
            f"the server at {base_url} stopped answering ({reason}); restart it, then run the same "
            "command again to resume (finished problems are kept)"
        )
    if isinstance(exc, RuntimeError):
        return ServerError(
            f"the server at {base_url} failed a request: {exc}; check the server's log, then run the "
            "same command again to resume"
        )
    return ServerError(
        f"the server at {base_url} answered something that is not an OpenAI-compatible completion "
        f"({type(exc).__name__}: {str(exc)[:120]}); check that base_url is an OpenAI-compatible /v1 address"
    )


def parse_base_urls(value: Any) -> list[str]:
    """One URL, a comma-separated string of them (how --runner-arg passes a list), or a list."""
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = [str(item).strip().rstrip("/") for item in items if str(item).strip()]
    if not urls:
        raise UserError(f"base_url {value!r} holds no address; give e.g. http://127.0.0.1:8000/v1")
    if len(set(urls)) != len(urls):
        raise UserError(f"base_url {value!r} names an address twice; list each server once")
    return urls


class NoLiveEndpoint(Exception):
    """Every endpoint is down and none answered a probe."""


@dataclass
class Endpoint:
    """One server and its tally: requests sent, samples completed, calls failed."""

    url: str
    in_flight: int = 0
    sent: int = 0
    completed: int = 0
    failures: int = 0
    down_since: float | None = None
    probing: bool = field(default=False, repr=False)


class EndpointPool:
    """Args:
    urls: the servers' /v1 addresses.
    probe: url -> whether the server answers now (a short GET /models).
    revive_s: how long a down endpoint stays out before it is probed again.
    clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        urls: list[str],
        probe: Callable[[str], bool],
        revive_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints = [Endpoint(url) for url in urls]
        self.probe, self.revive_s, self.clock = probe, revive_s, clock
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.endpoints)

    def live(self) -> list[str]:
        with self.lock:
            return [e.url for e in self.endpoints if e.down_since is None]

    def acquire(self) -> Endpoint:
        """The endpoint for the next request, counted as in flight until release().

        Raises:
            NoLiveEndpoint: all are down, and those due for a probe did not answer it.
        """
        while True:
            self.revive_due()
            with self.lock:
                live = [e for e in self.endpoints if e.down_since is None]
                if live:
                    chosen = min(live, key=lambda e: e.in_flight)  # min keeps the first of a tie
                    chosen.in_flight += 1
                    chosen.sent += 1
                    return chosen
                if not any(e.probing for e in self.endpoints):
                    raise NoLiveEndpoint
            time.sleep(0.05)  # another thread's probe may put one back

    def _revive(self, endpoint: Endpoint) -> None:
        answered = self.probe(endpoint.url)
        with self.lock:
            endpoint.probing = False
            endpoint.down_since = None if answered else self.clock()

    def revive_due(self) -> None:
        """Probe the down endpoints whose wait is over, putting back those that answer."""
        with self.lock:
            due = [
                e
                for e in self.endpoints
                if e.down_since is not None and not e.probing and self.clock() - e.down_since >= self.revive_s
            ]
            for endpoint in due:
                endpoint.probing = True
        for endpoint in due:
            self._revive(endpoint)

    def release(self, endpoint: Endpoint, completed: bool) -> None:
        with self.lock:
            endpoint.in_flight -= 1
            endpoint.completed += int(completed)

    def mark_down(self, endpoint: Endpoint) -> None:
        with self.lock:
            endpoint.failures += 1
            endpoint.down_since = self.clock()

    def stats(self) -> dict[str, dict[str, int | bool]]:
        """url -> sent, completed, failures, live: what each server did for this runner."""
        with self.lock:
            return {
                e.url: {
                    "sent": e.sent,
                    "completed": e.completed,
                    "failures": e.failures,
                    "live": e.down_since is None,
                }
                for e in self.endpoints
            }


def served_models(
    pool: EndpointPool, list_models: Callable[[str], bytes]
) -> tuple[dict[str, list[str]], BaseException | None]:
    """url -> the models it serves, for the servers that answer (the others are marked down), and
    the first failure met (why one did not answer).

    Args:
        pool: the servers.
        list_models: url -> the raw body of its GET /models.
    """
    served: dict[str, list[str]] = {}
    failure: BaseException | None = None
    for endpoint in pool.endpoints:
        try:
            listed = list_models(endpoint.url)
        except (OSError, RuntimeError) as exc:
            failure = failure or exc
            pool.mark_down(endpoint)
            continue
        try:
            served[endpoint.url] = [str(m["id"]) for m in json.loads(listed).get("data", [])]
        except NONSENSE as exc:
            raise server_error(endpoint.url, exc) from None
        if not served[endpoint.url]:
            raise UserError(f"the server at {endpoint.url} lists no models; start it with a model")
    return served, failure


def same_model(model: str | None, served: dict[str, list[str]]) -> str:
    """The model every answering server serves: `model`, or the first server's first."""
    wanted = model or next(iter(served.values()))[0]
    for url, models in served.items():
        if wanted not in models:
            raise UserError(
                f"the server at {url} does not serve {wanted} (it serves {', '.join(models)}); "
                "every base_url must serve the same model"
            )
    return wanted


class Servers:
    """HTTP to the servers: calls and streams with retries and backoff, and the pool that says
    which server takes the next sample.

    Args:
        urls: the servers' /v1 addresses.
        api_key: bearer token, or None.
        timeout_s: per request.
        retries: attempts after the first on a retryable failure.
        backoff_s: the first wait before a retry, doubled each time.
        revive_s: how long a server that stopped answering stays out before a probe.
    """

    def __init__(
        self,
        urls: list[str],
        api_key: str | None,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        revive_s: float,
    ) -> None:
        self.api_key, self.timeout_s, self.retries, self.backoff_s = api_key, timeout_s, retries, backoff_s
        self.pool = EndpointPool(urls, self.answers, revive_s)

    def open(
        self, method: str, path: str, body: dict[str, Any] | None, base: str, timeout_s: float | None = None
    ) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        url = path if path.startswith("http") else base + path
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        return urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s)

    def retry_or_raise(self, exc: Exception, attempt: int, method: str, path: str) -> None:
        """Back off before the next attempt, or raise when `exc` is final or attempts are spent."""
        if isinstance(exc, urllib.error.HTTPError) and (
            exc.code not in RETRY_STATUS or attempt == self.retries
        ):
            detail = exc.read().decode(errors="replace")[:300]
            failure = EndpointDown if exc.code in RETRY_STATUS else RuntimeError
            raise failure(f"{method} {path} failed: HTTP {exc.code}: {detail}") from None
        if attempt == self.retries:
            raise exc
        time.sleep(self.backoff_s * 2**attempt)

    def call(self, method: str, path: str, body: dict[str, Any] | None, base: str | None = None) -> bytes:
        """One HTTP call with retries, to `base` or a live server; returns the raw body."""
        base = base or self.any_live()
        for attempt in range(self.retries + 1):
            try:
                with self.open(method, path, body, base) as response:
                    return bytes(response.read())
            except RETRY_ERRORS as exc:
                self.retry_or_raise(exc, attempt, method, path)
        raise AssertionError("unreachable")

    def stream(self, path: str, body: dict[str, Any], base: str) -> Iterator[dict[str, Any]]:
        """Server-sent events of a streamed completion, each as it arrives.

        A stream that fails before its first event is retried whole; one that fails later raises,
        since its events are already used.
        """
        for attempt in range(self.retries + 1):
            seen = False
            try:
                with self.open("POST", path, body, base) as response:
                    for raw in response:  # one line at a time, as the server sends it
                        line = raw.strip()
                        if not line.startswith(b"data:"):
                            continue
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            return
                        seen = True
                        yield json.loads(data)
                return
            except RETRY_ERRORS as exc:
                if seen:
                    raise
                self.retry_or_raise(exc, attempt, "POST", path)

    def answers(self, url: str) -> bool:
        """Whether the server at `url` lists its models now (one short try, no retries)."""
        try:
            with self.open("GET", "/models", None, url, timeout_s=min(5.0, self.timeout_s)) as response:
                response.read()
            return True
        except (*RETRY_ERRORS, OSError, RuntimeError):
            return False

    def any_live(self) -> str:
        """A live server for calls that any of them can answer (token counts, tokenizer routes)."""
        live = self.pool.live()
        return live[0] if live else self.pool.endpoints[0].url
