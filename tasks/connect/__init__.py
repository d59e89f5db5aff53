"""The connector: the one place that turns a node and a command into what runs there.

One interface, two machines: `Local` (this machine) and `Ssh` (fabric over SSH, host
keys verified, ssh.py) both `read`, `run` and `feed`, and give `argv_for(argv)`, the command line
that runs argv on their node from a pipeline here. Bulk bytes and hops inside pipelines go through
a link (link.py: `Here` or OpenSSH's `SshLink`, measured 1.2-2x as fast as a paramiko channel, with
the same host-key policy); options.py defines OpenSSH's options, shared connections, timeouts and
keepalives once; streams.py pumps bytes between two commands; chain.py runs the copy chains. No
module outside this folder builds an ssh argv.
"""
from __future__ import annotations

from typing import Protocol, Sequence, TextIO, runtime_checkable

from ..nodes import Node
from .link import HERE, QUERY_TIMEOUT, Here, Link, SshLink, call, link_to, peer_link_to, quote_path, remote_path
from .local import Local, Result, tail
from .options import SshSettings, close_shared_connections
from .streams import Pumped
from .ssh import ChangedHostKeyError, HostKeyError, Ssh, UnknownHostKeyError

__all__ = ["Carrier", "HERE", "QUERY_TIMEOUT", "ChangedHostKeyError", "Connector", "Here", "HostKeyError", "Link",
           "Local", "Pumped", "Ssh", "Result", "SshLink", "SshSettings", "UnknownHostKeyError", "call",
           "close_shared_connections", "connector_for", "head_first", "link_to", "peer_link_to", "quote_path",
           "remote_path", "tail"]


class Connector(Protocol):
    """What every caller holds for a node: Local or Ssh."""

    node: str

    def read(self, argv: list[str], *, check: bool = True, timeout: float = 60) -> Result: ...

    def run(self, argv: list[str], *, stream: bool = True, timeout: float | None = None,
            check: bool = True) -> Result: ...

    def feed(self, argv: list[str], data: bytes, *, timeout: float | None = 600, check: bool = True) -> Result: ...

    def argv_for(self, argv: list[str]) -> list[str]: ...


@runtime_checkable
class Carrier(Connector, Protocol):
    """A connector that also carries bulk bytes to its node from here (SshLink): rsync, a pumped stream."""

    def send(self, argv: list[str], data: bytes, *, timeout: float | None = None, check: bool = True) -> Result: ...

    def pump(self, source: list[str], argv: list[str], *, ahead: bytes = b"", feed: bytes | None = None,
             label: str = "", size: int | None = None, progress: TextIO | None = None,
             timeout: float | None = None, stall_timeout: float = 60.0, take_timeout: float = 1800.0) -> Pumped: ...


def connector_for(node: Node, settings: SshSettings) -> Connector:
    """The machine running the tool gets a Local; every other node goes over SSH."""
    return Local() if node.local else Ssh(node, settings)


def head_first(nodes: Sequence[Node], settings: SshSettings) -> list[Connector]:
    """A run's runners: the head first, as this machine whatever address the list gives it (the tool
    runs on the head), named as the list names it so its errors say what -n said; then every other
    node over SSH."""
    head = Local()
    if nodes:
        head.node = nodes[0].target
    return [head, *(Ssh(n, settings) for n in nodes[1:])]
