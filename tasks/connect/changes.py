"""A command that may change its node is announced to whoever listens: the facts cache, which forgets
that node's answers. The transport knows nothing of what is cached above it; the cache subscribes.

Commands the executor runs (a step's, a stop's, a gateway's) reach the node through run and feed, so they
are heard here like the rest (a copy's own commands).
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

