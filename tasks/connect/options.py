"""OpenSSH's options, defined once: host-key checks, timeouts, keepalives and shared connections.

`ssh_argv` gives OpenSSH the same host-key checks, timeouts and keepalives as the fabric connections
in ssh.py; `peer_ssh` is how one worker reaches the next in a copy chain. Calls from this process to
a node share one connection (ControlMaster): a handshake costs ~0.2 s, a call over the shared
connection ~0.01 s. The sockets live in a private folder made per process and the masters are closed
when it exits, so one run never rides on a connection another run opened (or on an sshd since
stopped). Only tasks/connect/ uses these; callers hold a link (link.py) or a runner.
"""
from __future__ import annotations

import atexit
import hashlib
import math
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..nodes import Node

_MUX_LOCK = threading.Lock()
_MUX_DIR: str | None = None
MUX_IDLE = 30  # seconds a shared connection outlives its last use (bounds leftovers after kill -9)
KEEPALIVE = ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]


@dataclass(frozen=True)
class SshSettings:
    """How to reach nodes: which files to trust and how long to wait.

    known_hosts None means what OpenSSH uses: the ssh_config's UserKnownHostsFile
    (default ~/.ssh/known_hosts) plus the system file; a path means only that file.
    """

    known_hosts: Path | None = None
    ssh_config: Path | None = None
    trust_new_hosts: bool = False
    connect_timeout: float = 10
    command_timeout: float | None = None

    @property
    def dead_after(self) -> float:
        """Seconds without an answer after which a live connection counts as dead."""
        return max(3 * self.connect_timeout, 6.0)


def ssh_options(node: Node, settings: SshSettings) -> list[str]:
    """OpenSSH options equivalent to Ssh's checks (everything but `ssh` and the destination)."""
    s = settings
    opts = ["-o", "BatchMode=yes",
            "-o", f"StrictHostKeyChecking={'accept-new' if s.trust_new_hosts else 'yes'}"]
    if s.known_hosts is not None:
        opts += ["-o", f"UserKnownHostsFile={s.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
    opts += ["-o", f"ConnectTimeout={max(1, math.ceil(s.connect_timeout))}",
             "-o", f"ServerAliveInterval={max(1, int(s.dead_after / 3))}", "-o", "ServerAliveCountMax=3"]
    if s.ssh_config is not None:
        opts += ["-F", str(s.ssh_config)]
    if node.port:
        opts += ["-p", str(node.port)]
    return opts + shared_connection_options(opts)


def shared_connection_options(opts: Sequence[str], on_worker: bool = False) -> list[str]:
    """OpenSSH options that make every call from this process to a node share one connection.

    The socket name includes a hash of `opts` (known_hosts, config, trust mode…): a connection
    opened under one set of checks is never reused by a call that asked for other checks.
    `on_worker`: for ssh run on a worker (chain hops); the socket then lives in that worker's ~/.ssh,
    its name hashed with this process's folder so no other run ever rides on it."""
    folder = _mux_dir()
    if on_worker:
        key = hashlib.sha256("\0".join([folder, *opts]).encode()).hexdigest()[:12]
        path = f"~/.ssh/rr-{key}-%C"
    else:
        path = f"{folder}/{hashlib.sha256(chr(0).join(opts).encode()).hexdigest()[:10]}-%C"
    return ["-o", "ControlMaster=auto", "-o", f"ControlPath={path}", "-o", f"ControlPersist={MUX_IDLE}"]


def _mux_dir() -> str:
    """This process's private folder for shared-connection sockets (short: socket paths max ~100 bytes)."""
    global _MUX_DIR
    with _MUX_LOCK:
        if _MUX_DIR is None:
            _MUX_DIR = tempfile.mkdtemp(prefix="rr-ssh-", dir="/tmp")
            atexit.register(close_shared_connections)
        return _MUX_DIR


def close_shared_connections() -> None:
    """Stop this process's connection masters and remove their folder (at exit; tests call it too)."""
    global _MUX_DIR
    with _MUX_LOCK:
        folder, _MUX_DIR = _MUX_DIR, None
    if folder is None:
        return
    for sock in Path(folder).iterdir():
        try:
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "runrecipe-mux"],
                           capture_output=True, stdin=subprocess.DEVNULL, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass  # a master that cannot be told to exit ends by itself after MUX_IDLE seconds
    shutil.rmtree(folder, ignore_errors=True)


def ssh_argv(node: Node, settings: SshSettings) -> list[str]:
    """`ssh <options> [user@]host`: append a remote command (one shlex-joined word) to use it."""
    dest = f"{node.user}@{node.host}" if node.user else node.host
    return ["ssh", *ssh_options(node, settings), dest]


def peer_ssh(node: Node) -> list[str]:
    """How one worker reaches the next in a copy chain: its own ssh setup (keys, known_hosts); an
    unreachable next worker fails in seconds, and the head then copies to it directly."""
    dest = f"{node.user}@{node.host}" if node.user else node.host
    return ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
            *(["-p", str(node.port)] if node.port else []), dest]


def ssh_prefix(prefix: Sequence[str], from_head: bool = True) -> list[str]:
    """An ssh argv made fit for many calls: keepalives unless given (a dead link ends an ssh in bounded
    time, not at TCP's), and a shared connection (ssh.py: ~0.01 s a call, not ~0.2 s). Run on a
    worker (`from_head=False`: a chain hop), that connection's socket lives in the worker's ~/.ssh,
    named per run, so no other run ever rides on it; `open_hops` opens it."""
    p = list(prefix)
    if not p or os.path.basename(p[0]) != "ssh":
        return p
    if not any("serveralive" in a.lower() for a in p):
        p[1:1] = KEEPALIVE
    if not any("controlpath" in a.lower() for a in p):
        p[1:1] = shared_connection_options(p[1:-1], on_worker=not from_head)
    return p

