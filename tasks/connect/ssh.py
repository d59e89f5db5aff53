"""Commands on another machine over SSH, with host keys verified.

fabric honours ~/.ssh/config, the agent and keys, but on its own it trusts any
host key (AutoAddPolicy) and never reads known_hosts. A tool that copies model
weights and runs containers as root on a cluster must not talk to an impostor,
so every connection here loads known_hosts first and refuses unknown keys (or,
only when the user said `--trust-new-hosts`, records them like OpenSSH's
`accept-new`) and always refuses changed keys.

`Ssh` offers the same `read`/`run` as `Local`, so the rest of the
code never knows which one it holds. Every call is bounded in time: connect,
banner and auth by `connect_timeout`, commands by their timeout, and a link that
dies mid-command by TCP keepalive + TCP_USER_TIMEOUT even without one.
Byte streams (`docker save | ssh … docker load`, `rsync -e`, chain hops) use the OpenSSH
client with the same checks (`link`, link.py; options.py makes every ssh argv).
"""
from __future__ import annotations

import functools
import math
import os
import shlex
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Mapping

from ..errors import RunError
from ..nodes import Node
from .link import SshLink, link_to
from .local import Result, checked, finished, tail
from .options import SshSettings

_RECORD_LOCK = threading.Lock()  # preflight connects to many nodes at once; appends must not interleave
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")


class HostKeyError(RunError):
    """The node's SSH host key is not the one we trust."""


class UnknownHostKeyError(HostKeyError):
    """The node's host key is in no known_hosts file (first contact)."""


class ChangedHostKeyError(HostKeyError):
    """The node offers a different key than known_hosts records: maybe an attack."""


class _UnknownKey(Exception):
    """Raised inside paramiko's connect by our policy; carries what the message needs."""

    def __init__(self, hostname: str, key) -> None:
        super().__init__(hostname)
        self.hostname, self.key = hostname, key


def fingerprint(key) -> str:
    """OpenSSH-style `SHA256:…` fingerprint, what `ssh-keygen -lf` prints."""
    return f"{key.get_name()} {key.fingerprint}"


class _VerifyPolicy:
    """Refuse unknown keys, or record them into `record_to` when the user chose to trust new hosts."""

    def __init__(self, record_to: Path | None) -> None:
        self.record_to = record_to

    def missing_host_key(self, client, hostname: str, key) -> None:
        if self.record_to is None:
            raise _UnknownKey(hostname, key)
        from paramiko.hostkeys import HostKeys

        line = f"{HostKeys.hash_host(hostname)} {key.get_name()} {key.get_base64()}\n"
        with _RECORD_LOCK:
            self.record_to.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.record_to, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)


def with_env(env: Mapping[str, str], argv: list[str]) -> list[str]:
    """`env K=V … argv`: values travel as quoted argv words (fabric's env= does not quote)."""
    for key in env:
        if not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise ValueError(f"not an environment variable name: {key!r}")
    return ["env", *(f"{k}={v}" for k, v in env.items()), *argv] if env else list(argv)


class Ssh:
    """A node reached over SSH (fabric/paramiko), with the same read/run as Local."""

    def __init__(self, node: Node, settings: SshSettings) -> None:
        self.host = node
        self.node = node.target  # what errors and the Connector protocol call the node
        self.settings = settings
        self._conn = None
        self._lock = threading.Lock()

    # -- the Connector interface -----------------------------------------------------------
    @property
    def link(self) -> SshLink:
        """How a pipeline on this machine reaches the node (OpenSSH, the same host-key policy)."""
        return link_to(self.host, self.settings, self.node)

    def argv_for(self, argv: list[str]) -> list[str]:
        """The command line that runs `argv` on the node from a pipeline here."""
        return self.link.argv_for(argv)

    def read(self, argv: list[str], *, check: bool = True, timeout: float = 60) -> Result:
        """Run a query and capture its output (bounded by `timeout`)."""
        return self._exec(argv, timeout=timeout, hide=True, check=check)

    def run(self, argv: list[str], *, stream: bool = True, timeout: float | None = None,
            check: bool = True) -> Result:
        """Run a command that changes something; output streams to the user as it comes.

        Without a timeout (here or in settings) a dead link is still detected by
        keepalives within `settings.dead_after` seconds.
        """
        if timeout is None:
            timeout = self.settings.command_timeout
        return self._exec(argv, timeout=timeout, hide=not stream, check=check)

    def feed(self, argv: list[str], data: bytes, *, timeout: float | None = 600, check: bool = True) -> Result:
        """Run a command with `data` on its stdin (a tar for `docker cp -` / `docker build -`).

        Bytes go through the OpenSSH client with the same checks (`link`): invoke's
        in_stream decodes to text and polls, and a raw paramiko channel would need its own
        send/receive threads to avoid deadlocking on large output.
        """
        command = shlex.join(argv)
        try:
            proc = subprocess.run(self.link.argv_for(argv), input=data,
                                  capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RunError(f"command timed out after {timeout:g} s on {self.node}", node=self.node,
                           command=command) from None
        if proc.returncode == 255:
            err = proc.stderr.decode(errors="replace").strip()
            if "Host key verification failed" in err or "IDENTIFICATION HAS CHANGED" in err:
                self.read(["true"])  # raises the host-key error with the way to fix it
            raise RunError(f"ssh to {self.node} failed", node=self.node, command=command, exit_code=255,
                           tail=tail(err))
        return checked(self.node, argv, proc, check)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection may fail; it is gone either way
                pass

    def __enter__(self) -> "Ssh":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------
    def _exec(self, argv: list[str], *, timeout: float | None, hide: bool, check: bool) -> Result:
        import invoke

        command = shlex.join(argv)
        conn = self._connection(command)
        try:
            started = time.monotonic()
            res = conn.run(command, hide=hide, warn=True, timeout=timeout, in_stream=False, pty=False)
        except invoke.CommandTimedOut:
            self.close()  # the channel was killed; a dead link also leaves the transport unusable
            raise RunError(f"command timed out after {timeout:g} s on {self.node}", node=self.node,
                           command=command) from None
        except (OSError, EOFError, invoke.ThreadException, _ssh_exception()) as exc:
            self.close()
            raise RunError(f"lost the SSH connection to {self.node}: {exc or type(exc).__name__}",
                           node=self.node, command=command) from None
        if res.exited == -1 or (res.exited is None):
            self.close()
            if timeout is not None and time.monotonic() - started >= timeout:
                # invoke's timer killed the channel but was still inside its kill (on a dead link) when
                # invoke asked whether it had fired: that is a timeout, not a lost connection
                raise RunError(f"command timed out after {timeout:g} s on {self.node}", node=self.node,
                               command=command)
            raise RunError(f"lost the SSH connection to {self.node} (no exit status; link or sshd gone?)",
                           node=self.node, command=command, tail=tail(res.stderr or res.stdout))
        return finished(self.node, argv, Result(res.stdout, res.stderr, res.exited), check)

    def _connection(self, command: str):
        with self._lock:
            if self._conn is not None and self._conn.is_connected:
                return self._conn
            conn = self._new_connection()
            try:
                conn.open()
            except BaseException as exc:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
                raise self._connect_error(conn, exc, command) from None
            _harden_socket(conn, self.settings)
            self._conn = conn
            return conn

    def _new_connection(self):
        import fabric

        s = self.settings
        config = fabric.Config(overrides={"runners": {"remote": _remote_runner()}},
                               **({"runtime_ssh_path": str(s.ssh_config)} if s.ssh_config else {}))
        t = s.connect_timeout
        conn = fabric.Connection(
            self.host.host, user=self.host.user or None, port=self.host.port or None, config=config,
            connect_timeout=max(1, math.ceil(t)),  # fabric keeps whole seconds
            connect_kwargs={"banner_timeout": t, "auth_timeout": t, "channel_timeout": t})
        _verify_host_keys(conn, s)
        return conn

    def _connect_error(self, conn, exc: BaseException, command: str) -> RunError:
        import paramiko

        where = f"{self.node}" + (f" ({conn.host}:{conn.port})" if conn.host != self.host.host else "")
        if isinstance(exc, _UnknownKey):
            name = exc.hostname
            host, port = (name[1:].split("]:") if name.startswith("[") else (name, "22"))
            record = self._record_file(conn)
            scan = shlex.join(["ssh-keyscan", "-H", *(["-p", port] if port != "22" else []), host])
            return UnknownHostKeyError(
                f"SSH host key of {where} is unknown: {fingerprint(exc.key)}.\n"
                f"  Check this fingerprint on the machine itself (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub),"
                f" then accept it with:\n"
                f"    {scan} >> {shlex.quote(str(record))}\n"
                f"  or rerun with --trust-new-hosts to record keys of new nodes (changed keys stay refused).",
                node=self.node)
        if isinstance(exc, paramiko.BadHostKeyException):
            host = conn.host if conn.port == 22 else f"[{conn.host}]:{conn.port}"
            return ChangedHostKeyError(
                f"REFUSING TO CONNECT: the SSH host key of {where} HAS CHANGED.\n"
                f"  known_hosts says {fingerprint(exc.expected_key)}, the node offers {fingerprint(exc.key)}.\n"
                f"  Someone may be intercepting the connection (man-in-the-middle attack),"
                f" or the machine was reinstalled.\n"
                f"  After checking the new fingerprint on the machine itself, remove the old key with\n"
                f"    {shlex.join(['ssh-keygen', '-R', host, '-f', str(self._record_file(conn))])}\n"
                f"  and accept the new one (ssh-keyscan -H, or --trust-new-hosts). --trust-new-hosts never"
                f" accepts a changed key.", node=self.node)
        if isinstance(exc, paramiko.AuthenticationException):
            return RunError(
                f"SSH login to {where} as {conn.user} was refused ({exc}).\n"
                f"  Load your key into the agent (ssh-add), or set IdentityFile for this host in ~/.ssh/config;"
                f" install the key on the node with: ssh-copy-id {shlex.quote(f'{conn.user}@{conn.host}')}",
                node=self.node)
        if isinstance(exc, (socket.timeout, TimeoutError)):
            reason = f"no answer within {self.settings.connect_timeout:g} s (node down or unreachable?)"
        elif isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            reason = "connection refused (is sshd running on it?)"
        elif isinstance(exc, socket.gaierror):
            reason = f"unknown host name ({exc.strerror})"
        else:
            reason = str(exc) or type(exc).__name__
        return RunError(f"cannot connect to {where} over SSH: {reason}", node=self.node, command=command)

    def _record_file(self, conn) -> Path:
        return _known_hosts_files(conn, self.settings)[1]


def _ssh_exception() -> type[BaseException]:
    import paramiko

    return paramiko.SSHException


def _known_hosts_files(conn, s: SshSettings) -> tuple[list[Path], Path]:
    """(files to trust, file to record new keys into), as OpenSSH would choose them."""
    if s.known_hosts is not None:
        return [s.known_hosts], s.known_hosts
    cfg = conn.ssh_config

    def paths(key: str, default: list[str]) -> list[Path]:
        raw = cfg.get(key)
        words = (raw if isinstance(raw, list) else shlex.split(raw)) if raw else default
        return [Path(os.path.expanduser(w)) for w in words if w.lower() != "none"]

    user = paths("userknownhostsfile", ["~/.ssh/known_hosts"])
    system = paths("globalknownhostsfile", [str(SYSTEM_KNOWN_HOSTS)])
    return user + system, (user[0] if user else Path(os.path.expanduser("~/.ssh/known_hosts")))


def _verify_host_keys(conn, s: SshSettings) -> None:
    """Load known_hosts and set our policy on this connection and on every ProxyJump hop."""
    import fabric

    trust, record = _known_hosts_files(conn, s)
    client = conn.client
    for path in trust:
        if path.is_file():
            client.load_system_host_keys(str(path))  # read-only set: we append new keys ourselves
    client.set_missing_host_key_policy(_VerifyPolicy(record if s.trust_new_hosts else None))
    if isinstance(conn.gateway, fabric.Connection):
        _verify_host_keys(conn.gateway, s)


def _harden_socket(conn, s: SshSettings) -> None:
    """Detect a dead peer within `dead_after` even while a command runs without a timeout."""
    transport = conn.transport
    dead = s.dead_after
    transport.set_keepalive(max(1, int(dead / 3)))  # keeps unacknowledged data in flight when idle
    sock = transport.sock
    if not isinstance(sock, socket.socket):
        return  # ProxyCommand/ProxyJump: the hop's own socket carries the bytes
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(dead / 3)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(dead / 6)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(dead * 1000))
    except OSError:
        pass


@functools.lru_cache(maxsize=1)
def _remote_runner() -> type:
    """fabric's remote runner, whose timeout kill accepts a link that is already dead.

    On a command's timeout invoke's timer thread closes the channel; over a cut link paramiko's
    transport raises EOFError there, and Python printed that thread's traceback on the user's
    terminal. The command's own timeout error already says what happened."""
    from fabric.runners import Remote

    class QuietKill(Remote):
        def kill(self) -> None:
            try:
                super().kill()
            except (EOFError, OSError):
                pass

    return QuietKill

