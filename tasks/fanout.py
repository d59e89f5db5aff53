"""The one fan-out: the same work on many nodes (or files) at once.

The work is SSH and docker round trips, or disk reads, not Python computing: threads spend it
waiting, so a few of them overlap what would otherwise add up node after node. Every caller gets the
same contract, decided here once: answers in item order, every item runs to its end (one node's
error does not leave another half-asked), then the first error in item order is raised. A caller
that reports each node's failure catches it inside `fn` and returns what it wants said.
"""
from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

WORKERS = 8  # threads at most: enough to overlap a cluster's round trips without flooding sshd


def each(fn: Callable[[T], R], items: Sequence[T], workers: int = WORKERS, name: str = "") -> list[R]:
    """fn over items at once, answers in item order; the first exception (in item order) is raised
    after every item has finished. One item runs here, in this thread: it has nothing to overlap.

    `name` prefixes the threads' names, so a stack dump says whose they are."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    # here: a run whose every fan-out has one item (solo) never loads it
    from concurrent.futures import ThreadPoolExecutor, wait

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))), thread_name_prefix=name) as pool:
        futures = [pool.submit(fn, item) for item in items]
        wait(futures)
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error
    return [future.result() for future in futures]
