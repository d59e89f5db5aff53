"""Find the other DGX Sparks on the local network and save them to `.env`.

Scanning is only ever of one interface's own subnet (or an explicit `--cidr`), with
bounded concurrency and short timeouts, and never of a /16 or wider by accident: a
tool that probes a whole corporate network because of a broad netmask is a tool
that gets a user a visit from IT. An open port 22 is only a candidate; a node counts
as found when an SSH login with verified host key succeeds. Unknown host keys are
listed as unconfirmed, never silently trusted (unless the user chose
`--trust-new-hosts`). Results are never cached: machines come and go, so every
`--discover` rescans.

The library returns candidates and what a choice means; asking a person is tasks/cli/discover_ask.py's.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import ConfigError, RunError
from ..nodes import Node, parse_list
from ..connect import ChangedHostKeyError, Ssh, SshSettings, UnknownHostKeyError

SSH_PORT = 22
WIDEST_AUTO_PREFIX = 17  # a /16 or wider needs an explicit --cidr
WIDEST_CIDR_PREFIX = 16  # and a /16 is the most one scan takes (65,536 addresses: minutes, not days)
CONFIRMED = "confirmed"
ENV_HEADER = ("# Cluster nodes for run-recipe. CLUSTER_NODES: first = head; COPY_HOSTS: nodes that get the\n"
              "# image and weights copied. Written by `run-recipe --discover`; other keys are kept.\n")


@dataclass(frozen=True)
class Candidate:
    """A machine that answered on the SSH port, and whether an SSH login confirmed it."""

    ip: str
    status: str           # "confirmed", "this machine", or "unconfirmed: why"
    hostname: str = ""
    is_self: bool = False

    @property
    def confirmed(self) -> bool:
        return not self.status.startswith("unconfirmed")

    def as_dict(self) -> dict:
        return {"ip": self.ip, "status": self.status, "hostname": self.hostname, "is_self": self.is_self,
                "confirmed": self.confirmed}


def default_interface(route_file: Path = Path("/proc/net/route")) -> str:
    """The interface of the IPv4 default route: the network this machine reaches others through."""
    for line in route_file.read_text().splitlines()[1:]:
        cols = line.split()
        if len(cols) > 3 and cols[1] == "00000000" and int(cols[3], 16) & 1:  # RTF_UP
            return cols[0]
    raise ConfigError("no default route: pass the interface that connects the nodes (--interface eth0)")


def interface_address(interface: str) -> ipaddress.IPv4Interface:
    """The interface's first global IPv4 address with its prefix (from `ip -j addr`)."""
    proc = subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", interface], capture_output=True,
                          text=True, timeout=10)
    if proc.returncode != 0:
        raise ConfigError(f"interface {interface!r}: {proc.stderr.strip() or 'not found'}")
    for link in json.loads(proc.stdout or "[]"):
        for addr in link.get("addr_info", []):
            if addr.get("family") == "inet" and addr.get("scope", "global") == "global":
                return ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}")
    raise ConfigError(f"interface {interface!r} has no IPv4 address")


def scan_range(address: ipaddress.IPv4Interface, cidr: str | None) -> ipaddress.IPv4Network:
    """What to scan: the explicit CIDR, else the interface's subnet unless it is /16 or wider."""
    if cidr:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ConfigError(f"--cidr {cidr!r}: {exc}") from None
        if not isinstance(net, ipaddress.IPv4Network):
            raise ConfigError("--cidr: only IPv4 ranges can be scanned")
        if net.prefixlen < WIDEST_CIDR_PREFIX:
            raise ConfigError(f"--cidr {cidr}: {net.num_addresses} addresses is more than one scan takes (at most "
                              f"a /{WIDEST_CIDR_PREFIX}); pass the part the nodes are in, e.g. --cidr "
                              f"{ipaddress.ip_network(f'{net.network_address}/24', strict=False)}")
        return net
    net = address.network
    if net.prefixlen < WIDEST_AUTO_PREFIX:
        raise ConfigError(f"{address} is on a /{net.prefixlen} network ({net.num_addresses} addresses): too wide "
                          f"to scan by default. Pass the part the nodes are in, e.g. --cidr "
                          f"{ipaddress.ip_network(f'{address.ip}/24', strict=False)}")
    return net


async def _probe_all(hosts: Iterable[str], port: int, concurrency: int, timeout: float,
                     on_open) -> list:
    """TCP-connect every host with at most `concurrency` attempts in flight; `on_open` runs in a thread.

    `concurrency` probers take hosts from one iterator, so a scan holds a few dozen coroutines
    whatever the range's size (one task per address took 24 GB for a /8)."""
    loop = asyncio.get_running_loop()
    pending = iter(hosts)
    checks: list[asyncio.Future] = []

    async def prober() -> None:
        for ip in pending:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
            except (OSError, asyncio.TimeoutError):
                continue
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), timeout)
            except (OSError, asyncio.TimeoutError):
                pass
            checks.append(loop.run_in_executor(None, on_open, ip))  # SSH check overlaps the rest of the scan

    await asyncio.gather(*(prober() for _ in range(concurrency)))
    return [c for c in await asyncio.gather(*checks) if c is not None]


def confirm(ip: str, settings: SshSettings, user: str = "", port: int = SSH_PORT,
            self_ip: str = "") -> Candidate:
    """Log in and run `hostname`; host keys are verified as for any other run."""
    is_self = ip == self_ip
    try:
        with Ssh(Node(ip, user, port if port != SSH_PORT else 0), settings) as r:
            name = r.read(["hostname"], timeout=max(5.0, settings.connect_timeout)).stdout.strip()
        return Candidate(ip, CONFIRMED, name, is_self)
    except UnknownHostKeyError as exc:
        fp = next((w for w in str(exc).split() if w.startswith("SHA256:")), "").rstrip(".")
        return Candidate(ip, f"unconfirmed: host key unknown ({fp})", "", is_self)
    except ChangedHostKeyError:
        return Candidate(ip, "unconfirmed: HOST KEY CHANGED (refused)", "", is_self)
    except RunError as exc:
        return Candidate(ip, "unconfirmed: " + str(exc).splitlines()[0], "", is_self)


def discover(interface: str | None, cidr: str | None, settings: SshSettings, *, concurrency: int = 64,
             timeout: float = 0.5, user: str = "", port: int = SSH_PORT) -> list[Candidate]:
    """Scan for SSH on the interface's subnet (or `cidr`) and confirm each answer by SSH login.

    The machine running this is always listed (is_self), as "this machine" if it has no sshd.
    """
    iface = interface or default_interface()
    address = interface_address(iface)
    net = scan_range(address, cidr)
    hosts = map(str, net.hosts())
    self_ip = str(address.ip)
    # not fanout.each: this pool is the scan's executor, taking each SSH check as its port answers
    with ThreadPoolExecutor(max_workers=min(32, max(4, concurrency // 2)), thread_name_prefix="discover") as pool:
        async def main() -> list[Candidate]:
            asyncio.get_running_loop().set_default_executor(pool)
            return await _probe_all(hosts, port, max(1, concurrency), timeout,
                                    lambda ip: confirm(ip, settings, user, port, self_ip))
        found = asyncio.run(main())
    if not any(c.is_self for c in found):
        found.append(Candidate(self_ip, "this machine", "", True))
    return sorted(found, key=lambda c: ipaddress.ip_address(c.ip))


def usable(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The confirmed candidates, this machine first (the head), then by address."""
    return sorted((c for c in candidates if c.confirmed), key=lambda c: (not c.is_self, ipaddress.ip_address(c.ip)))


def every_confirmed(candidates: Sequence[Candidate]) -> tuple[list[str], list[str]]:
    """(CLUSTER_NODES, COPY_HOSTS) without asking (--yes): every confirmed node, copies to each worker."""
    nodes = usable(candidates)
    return [c.ip for c in nodes], [c.ip for c in nodes if not c.is_self]


def nodes_picked(candidates: Sequence[Candidate], picked: Sequence[str]) -> tuple[list[str], list[str]]:
    """(CLUSTER_NODES in head-first order, the workers among them) from the addresses a person picked;
    the front then asks which workers get copies."""
    self_ips = {c.ip for c in candidates if c.is_self}
    nodes = [c.ip for c in usable(candidates) if c.ip in picked]
    return nodes, [ip for ip in nodes if ip not in self_ips]


def write_env(path: Path, cluster_nodes: Sequence[str], copy_hosts: Sequence[str]) -> None:
    """Save CLUSTER_NODES and COPY_HOSTS, keeping every other line of an existing .env."""
    from dotenv import set_key

    nodes_text, copy_text = ",".join(cluster_nodes), ",".join(copy_hosts)
    parse_list(nodes_text, f"{path}: CLUSTER_NODES")  # write only what `-n`/.env loading accepts
    parse_list(copy_text, f"{path}: COPY_HOSTS")
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    if ENV_HEADER not in old:
        path.write_text(ENV_HEADER + old)
    set_key(path, "CLUSTER_NODES", nodes_text, quote_mode="never")
    set_key(path, "COPY_HOSTS", copy_text, quote_mode="never")

