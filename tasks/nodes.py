"""Which machines a run uses: `--solo`, `-n a,b,c` or the .env file, checked before any SSH.

The first node is the head. A node entry is `[user@]host[:port]`, where host is a
hostname or an IP address; anything else is refused here, before any command runs.
"""
from __future__ import annotations

import functools
import ipaddress
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from . import masking
from .errors import ConfigError

_HOSTNAME = re.compile(r"^(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\Z", re.IGNORECASE)
# a Linux network interface name (IFNAMSIZ is 16 with the NUL): an IPv6 zone, --eth-if, ETH_IF
IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")


@dataclass(frozen=True)
class Node:
    """One machine. `local` is the machine running the tool (solo mode)."""

    host: str
    user: str = ""
    port: int = 0

    @property
    def local(self) -> bool:
        return self.host == "localhost"

    @property
    def target(self) -> str:
        """The `user@host:port` text the user wrote, normalised."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}{':' + str(self.port) if self.port else ''}"


LOCAL = Node("localhost")


def parse_node(text: str, source: str) -> Node:
    """Check one node entry; the error names where it came from (flag or .env key)."""
    entry = text.strip()
    user, _, rest = entry.rpartition("@") if "@" in entry else ("", "", entry)
    host, port = rest, 0
    if rest.startswith("["):
        host, closed, tail = rest[1:].partition("]")
        port = _port(tail[1:], entry, source) if tail.startswith(":") else 0
        if not closed or (tail and not tail.startswith(":")):
            host = ""  # '[::1' or '[::1]x': refused below
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = _port(port_text, entry, source)
    if "@" in entry and not user:
        raise ConfigError(f"{source}: node '{entry}': the user name before '@' is empty")
    if user and not _USER.match(user):
        raise ConfigError(f"{source}: node '{entry}': '{user}' is not a valid user name")
    if not _valid_host(host):
        raise ConfigError(f"{source}: node '{entry}' is not a hostname or IP address "
                          "(expected [user@]host[:port], e.g. 192.168.1.10 or admin@spark2)")
    return Node(host, user, port)


def parse_list(text: str, source: str) -> tuple[Node, ...]:
    """A comma-separated node list; first = head. Duplicates are refused."""
    items = [t for t in (p.strip() for p in text.split(",")) if t]
    nodes = tuple(parse_node(t, source) for t in items)
    seen: set[str] = set()
    for node in nodes:
        if node.target in seen:
            raise ConfigError(f"{source}: node '{node.target}' is listed twice")
        seen.add(node.target)
    return nodes


def load_env(path: Path) -> dict[str, str]:
    """Read a .env file with python-dotenv (KEY=value, # comments, optional quotes), once per run.

    No `${VAR}` interpolation: a value is what the file says, so `CLUSTER_NODES=a,${HF_TOKEN}` cannot
    pull a secret into a node name (and from there into an error). Secret values are registered for
    masking. Nodes, COPY_HOSTS and the network settings all ask; the file is parsed once while it
    stays unchanged (same size and mtime)."""
    try:
        st = path.stat()
    except OSError:
        return {}
    if not stat.S_ISREG(st.st_mode):
        return {}
    return dict(_read_env(str(path), st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=8)
def _read_env(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, str], ...]:
    from dotenv import dotenv_values

    try:
        values = dotenv_values(path, interpolate=False)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    found = {k: v for k, v in values.items() if v is not None}
    masking.remember(found)
    return tuple(found.items())


def port_number(text: str) -> int | None:
    """A TCP port from 1 to 65535, or None. ASCII digits only: str.isdigit() also accepts '²' (which
    int() then refuses with a traceback) and '٢٢'."""
    return int(text) if re.fullmatch(r"[0-9]{1,5}", text) and 0 < int(text) < 65536 else None


def _port(text: str, entry: str, source: str) -> int:
    port = port_number(text)
    if port is None:
        raise ConfigError(f"{source}: node '{entry}': port '{text}' is not a number from 1 to 65535")
    return port


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        # ipaddress accepts any text as an IPv6 zone ('fe80::1%$(cmd)'); allow interface names only.
        return "%" not in host or bool(IFNAME.match(host.split("%", 1)[1]))
    except ValueError:
        return bool(_HOSTNAME.match(host)) and not host.replace(".", "").isdigit()


def resolve(node: Node) -> str:
    """The node's IP as this machine resolves it."""
    try:
        return socket.getaddrinfo(node.host, None)[0][4][0]
    except (socket.gaierror, IndexError):
        raise ConfigError(f"node '{node.target}' does not resolve to an address") from None


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str | None) -> bool:
    """A listening address only this machine reaches."""
    return host in LOOPBACK_NAMES


def is_local_address(ip: str) -> bool:
    """True when this machine owns `ip` (binding to it succeeds): the head must be where the tool runs."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((ip, 0))
            return True
        except OSError:
            return False

