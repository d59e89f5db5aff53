"""The memory guard on the nodes: refuse a start that does not fit, wait for memory after a stop.

The judging is tasks/memory_guard.py's (pure); the facts are preflight's gathering (a cluster run
has them already; a solo run reads them here, on this machine).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from . import facts, memory_guard, preflight
from .docker import Runner
from .errors import RunError

RELEASE_WAIT = 60.0  # seconds a stop waits for the memory to come back
RELEASE_POLL = 1.0


def fraction(plan: Any) -> float:
    """The share of memory the server will take: its --gpu-memory-utilization, else vLLM's default."""
    value = plan.vllm.option("--gpu-memory-utilization")
    try:
        return float(value) if value is not None else memory_guard.DEFAULT_FRACTION
    except ValueError:
        return memory_guard.DEFAULT_FRACTION  # vLLM will refuse the value itself, with its own message


def guard(runners: Sequence[Runner], share: float, force: bool,
          replaced: Sequence[bool] = ()) -> list[memory_guard.Verdict]:
    """Judge every node; raise a RunError naming each short node with its numbers unless `force`.

    A node whose old server was just removed (`replaced`) gets time to give its memory back first."""
    def judge(runner: Runner, settling: bool) -> memory_guard.Verdict:
        verdict = memory_guard.judge(runner.node, preflight.read_memory(runner), share)
        if verdict.fits is False and settling and wait_released(runner, verdict.need) is None:
            verdict = memory_guard.judge(runner.node, preflight.read_memory(runner), share)
        return verdict

    verdicts = [judge(r, settling) for r, settling in zip(runners, [*replaced, *[False] * len(runners)])]
    if not force and any(v.fits is False for v in verdicts):
        raise RunError(memory_guard.refusal(verdicts), node=next(v.node for v in verdicts if v.fits is False))
    return verdicts


def wait_released(runner: Runner, need: int, timeout: float = RELEASE_WAIT, poll: float = RELEASE_POLL,
                  clock: Callable[[], float] = time.monotonic) -> memory_guard.Memory | None:
    """Wait (at most `timeout`) until `need` bytes are free again on the node; None once they are,
    else the last memory facts (whose holders say who keeps it)."""
    deadline = clock() + timeout
    while True:
        facts.forget(runner.node)
        memory = preflight.read_memory(runner)
        if memory_guard.released(memory, need):
            return None
        if clock() >= deadline:
            return memory
        time.sleep(poll)
