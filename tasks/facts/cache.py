"""Facts about each node, asked once per run: read-only answers kept until that node changes.

A run asks the same things several times: the build check, the mods check and the launch check
each want the image's ID, preflight and the launch both want the engine's runtimes, every check of
a cluster wants each worker's containers. Each answer is kept here, keyed by (node, fact, args), and
forgotten when a command that changes that node runs (the executor forgets it after each command,
ops/execute.py) or a copy lands on it. One process is one run, so nothing is kept across runs (pyinfra dropped its cross-run cache as
not worth its complexity). `asked` counts what really went to a node, for the tests.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Callable, Hashable, TypeVar


T = TypeVar("T")
Key = tuple[str, str, Hashable]
_LOCK = threading.Lock()
_KNOWN: dict[Key, Any] = {}
_ASKING: dict[Key, "_InFlight"] = {}      # asks in flight: another thread waits for their outcome
_CHANGES: Counter[str] = Counter()          # per node, how often it changed: an answer begun before is stale
asked: Counter[Key] = Counter()


class _InFlight:
    """One ask under way: set when it ends; `error` is what it raised, for the threads that waited."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None


def fact(node: str, name: str, args: Hashable, ask: Callable[[], T]) -> T:
    """The answer to `name(args)` on `node`: asked (through `ask`) the first time, then remembered.
    While another thread is asking the same thing, its outcome is awaited rather than asked twice:
    its answer, or its error (an engine that hangs costs one timeout, not two).

    An `ask` that raises is not remembered: the next check asks again. An answer is not kept when
    the node changed while it was being asked."""
    key = (node, name, args)
    while True:
        with _LOCK:
            if key in _KNOWN:
                return _KNOWN[key]
            other = _ASKING.get(key)
            if other is None:
                mine = _ASKING[key] = _InFlight()
                changes = _CHANGES[node]
                break
        other.done.wait()
        if other.error is not None:
            raise other.error
        # answered: it is in _KNOWN, unless the node changed meanwhile (then ask ourselves)
    try:
        value = ask()
        with _LOCK:
            asked[key] += 1
            if _CHANGES[node] == changes:
                _KNOWN[key] = value
        return value
    except BaseException as exc:
        mine.error = exc
        raise
    finally:
        with _LOCK:
            del _ASKING[key]
        mine.done.set()


def gather(asks: list[Callable[[], Any]]) -> None:
    """Start asking several facts at once, in the background (each call goes through `fact`, so a
    check that needs one of them waits for its answer instead of asking again).

    A no-op run asks the local engine three things before its checks can answer; each `docker` call
    is mostly the client starting, so asking them side by side, while the run goes on loading doit,
    saves most of their time. A failing ask is not remembered: the step waiting for it gets its
    error and reports it in its place."""
    for ask in asks:
        threading.Thread(target=_quietly, args=(ask,), daemon=True).start()


def _quietly(ask: Callable[[], Any]) -> None:
    try:
        ask()
    except Exception:  # noqa: BLE001 - not remembered; the step waiting for it reports the error
        pass


def remember(node: str, name: str, args: Hashable, value: Any) -> None:
    """A fact learnt on the way (preflight's one gathering call tells the engine's facts too)."""
    with _LOCK:
        _KNOWN[(node, name, args)] = value


def forget(node: str) -> None:
    """Something on `node` changed (a build, a container started, a copy): ask it again next time."""
    with _LOCK:
        _CHANGES[node] += 1
        for key in [k for k in _KNOWN if k[0] == node]:
            del _KNOWN[key]


