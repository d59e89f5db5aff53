"""The memory guard on the nodes: refuse a start that does not fit, wait for memory after a stop.

The judging is tasks/facts/memory.py's (pure); the facts are preflight's gathering (a cluster run
has them already; a solo run reads them here, on this machine).
"""
from __future__ import annotations

import re
import time
from typing import Any, Callable, Mapping, Sequence

from ..cluster import preflight
from ..errors import RunError
from ..facts import cache as facts, docker, memory as memory_guard
from ..connect import Connector

RELEASE_WAIT = 60.0  # seconds a stop waits for the memory to come back
RELEASE_POLL = 1.0
CPU_KV_ENV = "VLLM_CPU_KVCACHE_SPACE"  # GiB of KV cache vLLM's CPU build takes; wins over the flag below
KV_FLAG = "--kv-cache-memory-bytes"
# vLLM's human_readable_int: digits, or a number with a decimal (k m g t) or binary (K M G T) unit
KV_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30,
            "T": 1 << 40}


def fraction(plan: Any) -> float:
    """The share of memory the server will take: its --gpu-memory-utilization, else vLLM's default."""
    value = plan.vllm.option("--gpu-memory-utilization")
    try:
        return float(value) if value is not None else memory_guard.DEFAULT_FRACTION
    except ValueError:
        return memory_guard.DEFAULT_FRACTION  # vLLM will refuse the value itself, with its own message


def cpu_kv_bytes(plan: Any, image_env: Mapping[str, str]) -> int | None:
    """The KV cache size a server of vLLM's CPU build is given, as its CPU platform reads it:
    VLLM_CPU_KVCACHE_SPACE in GiB (the recipe's env, which the launch script exports over -e's, which
    win over the image's ENV), else --kv-cache-memory-bytes; None when neither is set or vLLM would
    refuse the value itself."""
    env = {**image_env, **plan.docker_env, **plan.recipe.env}
    text = str(env.get(CPU_KV_ENV, "")).strip()
    if text:
        return int(text) << 30 if text.isascii() and text.isdigit() else None
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgtKMGT]?)", (plan.vllm.option(KV_FLAG) or "").strip())
    return int(float(found.group(1)) * KV_UNITS[found.group(2)]) if found else None


def guard(runners: Sequence[Connector], plan: Any, replaced: Sequence[bool] = ()) -> list[memory_guard.Verdict]:
    """Judge every node for the plan's server; raise a RunError naming each short node with its numbers
    unless --force. A CPU plan is judged against system RAM (memory_guard.judge).

    A node whose old server was just removed (`replaced`) gets time to give its memory back first."""
    share, kv = fraction(plan), None
    if plan.cpu:  # the ENV of the head's image: the workers run its copy
        kv = cpu_kv_bytes(plan, (docker.image_info(runners[0], plan.build.tag) or {}).get("env") or {})

    def now(runner: Connector) -> memory_guard.Verdict:
        return memory_guard.judge(runner.node, preflight.read_memory(runner), share, cpu=plan.cpu, kv_bytes=kv)

    def judge(runner: Connector, settling: bool) -> memory_guard.Verdict:
        verdict = now(runner)
        if verdict.fits is False and settling and wait_released(runner, verdict.need) is None:
            verdict = now(runner)
        return verdict

    verdicts = [judge(r, settling) for r, settling in zip(runners, [*replaced, *[False] * len(runners)])]
    if not plan.options.force and any(v.fits is False for v in verdicts):
        raise RunError(memory_guard.refusal(verdicts), node=next(v.node for v in verdicts if v.fits is False))
    return verdicts


def wait_released(runner: Connector, need: int, timeout: float = RELEASE_WAIT, poll: float = RELEASE_POLL,
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

