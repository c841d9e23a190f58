"""Our beam search keeps the same beams, round by round, as search-and-learn's loop
(huggingface/search-and-learn, src/sal/search/beam_search.py), written again below from its
definition and run on the same scripted tree and scores."""

from __future__ import annotations

from collections import Counter

import pytest
from test_search_doubles import ScriptedRunner, ScriptedVerifier, hashed, solve

from tsbench.strategies.beam_search import BeamSearch
from tsbench.verifiers.base import aggregate

Steps = tuple[str, ...]


def tree(parent: str, index: int, seed: int = 0) -> tuple[str, str]:
    """The k-th sample from a parent: five distinct first steps (so root samples collide), three
    distinct next steps; about one step in six ends the solution at EOS."""
    name = f"{parent}.{index % 3}" if parent else f"s{index % 5}"
    return name, "eos" if hashed(name) < 0.17 else "stop"


def value(step: str) -> float:
    return hashed(step + "/value")


def sal_beam_search(n: int, m: int, how: str, iterations: int) -> tuple[list[list[Steps]], list[set[Steps]]]:
    """search-and-learn's beam search with filter_duplicates on, on `tree`.

    Each iteration: the active beams are repeated to n, (active * repeats)[:n]; each copy writes
    one step (the k-th copy of a beam being its k-th sample); a beam whose step ended at EOS or
    the cap, or is empty, is complete and leaves the active set; duplicates are dropped, and the
    n // m best by aggregated score stay active. search-and-learn keeps the active beams in the
    order they were generated, which decides which beams take the extra copies when n is not a
    multiple of their number; here (as in ours) the best-scored take them.

    Returns:
        The beams kept after each iteration (best first), and the solutions completed by then.
    """
    active: list[Steps] = [()]
    completed: set[Steps] = set()
    kept, done = [], []
    for _ in range(iterations):
        if not active:
            break
        copies = Counter[Steps]()
        candidates = []
        for beam in (active * (n // len(active) + 1))[:n]:
            text, reason = tree(beam[-1] if beam else "", copies[beam])
            copies[beam] += 1
            if reason in ("eos", "length") or not text:
                completed.add(beam + ((text,) if text else ()))
            else:
                candidates.append(beam + (text,))
        unique = list(dict.fromkeys(candidates))
        active = sorted(unique, key=lambda beam: -aggregate([value(s) for s in beam], how))[: n // m]
        kept.append(active)
        done.append(set(completed))
    return kept, done


@pytest.mark.parametrize(
    ("n", "m", "how"), [(8, 2, "last"), (12, 4, "min"), (9, 2, "prod"), (10, 2, "mean"), (16, 4, "last")]
)
def test_beam_search_keeps_the_beams_search_and_learn_keeps(n: int, m: int, how: str) -> None:
    verifier = ScriptedVerifier()
    verifier.value = value  # type: ignore[method-assign]
    attempt = solve(BeamSearch(beam_width=m, aggregate=how, max_steps=40), ScriptedRunner(tree), verifier, n)
    rounds = attempt.trace["rounds"]
    kept, done = sal_beam_search(n, m, how, len(rounds))
    assert len(rounds) >= 3
    for r, ours in enumerate(rounds):
        assert [tuple(k["steps"]) for k in ours["kept"]] == kept[r], f"round {r + 1}"
        completed = {tuple(c["steps"]) for past in rounds[: r + 1] for c in past["completed"]}
        assert completed == done[r], f"round {r + 1}"
    # Ours stops at n // m distinct solutions, which search-and-learn would go on past.
    assert len(done[-1]) >= n // m or not kept[-1]
