"""A copy through a chain of workers as one Command, and what a copy reports per node.

The Command pipes the head's `source` (docker save, tar -c) into the first worker's hop, the chain's
header ahead of the bytes (tasks/connect/chain.py holds the hop script and reads its status lines).
`run-recipe plan` prints this Command; the executor runs it."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence, TextIO

from ..connect.chain import HOP, Chain, Worker, chain_header, open_hops, read_chain
from . import execute
from .commands import Command, Stream


@dataclass
class NodeReport:
    name: str
    action: str  # "up-to-date" | "sent"
    bytes: int = 0  # payload bytes that reached this node
    files: int = 0  # weights: regular files rsync transferred
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Report:
    """What a distribution did, per node; returned only when every node is proven up to date."""

    what: str
    strategy: str
    nodes: list[NodeReport] = field(default_factory=list)
    bytes_sent: int = 0  # bytes that left the head
    stream_seconds: float = 0.0  # image: until the last byte left the head (the rest is loading/verifying)
    seconds: float = 0.0

    @property
    def sent_to(self) -> list[str]:
        return [n.name for n in self.nodes if n.action == "sent"]

    @property
    def up_to_date(self) -> list[str]:
        return [n.name for n in self.nodes if n.action == "up-to-date"]

    @property
    def rate(self) -> float:
        return self.bytes_sent / self.seconds if self.seconds > 0 else 0.0


def chain_command(source: Sequence[str], stale: Sequence[Worker], take: Callable[[Worker], str], label: str, *,
                  size: int | None = None, feed: Callable[[], bytes] | None = None, timeout: float | None = None,
                  stall_timeout: float = 60.0, take_timeout: float = 1800.0) -> Command:
    """The Command that streams `source`'s output once through `stale` (in order), each running `take(w)`
    on what arrives and forwarding it to the next."""
    plan = "; ".join(f"{w.name} runs {take(w)}" for w in stale)
    return Command(tuple(HOP), stale[0].name,
                   Stream(tuple(source), f"the chain's header: {plan}", lambda: chain_header(stale, take), feed,
                          size, f"{label} -> {', '.join(w.name for w in stale)}", stall_timeout, take_timeout,
                          tuple(w.name for w in stale)),
                   timeout=timeout)


def run_chain(command: Command, stale: Sequence[Worker], step: str, progress: TextIO | None) -> Chain:
    """Run a chain_command through the executor; what each worker of the chain took, and what failed."""
    assert isinstance(command.stdin, Stream)
    open_hops([stale])
    started = time.monotonic()
    pumped = execute.stream(stale[0].first, command, progress)
    return read_chain(pumped, stale, step, command.stdin.stall_timeout, command.shown(), started)
