"""How a pipeline reaches a node: `Here` (this machine) or `SshLink` (OpenSSH), one interface.

Bulk bytes (`docker save | … docker load`, rsync, tar streams, chain hops) and quick queries inside
them go through the OpenSSH client, with the same host-key policy as ssh.py (options.py): it moved
200 MB 1.2-2.0x as fast as a paramiko channel of the same fabric connection (bench/ssh_stream.py on
two netns nodes of a shared 2-core host, medians in MB/s: 122/60, 138/114, 197/110), and rsync and
the chain hops need it anyway.

A caller holds a link and asks it: `argv_for(argv)` (a command as ONE quoted word behind ssh, so no
value reaches a remote shell unquoted), `script_argv` (a script whose `~/` arguments expand on the
node), `rsync_shell`/`rsync_target` (rsync's `-e` and destination) and `call` (one bounded command,
its failure a RunError naming node and step). No module outside tasks/connect/ builds an ssh argv.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from typing import Sequence, TextIO

from ..errors import RunError
from ..nodes import Node
from .local import Result, checked, tail
from .options import SshSettings, peer_ssh, ssh_argv, ssh_prefix
from .streams import Progress, Pumped, pump

QUERY_TIMEOUT = 30.0  # an image inspect / manifest / hash listing over ssh


def quote_path(path: str) -> str:
    """Quote a path for a remote shell; a leading ~/ becomes "$HOME"/ (quoting would stop the expansion)."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def remote_path(dest: str, path: str) -> str:
    """rsync's `[user@]host:path` for an ssh destination: an IPv6 address (zone or not) goes in brackets,
    or rsync would split it at its first colon."""
    user, at, host = dest.rpartition("@")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{user}{at}{host}:{path}"


def call(cmd: Sequence[str], *, node: str, step: str, timeout: float = QUERY_TIMEOUT,
         input: bytes | None = None, ok: Sequence[int] = (0,)) -> subprocess.CompletedProcess:
    """One command line run here with a timeout; RunError naming node, step, command and stderr tail."""
    cmd = list(cmd)
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RunError(f"{step} on {node} timed out after {timeout:.0f} s", node=node,
                       command=shlex.join(cmd)) from None
    except FileNotFoundError:
        raise RunError(f"{step} on {node}: '{cmd[0]}' is not installed", node=node,
                       command=shlex.join(cmd)) from None
    if proc.returncode not in ok:
        raise RunError(f"{step} failed on {node}", node=node, command=shlex.join(cmd),
                       exit_code=proc.returncode, tail=tail(proc.stderr.decode(errors="replace")))
    return proc


class Here:
    """This machine inside a pipeline: commands run as they are, `~/` expands here."""

    label = "local"

    def argv_for(self, argv: Sequence[str], from_head: bool = True) -> list[str]:
        return list(argv)

    def script_argv(self, script: str, args: Sequence[str]) -> list[str]:
        return ["sh", "-c", script, "rr", *[os.path.expanduser(a) for a in args]]

    def call(self, argv: Sequence[str], *, step: str, node: str | None = None, timeout: float = QUERY_TIMEOUT,
             input: bytes | None = None, ok: Sequence[int] = (0,)) -> subprocess.CompletedProcess:
        return call(self.argv_for(argv), node=node or self.label, step=step, timeout=timeout, input=input, ok=ok)


HERE = Here()


@dataclass(frozen=True)
class SshLink:
    """A node over OpenSSH. `argv` is `ssh <options> destination` as options.py makes it (link_to,
    peer_link_to), or as a test harness makes it with its own keys; `name` is how errors call the node."""

    argv: tuple[str, ...]
    name: str = ""

    @property
    def dest(self) -> str:
        return self.argv[-1]

    @property
    def label(self) -> str:
        return self.name or self.dest

    @property
    def node(self) -> str:
        """What the executor and errors call the node (the Connector protocol's name)."""
        return self.label

    def read(self, argv: list[str], *, check: bool = True, timeout: float = QUERY_TIMEOUT) -> Result:
        """A query on the node, captured and bounded."""
        return checked(self.label, argv, self.call(argv, step="query", timeout=timeout, ok=range(256)), check)

    def run(self, argv: list[str], *, stream: bool = False, timeout: float | None = None,
            check: bool = True) -> Result:
        """A changing command on the node, captured (a copy's small commands: refs, removals)."""
        proc = self.call(argv, step=argv[0], timeout=timeout or QUERY_TIMEOUT, ok=range(256))
        return checked(self.label, argv, proc, check)

    def feed(self, argv: list[str], data: bytes, *, timeout: float | None = 600, check: bool = True) -> Result:
        """A changing command on the node with `data` on its stdin."""
        proc = self.call(argv, step=argv[0], timeout=timeout or QUERY_TIMEOUT, input=data, ok=range(256))
        return checked(self.label, argv, proc, check)

    def send(self, argv: list[str], data: bytes, *, timeout: float | None = None, check: bool = True) -> Result:
        """rsync from here to the node: `argv` ends in `NODE:path`; this link becomes its transport (`-e`)
        and its destination, so a plan shows the same argv whatever this process's ssh sockets are."""
        *words, target = argv
        node, path = target[:len(self.label)], target[len(self.label) + 1:]
        assert node == self.label, f"{target} does not name {self.label}"
        full = [words[0], "-e", self.rsync_shell(), *words[1:], self.rsync_target(path)]
        proc = call(full, node=self.label, step="rsync", timeout=timeout or QUERY_TIMEOUT, input=data, ok=range(256))
        return checked(self.label, full, proc, check)

    def pump(self, source: list[str], argv: list[str], *, ahead: bytes = b"", feed: bytes | None = None,
             label: str = "", size: int | None = None, progress: TextIO | None = None,
             timeout: float | None = None, stall_timeout: float = 60.0, take_timeout: float = 1800.0) -> Pumped:
        """`source` here, its output (after `ahead`) streamed into `argv` on the node; bounded by a
        stall watchdog, `timeout` for the whole stream and `take_timeout` once the last byte left."""
        return pump(source, self.argv_for(argv), Progress(label or self.label, size, progress), timeout,
                    stall_timeout, take_timeout, ahead=ahead, feed=feed)

    def argv_for(self, argv: Sequence[str], from_head: bool = True) -> list[str]:
        """argv run on the node as ONE quoted word; `from_head=False` for a hop run on another worker."""
        return [*ssh_prefix(self.argv, from_head), shlex.join(list(argv))]

    def script_argv(self, script: str, args: Sequence[str]) -> list[str]:
        """A script and its arguments; a `~/` path argument expands on the node via its shell."""
        words = [shlex.quote(w) for w in ("sh", "-c", script, "rr")] + [quote_path(a) for a in args]
        return [*ssh_prefix(self.argv), " ".join(words)]

    def rsync_shell(self) -> str:
        """rsync's `-e` value: this link's ssh without the destination (rsync adds its own)."""
        return shlex.join(ssh_prefix(self.argv)[:-1])

    def rsync_target(self, path: str) -> str:
        return remote_path(self.dest, path)

    def call(self, argv: Sequence[str], *, step: str, node: str | None = None, timeout: float = QUERY_TIMEOUT,
             input: bytes | None = None, ok: Sequence[int] = (0,)) -> subprocess.CompletedProcess:
        return call(self.argv_for(argv), node=node or self.label, step=step, timeout=timeout, input=input, ok=ok)


Link = Here | SshLink


def link_to(node: Node, settings: SshSettings, name: str = "") -> SshLink:
    """How this machine's pipelines reach `node`: the same checks as its fabric connection."""
    return SshLink(tuple(ssh_argv(node, settings)), name)


def peer_link_to(node: Node, name: str = "") -> SshLink:
    """How another worker reaches `node` in a copy chain (the worker's own keys and known_hosts)."""
    return SshLink(tuple(peer_ssh(node)), name)

