"""A command that may change its node is announced to whoever listens: the facts cache, which forgets
that node's answers. The transport knows nothing of what is cached above it; the cache subscribes.

Commands the executor runs are forgotten there too (after each step's commands); this covers the rest
(a stop, a watcher's restart, a copy's own commands), which still reach a node without a step's Change.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

T = TypeVar("T")
_LISTENERS: list[Callable[[str], None]] = []


def listen(listener: Callable[[str], None]) -> None:
    """Hear the name of every node a changing command ran on, once it ended (well or not)."""
    if listener not in _LISTENERS:
        _LISTENERS.append(listener)


def announced(method: Callable[..., T]) -> Callable[..., T]:
    """For a runner's methods that change its node: the listeners hear the node once the command ends."""
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        finally:
            for listener in list(_LISTENERS):
                listener(self.node)
    return wrapper

