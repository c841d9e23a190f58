"""MATH-style answers checked with math-verify, in a worker process that a time limit can kill.

Equivalence (`verdict_math_equivalent`) and canonical forms (`canonical_math_many`) both run
sympy on whatever a model wrote, which can take hours (towers of powers, huge factorials): each
runs in one worker process under a time limit; past it the worker is killed and replaced, the
check is graded false with status "timeout" (a canonical form falls back to the answer without
whitespace), and the next check goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from fractions import Fraction
from typing import Any

from tsbench.contracts import Verdict

MATH_VERIFY_TIMEOUT_S = 10.0  # one equivalence check
CANONICAL_TIMEOUT_S = 5.0  # one canonical form; well-formed answers take milliseconds
WORKER_START_TIMEOUT_S = 120.0  # importing sympy and math-verify in a fresh worker
WORKER_MEMORY_BYTES = 2 << 30  # on top of what the worker inherits
_POWER_DIGITS = 10_000  # evaluate a numeric power only up to about this many digits
_SYMBOLIC_EXPONENT = 1_000  # and a power of anything else only up to this exponent
_FACTORIAL_ARGUMENT = 10_000  # and factorial-like functions only of arguments up to this


def _limit_worker_memory() -> None:
    # A hostile answer can allocate gigabytes within its time limit; past the cap it fails with
    # MemoryError instead, which math-verify and the canonical form treat as a failed check.
    try:
        import resource

        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        inherited = int(fields["VmData"].split()[0]) * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        cap = inherited + WORKER_MEMORY_BYTES
        resource.setrlimit(resource.RLIMIT_DATA, (cap if hard < 0 else min(cap, hard), hard))
    except (ImportError, OSError, KeyError, ValueError):
        pass  # not Linux: the time limit still holds


def _warm_worker() -> None:
    import math_verify  # noqa: F401


def _math_verify_worker(answer: str, reference: str) -> bool:
    from math_verify import parse, verify

    # Timeouts off inside the worker: math-verify's own timeouts use SIGALRM, which only works on
    # the main thread. The parent enforces the limit by abandoning the worker process instead.
    gold = parse(f"${reference}$", parsing_timeout=None)
    pred = parse(f"${answer}$", parsing_timeout=None)
    return bool(verify(gold, pred, timeout_seconds=None))


class _TooBig(Exception):
    """Evaluating would build a number too large to hold; the unevaluated form stands instead."""


def _exact_float(value: Any) -> Any:
    """A Float as math-verify compares it (rounded to 6 decimals): the simplest fraction with a
    denominator up to 100 that rounds the same (0.333333 -> 1/3, 0.5 -> 1/2), else exactly.

    Up to 100, because fractions with larger denominators lie so close together that many a
    plain decimal would land on one (0.1234567 on 10/81).
    """
    from sympy import Rational

    text = str(value)
    try:
        with localcontext() as context:
            context.prec = 60
            rounded = Decimal(text).quantize(Decimal("1e-6"), ROUND_HALF_EVEN)
    except InvalidOperation:  # too large to carry 6 decimals: already beyond a float's precision
        return Rational(text)
    exact = Fraction(rounded)
    simple = exact.limit_denominator(100)
    with localcontext() as context:
        context.prec = 60
        simple_rounded = (Decimal(simple.numerator) / Decimal(simple.denominator)).quantize(
            Decimal("1e-6"), ROUND_HALF_EVEN
        )
    chosen = simple if simple_rounded == rounded else exact
    return Rational(chosen.numerator, chosen.denominator)


def _digits(number: Any) -> float:
    import math

    p, q = number.as_numer_denom() if not number.is_Integer else (number, 1)
    return max(math.log10(max(abs(int(p)), 1)), math.log10(max(abs(int(q)), 1)))


def _evaluate(node: Any) -> Any:
    """Evaluate math-verify's unevaluated parse bottom-up, refusing the few operations that would
    run for minutes or exhaust memory (towers of powers, factorials of huge numbers): a bound
    checked before the work is the same on every machine, where a time limit is not."""
    from sympy import Float, Number, Pow, UnevaluatedExpr, factorial, factorial2, subfactorial
    from sympy.functions.combinatorial.factorials import FallingFactorial, RisingFactorial, binomial
    from sympy.functions.combinatorial.numbers import fibonacci, lucas
    from sympy.functions.special.gamma_functions import gamma

    if isinstance(node, Float):
        return _exact_float(node)
    if not node.args:
        return node
    args = [_evaluate(arg) for arg in node.args]
    if isinstance(node, UnevaluatedExpr):
        return args[0]
    if isinstance(node, Pow):
        base, exponent = args
        if exponent.is_Number and abs(exponent) > 1:
            if base.is_Number:
                if (
                    abs(base) != 1
                    and base != 0
                    and (
                        abs(exponent) > _POWER_DIGITS**2
                        or float(abs(exponent)) * _digits(base) > _POWER_DIGITS
                    )
                ):
                    raise _TooBig
            elif abs(exponent) > _SYMBOLIC_EXPONENT:
                raise _TooBig
    factorial_like = (factorial, factorial2, subfactorial, binomial, gamma, fibonacci, lucas)
    if isinstance(node, (*factorial_like, RisingFactorial, FallingFactorial)) and any(
        isinstance(arg, Number) and abs(arg) > _FACTORIAL_ARGUMENT for arg in args
    ):
        raise _TooBig
    return node.func(*args)


def _solved_for(node: Any) -> Any:
    # 'x = 5' means 5, as math-verify grades it; also inside sets and tuples ('a=1, b=2').
    from sympy import Eq, FiniteSet, Symbol, Tuple

    if isinstance(node, Eq) and isinstance(node.lhs, Symbol):
        return node.rhs
    if isinstance(node, (FiniteSet, Tuple)):
        return node.func(*[_solved_for(arg) for arg in node.args])
    return node


def _tidy(node: Any) -> Any:
    """Rational functions (radicals and pi allowed as constants) in cancelled, expanded form, so
    (x+1)^2 and x^2+2x+1, or (1+\\sqrt2)^2 and 3+2\\sqrt2, share a form; elementwise in containers."""
    from sympy import Expr, FiniteSet, Interval, Tuple, cancel

    if isinstance(node, (FiniteSet, Tuple, Interval)):
        return node.func(*[_tidy(arg) for arg in node.args])
    if isinstance(node, Expr) and not node.is_Number and node.is_rational_function():
        return cancel(node)
    return node


def _canonical_worker(answer: str) -> str | None:
    """math-verify's reading of an answer as a string, or None when it reads no math."""
    from math_verify import parse
    from sympy import Basic, ImmutableMatrix, MatrixBase

    # math-verify grades '50\%' equal to 50 (and to 0.5); MATH's percent answers are written as 50.
    text = answer.replace("\\%", "").replace("%", "")
    parsed = parse(f"${text}$", parsing_timeout=None)
    found = next((p for p in parsed if isinstance(p, (Basic, MatrixBase))), None)
    if found is None:
        return None
    if isinstance(found, MatrixBase):
        found = ImmutableMatrix(found)
    found = _solved_for(found)
    try:
        value = _tidy(_evaluate(found))
    except _TooBig:
        value = found
    return str(value)


_Outcome = tuple[str, Any]  # ("ok", value) | ("timeout", None) | ("error", message)


class _MathVerifyPool:
    """One worker process, replaced whenever a call runs past its time limit or kills it."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        # One caller at a time: a timeout replaces the worker, which would fail another's call.
        self._lock = threading.Lock()

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            # fork: the worker starts in milliseconds and runs whatever function it is handed,
            # module attributes patched included.
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_limit_worker_memory,
            )
            # The import counts against no answer's time limit.
            self._pool.submit(_warm_worker).result(timeout=WORKER_START_TIMEOUT_S)
        return self._pool

    def _discard(self) -> None:
        if self._pool is not None:
            # Listed before shutdown(), which forgets them; killed after it, so that the pool's
            # manager thread sees a shutdown and not a crash to recover from.
            processes = list((getattr(self._pool, "_processes", None) or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for proc in processes:
                proc.kill()
            for proc in processes:
                proc.join(5)
            self._pool = None

    def run(
        self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], timeout_s: float
    ) -> list[_Outcome]:
        """fn(*args) for each args in calls, in order, each under its own time limit.

        All calls are queued at once (one round trip's latency, not one per call); the worker runs
        them in order, so each call's clock starts when the one before it returned.
        """
        outcomes: list[_Outcome] = []
        with self._lock:
            pending = list(calls)
            while pending:
                try:
                    pool = self._started()
                    futures: list[Future[Any]] = [pool.submit(fn, *args) for args in pending]
                except (FutureTimeout, BrokenProcessPool, OSError) as exc:
                    self._discard()
                    outcomes += [("error", f"worker did not start: {exc!r}")] * len(pending)
                    break
                for index, future in enumerate(futures):
                    try:
                        outcomes.append(("ok", future.result(timeout=timeout_s)))
                        continue
                    except FutureTimeout:
                        outcomes.append(("timeout", None))
                    except BrokenProcessPool as exc:  # the worker died (killed, out of memory)
                        outcomes.append(("error", repr(exc)))
                    except Exception as exc:  # raised inside fn; the worker is fine
                        outcomes.append(("error", repr(exc)))
                        continue
                    self._discard()
                    pending = pending[index + 1 :]
                    break
                else:
                    pending = []
        return outcomes


_MATH_POOL = _MathVerifyPool()


def verdict_math_equivalent(answer: str | None, reference: str, timeout_s: float | None = None) -> Verdict:
    """Symbolic equivalence with math-verify, in a worker process under a time limit (so it works off
    the main thread, and an answer that makes sympy run for hours costs only the limit)."""
    if answer is None:
        return Verdict(False, "no_answer")
    if answer.strip() == reference.strip():
        return Verdict(True)
    limit = MATH_VERIFY_TIMEOUT_S if timeout_s is None else timeout_s
    status, value = _MATH_POOL.run(_math_verify_worker, [(answer, reference)], limit)[0]
    if status == "ok":
        return Verdict(bool(value))
    return Verdict(False, status)


def grade_math_equivalent(answer: str | None, reference: str) -> bool:
    return verdict_math_equivalent(answer, reference).correct


def _unparsed(answer: str) -> str:
    return "".join(answer.split())


_CANONICAL_CACHE: dict[str, str] = {}
_CANONICAL_CACHE_SIZE = 100_000


def canonical_math_many(answers: Sequence[str], timeout_s: float | None = None) -> list[str]:
    r"""math-verify's normal form of each answer, computed in one batch in the worker process.

    The form is sympy's str() of the answer as math-verify parses it, evaluated: '\frac12',
    '\dfrac{1}{2}', '0.5', '1/2' all give '1/2'; '\{2,1\}' gives '{1, 2}'; '(x+1)^2' gives
    'x**2 + 2*x + 1'. An answer math-verify reads no math in, or whose reading fails or runs past
    the time limit, falls back to its text with all whitespace removed.
    """
    limit = CANONICAL_TIMEOUT_S if timeout_s is None else timeout_s
    todo = sorted({a for a in answers if a not in _CANONICAL_CACHE})
    if todo:
        if len(_CANONICAL_CACHE) + len(todo) > _CANONICAL_CACHE_SIZE:
            _CANONICAL_CACHE.clear()
        for answer, (status, value) in zip(
            todo, _MATH_POOL.run(_canonical_worker, [(a,) for a in todo], limit), strict=True
        ):
            _CANONICAL_CACHE[answer] = value if status == "ok" and value is not None else _unparsed(answer)
    return [_CANONICAL_CACHE[a] for a in answers]


def canonical_math(answer: str) -> str:
    return canonical_math_many([answer])[0]
