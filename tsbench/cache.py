"""A generation cache shared by runs: a sample already drawn is read back, not generated again.

Each sample is one row of an SQLite file (WAL mode, so several processes read and write it at
once), keyed by everything that determines it: the runner (model file sha256, model id, engine and
version, dtype, runner name and options, and the code that decodes), the request (messages,
continuation, temperature, top_p, max_tokens, stop strings, logprobs) and the sample's own seed
and index. A request whose samples are all stored is answered from the file; one with some
stored sends only the others to the engine, with their own seeds.

What it does not change: costs. A cached sample carries its prompt and generated tokens, so the
ledger charges it what generating it cost; its timings are those measured when it was generated;
only the `cached` count of its result (CachedResult) says it was read back.

Resume stays exact. Inside a continuous-batching session (one group of problems) samples are
written when the session closes with every request answered, so a group killed half way is
generated again whole, in the same batches as before; outside a session each generate call's
samples are written in one transaction when it returns.

Location: $TSBENCH_GENERATION_CACHE (a file, or a folder to hold generations.sqlite; `off` turns
it off), else generations.sqlite in tsbench's cache folder ($TSBENCH_CACHE, else ~/.cache/tsbench).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tsbench.contracts import Completion, GenerationRequest, GenerationResult, RunnerInfo
from tsbench.errors import UserError
from tsbench.identity import digest, source_digest

ENV = "TSBENCH_GENERATION_CACHE"
OFF = ("off", "0", "no", "false", "none", "")
FILE_NAME = "generations.sqlite"
BUSY_TIMEOUT_MS = 60_000


@dataclass
class CachedResult(GenerationResult):
    """A result some of whose completions were read from the cache (`cached` of them)."""

    cached: int = 0


def cache_path(environ: dict[str, str] | None = None) -> Path | None:
    """Where the cache lives, or None when $TSBENCH_GENERATION_CACHE turns it off."""
    env = os.environ if environ is None else environ
    value = env.get(ENV)
    if value is not None:
        if value.strip().lower() in OFF:
            return None
        path = Path(value).expanduser()
        return path / FILE_NAME if path.is_dir() else path
    # $TSBENCH_CACHE is tsbench's cache folder (model hashes, converted models too).
    return Path(env.get("TSBENCH_CACHE") or Path.home() / ".cache" / "tsbench") / FILE_NAME


class GenerationCache:
    """The SQLite file: sample key -> the sample as JSON. Safe across processes (WAL, one
    transaction per write, INSERT OR IGNORE: the first sample stored under a key is kept)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS samples (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        except (OSError, sqlite3.Error) as exc:
            raise UserError(
                f"generation cache {path} cannot be opened ({exc}); set {ENV} to a writable "
                f"file, or {ENV}=off to run without a cache"
            ) from None
        self.broken: str | None = None

    def get(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        if self.broken or not keys:
            return {}
        marks = ",".join("?" * len(keys))
        try:
            rows = self.db.execute(f"SELECT key, value FROM samples WHERE key IN ({marks})", list(keys))
            return {key: json.loads(value) for key, value in rows}
        except sqlite3.Error as exc:
            self._give_up(exc)
            return {}

    def put(self, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if self.broken or not rows:
            return
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany(
                    "INSERT OR IGNORE INTO samples (key, value) VALUES (?, ?)",
                    [(key, json.dumps(value, sort_keys=True)) for key, value in rows],
                )
        except sqlite3.Error as exc:
            self._give_up(exc)

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def _give_up(self, exc: sqlite3.Error) -> None:
        """A cache that fails mid-run (a full disk, a lock held too long) is dropped, not fatal:
        the run generates what it cannot read, and records are unaffected."""
        self.broken = str(exc)
        print(f"tsbench: warning: generation cache {self.path} disabled for this run: {exc}", file=sys.stderr)

    def close(self) -> None:
        self.db.close()


def runner_key(info: RunnerInfo, runner: Any, name: str, model: str | None, options: dict[str, Any]) -> str:
    """What determines a runner's samples, besides the request: model, engine, options, code."""
    return digest(
        {
            "model_sha256": info.model_sha256,
            # A server's model has no file here: its id and the address stand for it.
            "model": None if info.model_sha256 else (model, info.model_id),
            "engine": info.engine,
            "engine_version": info.engine_version,
            "dtype": info.dtype,
            "runner": name,
            "runner_options": options,
            "runner_code_sha256": source_digest(
                [
                    runner,
                    *getattr(runner, "code_modules", ()),
                    "tsbench.runners.sampling",
                    "tsbench.runners.chat",
                ]
            ),
        }
    )


def sample_keys(runner: str, request: GenerationRequest) -> list[str]:
    """One key per sample of the request: the request's fields, the sample's seed and index."""
    fields = {
        "runner": runner,
        "messages": request.messages,
        "continuation": request.continuation,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
        "stop": request.stop,
        "logprobs": request.logprobs,
    }
    # Added only when set, so that samples stored before these fields keep their keys.
    if request.min_tokens:
        fields["min_tokens"] = request.min_tokens
    if not request.template:
        fields["template"] = False
    if request.template_options:
        fields["template_options"] = request.template_options
    return [digest({**fields, "seed": request.seed_for(i), "index": i}) for i in range(request.n)]


def _stored(completion: Completion, result: GenerationResult, share: int) -> dict[str, Any]:
    return {
        "completion": asdict(completion),
        "prompt_tokens": result.prompt_tokens,
        "ttft_s": result.ttft_s,
        "engine_s": None if result.engine_s is None else result.engine_s / max(1, share),
    }


@dataclass
class _Lookup:
    """A request split into what the cache holds and the sample indices it must generate."""

    request: GenerationRequest
    keys: list[str]
    found: dict[int, dict[str, Any]]
    missing: list[int]

    def trimmed(self) -> GenerationRequest:
        seeds = tuple(self.request.seed_for(i) for i in self.missing)
        return replace(self.request, n=len(self.missing), seeds=seeds)

    def merged(self, fresh: GenerationResult | None) -> CachedResult:
        completions: list[Completion] = []
        generated = iter(fresh.completions if fresh else [])
        for i in range(self.request.n):
            completions.append(
                Completion(**self.found[i]["completion"]) if i in self.found else next(generated)
            )
        first = next(iter(self.found.values()), None)
        shares = [v["engine_s"] for v in self.found.values() if v["engine_s"] is not None]
        if fresh is None:
            assert first is not None
            return CachedResult(
                completions,
                int(first["prompt_tokens"]),
                0,
                max((c.latency_s for c in completions), default=0.0),
                first["ttft_s"],
                sum(shares) if shares else None,
                cached=len(self.found),
            )
        engine_s = None if fresh.engine_s is None else fresh.engine_s + sum(shares)
        return CachedResult(
            completions,
            fresh.prompt_tokens,
            fresh.prompt_tokens_computed,
            fresh.total_s,
            fresh.ttft_s,
            engine_s,
            cached=len(self.found),
        )

    def rows(self, fresh: GenerationResult) -> list[tuple[str, dict[str, Any]]]:
        return [
            (self.keys[i], _stored(c, fresh, len(self.missing)))
            for i, c in zip(self.missing, fresh.completions, strict=True)
        ]


class CachedRunner:
    """A runner that reads stored samples and sends only the others to the runner it wraps.

    It passes for the wrapped runner everywhere else (info, prompt counting, its module and
    code_modules for the run's identity), so a run's identity does not depend on the cache."""

    def __init__(self, runner: Any, cache: GenerationCache, key: str) -> None:
        self._runner, self._cache, self._key = runner, cache, key
        self.__module__ = getattr(runner, "__module__", type(self).__module__)
        self._buffer: list[tuple[str, dict[str, Any]]] | None = None  # set while a session is open
        self.hits = 0
        self.misses = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    def info(self) -> RunnerInfo:
        info: RunnerInfo = self._runner.info()
        return info

    def lookup(self, request: GenerationRequest) -> _Lookup:
        keys = sample_keys(self._key, request)
        stored = self._cache.get(keys)
        found = {i: stored[k] for i, k in enumerate(keys) if k in stored}
        self.hits += len(found)
        self.misses += request.n - len(found)
        return _Lookup(request, keys, found, [i for i in range(request.n) if i not in found])

    def store(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        if self._buffer is not None:
            self._buffer += rows
        else:
            self._cache.put(rows)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        lookups = [self.lookup(r) for r in requests]
        todo = [found for found in lookups if found.missing]
        fresh = self._runner.generate([found.trimmed() for found in todo]) if todo else []
        by_lookup = {id(found): result for found, result in zip(todo, fresh, strict=True)}
        rows = [row for found, result in zip(todo, fresh, strict=True) for row in found.rows(result)]
        self.store(rows)
        return [found.merged(by_lookup.get(id(found))) for found in lookups]

    def close(self) -> None:
        try:
            self._runner.close()
        finally:
            self._cache.close()


class CachedSessionRunner(CachedRunner):
    """The same, for a runner that batches continuously (contracts.OpensSessions)."""

    def open_session(self) -> CachedSession:
        return CachedSession(self, self._runner.open_session())


class CachedSession:
    """A GenerationSession that answers fully stored requests at its next step, sends the rest
    (trimmed to their missing samples) to the wrapped session, and stores what it generated when
    it closes with nothing outstanding (a group cut short is generated again whole)."""

    def __init__(self, owner: CachedRunner, inner: Any) -> None:
        self.owner, self.inner = owner, inner
        self.ready: list[tuple[int, GenerationResult]] = []
        self.waiting: dict[int, tuple[int, _Lookup]] = {}  # inner key -> (our key, lookup)
        self.next_key = 0
        owner._buffer = []

    def add(self, request: GenerationRequest) -> int:
        key, self.next_key = self.next_key, self.next_key + 1
        found = self.owner.lookup(request)
        if found.missing:
            self.waiting[self.inner.add(found.trimmed())] = (key, found)
        else:
            self.ready.append((key, found.merged(None)))
        return key

    def step(self) -> list[tuple[int, GenerationResult]]:
        if self.ready:
            done, self.ready = self.ready, []
            return done
        if not self.waiting:
            return []
        finished: list[tuple[int, GenerationResult]] = []
        for inner_key, result in self.inner.step():
            key, found = self.waiting.pop(inner_key)
            self.owner.store(found.rows(result))
            finished.append((key, found.merged(result)))
        return finished

    def close(self) -> None:
        rows, self.owner._buffer = self.owner._buffer or [], None
        try:
            self.inner.close()
        finally:
            if not self.waiting and not self.ready:
                self.owner.store(rows)


def with_cache(runner: Any, name: str, model: str | None, options: dict[str, Any]) -> Any:
    """The runner behind the generation cache, or the runner itself when the cache is off."""
    path = cache_path()
    if path is None:
        return runner
    cache = GenerationCache(path)
    key = runner_key(runner.info(), runner, name, model, options)
    wrapper = CachedSessionRunner if callable(getattr(runner, "open_session", None)) else CachedRunner
    return wrapper(runner, cache, key)
