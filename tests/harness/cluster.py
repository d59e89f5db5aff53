"""A real N-node test cluster on one machine (see shared TEST-CLUSTER.md).

Each node is a network namespace ``rr-nI`` on the isolated bridge ``br-rr``
(198.18.0.0/24, no route out) plus a private mount + UTS namespace with its own
HOME (bound over /root), a tmpfs /var/run, its own dockerd and its own sshd.
That is as close to "N separate machines reachable over SSH" as one box gets,
so the cluster code paths (host keys, docker save|ssh load, rsync, Ray) run for
real instead of against mocks.

Safety: the only addresses ever configured or contacted are 198.18.0.1 (host
end of the bridge) and 198.18.0.(10+I) (the nodes).  Nodes get no default
route.  A node added with ``ipv6=True`` also gets fd00:198:18::(10+I) (a unique
local address, never routed) and the fixed link-local fe80::(10+I); the bridge
then gets fd00:198:18::1 and fe80::1, with address autoconfiguration off.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

BRIDGE = "br-rr"
SUBNET = ipaddress.ip_network("198.18.0.0/24")
SUBNET6 = ipaddress.ip_network("fd00:198:18::/64")
HOST_IP = "198.18.0.1"
NETNS_PREFIX = "rr-n"
VETH_PREFIX = "rr-v"
BASE_DIR = Path(os.environ.get("RR_TEST_BASE", "/var/lib/runrecipe-test"))
STATE_DIR = Path("/run/runrecipe-test")
CPU_CGROUPS = Path("/sys/fs/cgroup/cpu/runrecipe-test")  # cgroup v1 cpu controller, per-node quotas
ACCT_CGROUPS = Path("/sys/fs/cgroup/cpuacct/runrecipe-test")  # cgroup v1 cpuacct, per-node CPU time
STATE_FILE = STATE_DIR / "cluster.json"
LOCK_FILE = STATE_DIR / "cluster.lock"
FORWARD_RULE = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]
MAX_NODES = 50


class ClusterError(RuntimeError):
    """Bring-up or a node operation failed; the message says which node and command."""


class ClusterBusy(ClusterError):
    """Another process holds the one test cluster this machine can have."""


def node_ip(index: int) -> str:
    """Node I lives at 198.18.0.(10+I); refuse anything that would leave the test subnet."""
    if not 1 <= index <= MAX_NODES:
        raise ValueError(f"node index {index} out of range 1..{MAX_NODES}")
    ip = ipaddress.ip_address(f"198.18.0.{10 + index}")
    assert ip in SUBNET
    return str(ip)


def node_ip6(index: int) -> str:
    """Node I's IPv6 unique local address fd00:198:18::(10+I), inside the test prefix."""
    ip = ipaddress.ip_address(f"fd00:198:18::{10 + index}")
    assert ip in SUBNET6 and 1 <= index <= MAX_NODES
    return str(ip)


def _sh(cmd: Sequence[str], *, check: bool = True, timeout: float = 60,
        input: bytes | None = None, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a host command, capturing output, and fail loudly with its stderr."""
    proc = subprocess.run(list(cmd), capture_output=True, timeout=timeout, input=input,
                          env=dict(env) if env is not None else None)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} -> rc={proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _kill_wait(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL: daemons get a chance to clean up."""
    if not _pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)


def _netns_pids(ns: str) -> list[int]:
    proc = _sh(["ip", "netns", "pids", ns], check=False, timeout=10)
    return [int(x) for x in proc.stdout.split()] if proc.returncode == 0 else []


def _wait(what: str, pred, timeout: float, interval: float = 0.2) -> None:
    """Poll ``pred`` until true; every wait in the harness is bounded."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception as e:  # noqa: BLE001 - remember why, report on timeout
            last = e
        time.sleep(interval)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}"
                       + (f" (last error: {last})" if last else ""))


def _tcp_open(ip: str, port: int) -> bool:
    assert ipaddress.ip_address(ip) in SUBNET
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((ip, port)) == 0


@dataclass
class Node:
    """One test node; every method acts inside that node's namespaces or on its link."""

    index: int
    node_dir: Path
    client_dir: Path
    holder_pid: int = 0
    dockerd: bool = True  # False: SSH only (weights chains), no daemon to start, wait for or heal
    ipv6: bool = False  # True: also fd00:198:18::(10+I) and fe80::(10+I) on eth0, sshd listening there

    @property
    def name(self) -> str:
        return f"n{self.index}"

    @property
    def ip(self) -> str:
        return node_ip(self.index)

    @property
    def ip6(self) -> str:
        return node_ip6(self.index)

    @property
    def link_local(self) -> str:
        """Link-local address without a zone: from the host add %br-rr, from another node %eth0."""
        return f"fe80::{10 + self.index}"

    @property
    def addresses(self) -> list[str]:
        """Every address sshd listens on and known_hosts names (zone forms included)."""
        if not self.ipv6:
            return [self.ip]
        return [self.ip, self.ip6, f"{self.link_local}%{BRIDGE}", f"{self.link_local}%eth0"]

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.index}"

    @property
    def veth(self) -> str:
        """Host end of the node's link (the node end is eth0 inside the netns)."""
        return f"{VETH_PREFIX}{self.index}"

    @property
    def target(self) -> str:
        """SSH destination usable with ``ssh_args`` (no ssh_config needed)."""
        return f"root@{self.ip}"

    @property
    def home(self) -> Path:
        """Host path of the directory bound over /root inside the node."""
        return self.node_dir / "home"

    @property
    def run_dir(self) -> Path:
        """Per-run files visible from the host: pidfiles, logs, host key, sshd_config."""
        return self.node_dir / "run"

    @property
    def docker_root(self) -> Path:
        """Persistent data-root so images survive between runs."""
        return self.node_dir / "docker"

    @property
    def dockerd_pidfile(self) -> Path:
        return self.run_dir / "docker.pid"

    @property
    def sshd_pidfile(self) -> Path:
        return self.run_dir / "sshd.pid"

    @property
    def host_key_pub(self) -> str:
        return (self.run_dir / "ssh_host_ed25519_key.pub").read_text().strip()

    @property
    def ssh_args(self) -> list[str]:
        """ssh options that trust exactly the cluster's known_hosts: for ``ssh`` and ``rsync -e``."""
        return ssh_options(self.client_dir / "id_ed25519", self.client_dir / "known_hosts")

    # -- running things inside the node --------------------------------------------------
    def _nsenter(self) -> list[str]:
        if not self.holder_pid or not _pid_alive(self.holder_pid):
            raise ClusterError(f"{self.name}: namespace holder is not running")
        return ["nsenter", "-t", str(self.holder_pid), "-m", "-n", "-u", "--"]

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment of "a user logged in on this node": HOME=/root of the node, no host agent/docker."""
        env = {k: v for k, v in os.environ.items()
               if k not in {"SSH_AUTH_SOCK", "SSH_AGENT_PID", "DOCKER_HOST", "DOCKER_CONTEXT",
                            "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "XDG_CONFIG_HOME",
                            "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR", "HF_HOME"}}
        env.update(HOME="/root", USER="root", LOGNAME="root", HOSTNAME=self.name)
        if extra:
            env.update(extra)
        return env

    @property
    def cgroup(self) -> Path:
        return CPU_CGROUPS / self.name

    @property
    def acct_cgroup(self) -> Path:
        return ACCT_CGROUPS / self.name

    def _join_cgroups(self) -> None:
        """Put sshd, dockerd and what they started in the node's cgroups; what they start later and
        what run()/popen() start joins them too."""
        for group in (self.cgroup, self.acct_cgroup):
            group.mkdir(parents=True, exist_ok=True)
            daemons = [pid for pid in (_read_pid(self.sshd_pidfile), _read_pid(self.dockerd_pidfile)) if pid]
            for pid in _with_descendants(daemons):
                with contextlib.suppress(OSError):  # a process that just ended
                    (group / "cgroup.procs").write_text(str(pid))

    def limit_cpu(self, cpus: float) -> None:
        """Give the node a CPU budget of its own (cgroup quota) for sshd, dockerd, what they start and
        what run()/popen() start: on one host every node shares the cores, real machines do not.
        0 lifts the budget (the node stays in its cgroup, so a later budget covers the same processes)."""
        self._join_cgroups()
        period = int((self.cgroup / "cpu.cfs_period_us").read_text())
        (self.cgroup / "cpu.cfs_quota_us").write_text(str(int(cpus * period)) if cpus > 0 else "-1")

    def cpu_seconds(self) -> float:
        """CPU time the node's processes have used since its first cpu_seconds() or limit_cpu()
        (cpuacct): what the node would spend of a machine of its own."""
        self._join_cgroups()
        return int((self.acct_cgroup / "cpuacct.usage").read_text()) / 1e9

    def _in_cgroup(self, cmd: Sequence[str]) -> list[str]:
        groups = [str(g) for g in (self.cgroup, self.acct_cgroup) if (g / "cgroup.procs").exists()]
        if not groups:
            return list(cmd)
        return ["sh", "-c", 'for g in $0; do echo $$ > "$g/cgroup.procs" || exit 1; done; exec "$@"',
                " ".join(groups), *cmd]

    def run(self, cmd: Sequence[str], *, check: bool = False, timeout: float = 120,
            input: bytes | str | None = None, env: Mapping[str, str] | None = None,
            cwd: str | os.PathLike | None = None, text: bool = True) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the node (net+mount+uts ns, HOME=/root) as a user on it would."""
        if isinstance(input, str) and not text:
            input = input.encode()
        proc = subprocess.run(self._nsenter() + self._in_cgroup(cmd), capture_output=True, timeout=timeout,
                              input=input, env=self.env(env), cwd=cwd, text=text)
        if check and proc.returncode != 0:
            raise ClusterError(f"{self.name}: {' '.join(cmd)} -> rc={proc.returncode}: "
                               f"{str(proc.stderr)[-2000:]}")
        return proc

    def popen(self, cmd: Sequence[str], **kw) -> subprocess.Popen:
        """Start ``cmd`` inside the node without waiting (pipes between nodes, background jobs)."""
        env = self.env(kw.pop("env", None))
        return subprocess.Popen(self._nsenter() + self._in_cgroup(cmd), env=env, **kw)

    def docker(self, *args: str, check: bool = False, timeout: float = 300,
               **kw) -> subprocess.CompletedProcess:
        """The node's own docker CLI against the node's own daemon."""
        return self.run(["docker", *args], check=check, timeout=timeout, **kw)

    def ssh(self, cmd: str | Sequence[str], *, timeout: float = 60, check: bool = False,
            input: bytes | None = None, extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
        """Run a command on the node over real SSH from the host (198.18.0.1)."""
        remote = cmd if isinstance(cmd, str) else " ".join(cmd)
        return _sh(["ssh", *self.ssh_args, *extra, self.target, remote],
                   check=check, timeout=timeout, input=input)

    # -- failure injection -----------------------------------------------------------------
    def stop_sshd(self) -> None:
        """Kill the node's sshd (new SSH connections are then refused)."""
        pid = _read_pid(self.sshd_pidfile)
        if pid:
            _kill_wait(pid, 5)

    def start_sshd(self) -> None:
        """(Re)start sshd with the run's host key and config; waits until port 22 answers."""
        if not self.holder_pid:
            raise ClusterError(f"{self.name}: no namespace")
        proc = subprocess.run(self._nsenter() + ["/usr/sbin/sshd", "-f", str(self.run_dir / "sshd_config"),
                                                 "-E", str(self.run_dir / "sshd.log")],
                              capture_output=True, text=True, timeout=20)
        if proc.returncode != 0:
            raise ClusterError(f"{self.name}: sshd failed: {proc.stderr}")
        try:
            _wait(f"{self.name} sshd on {self.ip}:22", lambda: _tcp_open(self.ip, 22), 15)
        except ClusterError as e:
            log = self.run_dir / "sshd.log"
            raise ClusterError(f"{e}; sshd.log: {log.read_text()[-1000:] if log.exists() else '(none)'}") from None

    def stop_dockerd(self) -> None:
        """Stop the node's dockerd (docker commands on the node then fail)."""
        pid = _read_pid(self.dockerd_pidfile)
        if pid:
            _kill_wait(pid, 20)

    def start_dockerd(self) -> None:
        """Start the node's own dockerd and wait until it answers."""
        self.spawn_dockerd()
        self.wait_dockerd()

    def spawn_dockerd(self) -> None:
        """Start dockerd: persistent data-root, own exec-root/pidfile, no iptables, no bridge."""
        pid = _read_pid(self.dockerd_pidfile)
        if pid and _pid_alive(pid):
            return
        with contextlib.suppress(OSError):
            self.dockerd_pidfile.unlink()
        self.docker_root.mkdir(parents=True, exist_ok=True)
        log = open(self.run_dir / "dockerd.log", "ab")
        subprocess.Popen(
            self._nsenter() + ["dockerd", "--data-root", str(self.docker_root),
                               "--exec-root", "/var/run/rr-docker", "--pidfile", str(self.dockerd_pidfile),
                               "--iptables=false", "--ip-masq=false", "--bridge=none",
                               "--host", "unix:///var/run/docker.sock"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=self.env())
        log.close()

    def wait_dockerd(self, timeout: float = 90) -> None:
        def ready() -> bool:
            return self.run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=10).returncode == 0
        try:
            _wait(f"{self.name} dockerd", ready, timeout, 0.3)
        except ClusterError as e:
            tail = (self.run_dir / "dockerd.log").read_text(errors="replace")[-1500:]
            raise ClusterError(f"{e}\n--- dockerd.log ---\n{tail}") from None

    def link_down(self) -> None:
        """Pull the node's cable: the host end of its veth goes down, eth0 loses carrier."""
        _sh(["ip", "link", "set", self.veth, "down"])

    def link_up(self) -> None:
        _sh(["ip", "link", "set", self.veth, "up"])

    def shape(self, rate: str = "400mbit", burst: str = "256kb", latency: str = "50ms") -> None:
        """Limit the node's link to ``rate`` in both directions (tbf on eth0 and on the host veth)."""
        tbf = ["root", "tbf", "rate", rate, "burst", burst, "latency", latency]
        self.run(["tc", "qdisc", "replace", "dev", "eth0", *tbf], check=True)
        _sh(["tc", "qdisc", "replace", "dev", self.veth, *tbf])

    def unshape(self) -> None:
        """Remove the rate limit again (the session cluster is shared between tests)."""
        self.run(["tc", "qdisc", "del", "dev", "eth0", "root"])
        _sh(["tc", "qdisc", "del", "dev", self.veth, "root"], check=False)

    def containers(self) -> list[str]:
        """IDs of all containers (running or not) on the node."""
        if not self.dockerd:
            return []
        p = self.docker("ps", "-aq", timeout=30)
        return p.stdout.split() if p.returncode == 0 else []

    def remove_containers(self) -> list[str]:
        """Force-remove every container on the node; returns what was removed."""
        ids = self.containers()
        if ids:
            self.docker("rm", "-f", *ids, timeout=120)
        return ids

    def heal(self) -> None:
        """Undo failure injection (link, shaping, stopped daemons) so a shared cluster stays usable."""
        self.link_up()
        self.unshape()
        pid = _read_pid(self.sshd_pidfile)
        if not (pid and _pid_alive(pid)):
            self.start_sshd()
        pid = _read_pid(self.dockerd_pidfile)
        if self.dockerd and not (pid and _pid_alive(pid)):
            self.start_dockerd()

    def __repr__(self) -> str:
        return f"Node({self.name} {self.ip} holder={self.holder_pid})"


def ssh_options(identity: Path, known_hosts: Path, connect_timeout: int = 5) -> list[str]:
    """Strict host-key checking against one known_hosts file, one key, no agent, no prompts."""
    return ["-o", f"IdentityFile={identity}", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={connect_timeout}", "-o", "LogLevel=ERROR",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2", "-F", "/dev/null"]


SSHD_CONFIG = """\
# generated by tests/harness/cluster.py for test node {name}
{listen}
Port 22
HostKey {run}/ssh_host_ed25519_key
PidFile {pidfile}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
UsePAM no
UseDNS no
StrictModes yes
MaxStartups 100:30:200
MaxSessions 64
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
"""

# Runs as the holder process inside the new mount+uts namespaces.
HOLDER_SCRIPT = """\
set -e
mount --make-rprivate /
for p in $RR_SHARE; do
  d="$RR_HOME/${p#/root/}"
  mkdir -p "$d"
  mount --bind "$p" "$d"
  mount -o remount,bind,ro "$d"
done
mount --rbind "$RR_HOME" /root
mkdir -p "$RR_ETC_DOCKER" /etc/docker
mount --bind "$RR_ETC_DOCKER" /etc/docker
mount -t tmpfs -o mode=755 tmpfs /var/run
mkdir -p /var/run/sshd
chmod 755 /var/run/sshd
hostname "$RR_NAME"
touch "$RR_READY"
exec sleep infinity
"""


def ssh_config_text(nodes: Iterable[Node], identity: Path, known_hosts: Path) -> str:
    """ssh_config with one Host block per node, matching both its name and its IP."""
    out = []
    for n in nodes:
        out.append(f"Host {n.name} {n.ip}\n"
                   f"    HostName {n.ip}\n"
                   f"    User root\n"
                   f"    IdentityFile {identity}\n"
                   f"    IdentitiesOnly yes\n"
                   f"    UserKnownHostsFile {known_hosts}\n"
                   f"    GlobalKnownHostsFile /dev/null\n"
                   f"    StrictHostKeyChecking yes\n"
                   f"    BatchMode yes\n"
                   f"    ConnectTimeout 5\n"
                   f"    LogLevel ERROR\n")
    return "\n".join(out)


def known_hosts_text(nodes: Iterable[Node]) -> str:
    """known_hosts lines for ``nodes`` (by name and IP); build one without a node to test refusal."""
    return "".join(f"{','.join([n.name, *n.addresses])} {n.host_key_pub}\n" for n in nodes)


def _python_roots_under_root() -> list[str]:
    """Host dirs under /root that this Python lives in (e.g. ~/.pyenv): /root is replaced inside
    nodes, so these are bound read-only into each node's HOME to let the tool run "on the head"."""
    roots: set[str] = set()
    for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.realpath(sys.executable)}:
        rp = Path(os.path.realpath(p))
        if rp.parts[:2] == ("/", "root") and len(rp.parts) > 2:
            roots.add(str(Path("/root") / rp.parts[2]))
    return sorted(roots)


@dataclass
class TestCluster:
    """N real nodes (netns + own sshd + own dockerd + own HOME) on bridge br-rr.

    Use as a context manager; ``teardown()`` is idempotent and safe after a partial bring-up.
    ``dockerd=False`` (or ``add_nodes(k, dockerd=False)`` on a running cluster) makes nodes with sshd
    only: a few tenths of a second each, for tests that need many nodes but no Docker (weights chains).
    """

    __test__ = False  # not a pytest test class despite the name

    size: int = 3
    base_dir: Path = BASE_DIR
    client_dir: Path | None = None
    share_paths: list[str] = field(default_factory=_python_roots_under_root)
    owner: str = "pytest"
    dockerd: bool = True
    nodes: list[Node] = field(default_factory=list)
    _own_client_dir: bool = False
    _lock: object = field(default=None, repr=False)

    # -- public -------------------------------------------------------------------------
    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def ssh_config(self) -> Path:
        assert self.client_dir
        return self.client_dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        assert self.client_dir
        return self.client_dir / "known_hosts"

    @property
    def identity(self) -> Path:
        assert self.client_dir
        return self.client_dir / "id_ed25519"

    def node(self, name_or_index: str | int) -> Node:
        for n in self.nodes:
            if name_or_index in (n.name, n.index, n.ip):
                return n
        raise KeyError(name_or_index)

    def __enter__(self) -> "TestCluster":
        try:
            self.up()
        except ClusterBusy:
            raise  # someone else's cluster: not ours to tear down
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    def up(self) -> "TestCluster":
        """Bring up ``size`` nodes after removing leftovers of an earlier crashed run."""
        if not 1 <= self.size <= MAX_NODES:
            raise ValueError(f"size must be 1..{MAX_NODES}")
        if os.geteuid() != 0:
            raise ClusterError("the test cluster needs root (netns, mounts, dockerd)")
        # one cluster per machine (br-rr and 198.18.0.0/24 are fixed): wait for another test run
        self._lock = acquire_lock(wait=float(os.environ.get("RR_TEST_CLUSTER_WAIT", "900")))
        cleanup_stale(self.base_dir)
        if self.client_dir is None:
            self.client_dir = Path(tempfile.mkdtemp(prefix="rr-cluster-"))
            self._own_client_dir = True
        self.client_dir.mkdir(parents=True, exist_ok=True)
        self._write_state()  # before anything exists, so a crash is always cleanable
        self._make_client_key()
        self._make_bridge()
        self.add_nodes(self.size, dockerd=self.dockerd)
        return self

    def add_nodes(self, count: int, dockerd: bool = False, ipv6: bool = False) -> list[Node]:
        """Bring up `count` more nodes after the last one; every node's ~/.ssh then knows them all."""
        first = max((n.index for n in self.nodes), default=0) + 1
        if first + count - 1 > MAX_NODES:
            raise ValueError(f"at most {MAX_NODES} nodes")
        new = [Node(i, self.base_dir / "nodes" / f"n{i}", self.client_dir or Path("/nonexistent"),
                    dockerd=dockerd, ipv6=ipv6) for i in range(first, first + count)]
        if ipv6:
            self._bridge_ipv6()
        self.nodes += new
        self.size = len(self.nodes)
        try:
            self._bring_up(new)
        except BaseException:
            self.remove_nodes(new)  # a half-made node must not stay in a module-scoped cluster
            raise
        return new

    def _bring_up(self, new: list[Node]) -> None:
        for node in new:
            self._make_node(node)
        self._write_state()
        # sshd and dockerd start in parallel across nodes: dockerd start dominates bring-up time
        for node in new:
            node.start_sshd()
        self._write_client_files()
        docker_nodes = [node for node in new if node.dockerd]
        for node in docker_nodes:
            node.spawn_dockerd()
        for node in docker_nodes:
            self._finish_dockerd(node)
        self._write_state()

    def remove_nodes(self, nodes: Iterable[Node]) -> None:
        """Tear these nodes down (daemons, netns, veth) and forget them; the others stay up."""
        gone = {n.index for n in nodes}

        def remove(node: Node) -> None:
            _teardown_node(node.index, node.node_dir)
            _sh(["ip", "link", "del", node.veth], check=False)  # gone with the netns, unless held
        removed = [n for n in self.nodes if n.index in gone]
        with ThreadPoolExecutor(max_workers=8) as pool:  # ~0.6 s a node, mostly waiting for processes to end
            list(pool.map(remove, removed))
        self.nodes = [n for n in self.nodes if n.index not in gone]
        for node in removed:
            self._forget_neighbours(node)
        self.size = len(self.nodes)
        self._write_client_files()
        self._write_state()

    def teardown(self) -> None:
        """Stop every daemon and container, delete netns, veths, bridge and the FORWARD rule."""
        if self._lock is None:
            self._lock = acquire_lock()  # never tear down a cluster another process is using
        errors: list[str] = []
        for node in self.nodes:
            try:
                _teardown_node(node.index, node.node_dir)
            except Exception as e:  # noqa: BLE001 - keep tearing down the rest
                errors.append(f"{node.name}: {e}")
        cleanup_stale(self.base_dir)
        self.nodes = []
        if STATE_FILE.exists():
            with contextlib.suppress(OSError):
                STATE_FILE.unlink()
        if self._own_client_dir and self.client_dir:
            shutil.rmtree(self.client_dir, ignore_errors=True)
        self._lock.close()  # type: ignore[attr-defined]
        self._lock = None
        if errors:
            raise ClusterError("teardown: " + "; ".join(errors))

    @classmethod
    def attach(cls) -> "TestCluster | None":
        """Rebuild the object of a cluster that is up (from the state file), e.g. for the script."""
        state = read_state()
        if not state:
            return None
        c = cls(size=state["size"], base_dir=Path(state["base_dir"]),
                client_dir=Path(state["client_dir"]) if state.get("client_dir") else None,
                owner=state.get("owner", "?"))
        for n in state.get("nodes", []):
            idx = int(n["name"][1:])
            c.nodes.append(Node(idx, Path(n["node_dir"]), c.client_dir or Path("/nonexistent"),
                                holder_pid=int(n.get("holder_pid") or 0), dockerd=n.get("dockerd", True)))
        return c

    def write_known_hosts(self, path: Path, nodes: Iterable[Node]) -> Path:
        """Write a known_hosts that trusts only ``nodes`` (e.g. all but one, to test refusal)."""
        path.write_text(known_hosts_text(nodes))
        return path

    def write_ssh_config(self, path: Path, known_hosts: Path) -> Path:
        """An ssh_config like the cluster's but pointing at another known_hosts file."""
        path.write_text(ssh_config_text(self.nodes, self.identity, known_hosts))
        return path

    # -- internals ------------------------------------------------------------------------
    def _write_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        state = {
            "owner": self.owner, "owner_pid": os.getpid(), "size": self.size,
            "base_dir": str(self.base_dir), "client_dir": str(self.client_dir),
            "ssh_config": str(self.client_dir / "ssh_config") if self.client_dir else None,
            "host_ip": HOST_IP, "bridge": BRIDGE,
            "nodes": [{"name": n.name, "ip": n.ip, "netns": n.netns, "veth": n.veth,
                       "holder_pid": n.holder_pid, "node_dir": str(n.node_dir), "dockerd": n.dockerd}
                      for n in self.nodes],
        }
        tmp = STATE_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(STATE_FILE)

    def _make_client_key(self) -> None:
        assert self.client_dir
        os.chmod(self.client_dir, 0o700)
        if not self.identity.exists():
            _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rr-test-client", "-f", str(self.identity)])

    def _make_bridge(self) -> None:
        _sh(["ip", "link", "add", BRIDGE, "type", "bridge"])
        # no IPv6 autoconf chatter on the test bridge; IPv4 only, no default route anywhere
        _sh(["sysctl", "-qw", f"net.ipv6.conf.{BRIDGE}.disable_ipv6=1"], check=False)
        _sh(["ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE])
        _sh(["ip", "link", "set", BRIDGE, "up"])
        # a root-ns dockerd sets FORWARD to DROP and bridge netfilter is on: let node<->node pass
        _sh(["iptables", "-I", *FORWARD_RULE])

    def _bridge_ipv6(self) -> None:
        """IPv6 on the bridge, fixed addresses only (no autoconfiguration, no router advertisements)."""
        for key, value in (("addr_gen_mode", "1"), ("accept_ra", "0"), ("autoconf", "0"), ("disable_ipv6", "0")):
            _sh(["sysctl", "-qw", f"net.ipv6.conf.{BRIDGE}.{key}={value}"])
        for addr in ("fd00:198:18::1/64", "fe80::1/64"):
            _sh(["ip", "addr", "replace", addr, "dev", BRIDGE, "nodad"])

    def _forget_neighbours(self, node: Node) -> None:
        """Drop the host's and the other nodes' ARP/ND entries for `node`'s addresses.

        A node made again under the same index has a new MAC; a still-REACHABLE entry for the old one
        sends every packet to nobody for up to ~45 s (base_reachable_time, then delay and probes)."""
        addresses = [node.ip, node.ip6, node.link_local] if node.ipv6 else [node.ip]
        batch = "".join(f"neigh flush to {address}\n" for address in addresses)
        for prefix in ([], *(["-n", other.netns] for other in self.nodes if other.index != node.index)):
            _sh(["ip", *prefix, "-force", "-batch", "-"], check=False, input=batch.encode())

    def _make_node(self, node: Node) -> None:
        ns, veth = node.netns, node.veth
        self._forget_neighbours(node)  # also after a crashed run that never removed it
        _sh(["ip", "netns", "add", ns])
        _sh(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        _sh(["sysctl", "-qw", f"net.ipv6.conf.{veth}.disable_ipv6=1"], check=False)
        _sh(["ip", "link", "set", veth, "master", BRIDGE, "up"])
        _sh(["nsenter", f"--net=/var/run/netns/{ns}", "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"],
            check=False)
        _sh(["ip", "-n", ns, "addr", "add", f"{node.ip}/24", "dev", "eth0"])
        if node.ipv6:
            ns_sysctl = ["nsenter", f"--net=/var/run/netns/{ns}", "sysctl", "-qw"]
            for key, value in (("addr_gen_mode", "1"), ("accept_ra", "0"), ("autoconf", "0"),
                               ("disable_ipv6", "0")):
                _sh([*ns_sysctl, f"net.ipv6.conf.eth0.{key}={value}"])
            for addr in (f"{node.ip6}/64", f"{node.link_local}/64"):
                _sh(["ip", "-n", ns, "addr", "add", addr, "dev", "eth0", "nodad"])
        _sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _sh(["ip", "-n", ns, "link", "set", "lo", "up"])

        # fresh HOME and run dir each run; docker data-root persists (image cache)
        for d in (node.home, node.run_dir):
            if d.exists():
                shutil.rmtree(d)
        node.home.mkdir(parents=True, mode=0o700)
        os.chmod(node.home, 0o700)
        node.run_dir.mkdir(parents=True, mode=0o755)
        node.docker_root.mkdir(parents=True, exist_ok=True)
        _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"rr-test-host-{node.name}",
             "-f", str(node.run_dir / "ssh_host_ed25519_key")])
        (node.run_dir / "sshd_config").write_text(SSHD_CONFIG.format(
            name=node.name, run=node.run_dir, pidfile=node.sshd_pidfile,
            listen="\n".join(f"ListenAddress {a}" for a in node.addresses if not a.endswith(f"%{BRIDGE}"))))

        ready = node.run_dir / "holder.ready"
        env = dict(os.environ, RR_HOME=str(node.home), RR_NAME=node.name, RR_READY=str(ready),
                   RR_ETC_DOCKER=str(node.node_dir / "etc-docker"),
                   RR_SHARE=" ".join(self.share_paths))
        errlog = open(node.run_dir / "holder.log", "wb")
        holder = subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{ns}", "unshare", "-m", "-u", "--propagation", "private",
             "/bin/sh", "-c", HOLDER_SCRIPT],
            stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog, env=env, start_new_session=True)
        errlog.close()
        node.holder_pid = holder.pid  # nsenter and unshare exec: this pid becomes `sleep infinity`
        (node.run_dir / "holder.pid").write_text(str(holder.pid))

        def holder_ready() -> bool:
            if holder.poll() is not None:
                raise ClusterError(f"{node.name} holder exited rc={holder.returncode}: "
                                   + (node.run_dir / "holder.log").read_text(errors="replace"))
            return ready.exists()
        _wait(f"{node.name} namespace holder", holder_ready, 15, 0.05)

    def _write_client_files(self) -> None:
        """Client-side ssh files on the host and, like a user's setup, in every node's ~/.ssh."""
        assert self.client_dir
        self.known_hosts.write_text(known_hosts_text(self.nodes))
        self.ssh_config.write_text(ssh_config_text(self.nodes, self.identity, self.known_hosts))
        pub = (self.client_dir / "id_ed25519.pub").read_text()
        for node in self.nodes:
            dot = node.home / ".ssh"
            dot.mkdir(mode=0o700, exist_ok=True)
            (dot / "authorized_keys").write_text(pub)
            shutil.copy(self.identity, dot / "id_ed25519")
            os.chmod(dot / "id_ed25519", 0o600)
            shutil.copy(self.client_dir / "id_ed25519.pub", dot / "id_ed25519.pub")
            (dot / "known_hosts").write_text(known_hosts_text(self.nodes))
            # inside a node the same key and known_hosts live at /root/.ssh
            (dot / "config").write_text(ssh_config_text(self.nodes, Path("/root/.ssh/id_ed25519"),
                                                        Path("/root/.ssh/known_hosts")))
            for f in dot.iterdir():
                os.chmod(f, 0o600)

    def _finish_dockerd(self, node: Node) -> None:
        node.wait_dockerd()
        # containers left in the persistent data-root by a crashed run: a node starts empty
        node.remove_containers()


def up_when_free(size: int, owner: str, wait: float) -> "TestCluster":
    """A TestCluster of `size` nodes, brought up once the machine's one cluster is free (benches wait for
    tests); ClusterBusy after `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return TestCluster(size, owner=owner).__enter__()
        except ClusterBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(3)


def acquire_lock(wait: float = 0):
    """Hold /run/runrecipe-test/cluster.lock (flock) for the cluster's lifetime in this process.

    A cluster brought up by the testcluster script holds it only while starting, so pytest may
    replace such a cluster but not one that another pytest process is using."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    f = open(LOCK_FILE, "a+")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            f.seek(0)
            mine = f.read().strip() == str(os.getpid())  # this process holds it: waiting would never end
            if mine or time.monotonic() >= deadline:
                f.close()
                st = read_state() or {}
                raise ClusterBusy(f"the test cluster is in use by pid {st.get('owner_pid')} "
                                  f"({st.get('owner')}); only one can run per machine") from None
            time.sleep(0.5)
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def leftovers() -> list[str]:
    """What a cluster would leave behind if teardown missed something (empty when clean)."""
    found = []
    out = _sh(["ip", "netns", "list"], check=False).stdout.decode()
    found += [f"netns {ln.split()[0]}" for ln in out.splitlines()
              if ln.split() and ln.split()[0].startswith(NETNS_PREFIX)]
    if _sh(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
        found.append(f"bridge {BRIDGE}")
    if _sh(["iptables", "-C", *FORWARD_RULE], check=False).returncode == 0:
        found.append("iptables FORWARD rule")
    links = _sh(["ip", "-o", "link", "show"], check=False).stdout.decode()
    found += [f"link {ln.split(':')[1].strip()}" for ln in links.splitlines()
              if ln.count(":") > 1 and ln.split(":")[1].strip().startswith(VETH_PREFIX)]
    return found


def read_state() -> dict | None:
    try:
        return json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return None


def _with_descendants(pids: Iterable[int]) -> list[int]:
    """pids and every process below them (from /proc/*/stat parent links)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _teardown_node(index: int, node_dir: Path) -> None:
    """Stop one node's containers and daemons and delete its netns; tolerant of missing pieces."""
    ns = f"{NETNS_PREFIX}{index}"
    run = node_dir / "run"
    holder = _read_pid(run / "holder.pid")
    dpid = _read_pid(run / "docker.pid")
    if holder and _pid_alive(holder) and dpid and _pid_alive(dpid):
        nsx = ["nsenter", "-t", str(holder), "-m", "-n", "-u", "--"]
        ps = subprocess.run(nsx + ["docker", "ps", "-aq"], capture_output=True, text=True, timeout=30)
        if ps.returncode == 0 and ps.stdout.split():
            subprocess.run(nsx + ["docker", "rm", "-f", *ps.stdout.split()], capture_output=True, timeout=120)
    if dpid and _pid_is_ours(dpid, ns, node_dir):
        _kill_wait(dpid, 20)
    spid = _read_pid(run / "sshd.pid")
    if spid and _pid_is_ours(spid, ns, node_dir):
        _kill_wait(spid, 5)
    if holder and _pid_is_ours(holder, ns, node_dir):
        _kill_wait(holder, 5)
    # anything still in the netns (ssh sessions, shims, strays) was started by this harness
    for _ in range(3):
        pids = _netns_pids(ns)
        if not pids:
            break
        for pid in pids:
            _kill_wait(pid, 3)
    for groups in (CPU_CGROUPS, ACCT_CGROUPS):
        with contextlib.suppress(OSError):  # empty now: every process of the node has ended
            (groups / f"n{index}").rmdir()
    if os.path.exists(f"/var/run/netns/{ns}"):
        _sh(["ip", "netns", "del", ns], check=False)
    for p in ("holder.pid", "docker.pid", "sshd.pid"):
        with contextlib.suppress(OSError):
            (run / p).unlink()


def _pid_is_ours(pid: int, ns: str, node_dir: Path) -> bool:
    """Only kill a pidfile's pid if it is still in our netns or names our node dir (pid reuse)."""
    if not _pid_alive(pid):
        return False
    if pid in _netns_pids(ns):
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return str(node_dir) in cmdline


def cleanup_stale(base_dir: Path = BASE_DIR) -> None:
    """Remove what a crashed run left: rr-n* netns and their processes, veths, bridge, FORWARD rule."""
    names: set[int] = set()
    out = _sh(["ip", "netns", "list"], check=False).stdout.decode()
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(NETNS_PREFIX) and name[len(NETNS_PREFIX):].isdigit():
            names.add(int(name[len(NETNS_PREFIX):]))
    nodes_dir = base_dir / "nodes"
    if nodes_dir.is_dir():
        for d in nodes_dir.iterdir():
            if d.name.startswith("n") and d.name[1:].isdigit() and (d / "run" / "holder.pid").exists():
                names.add(int(d.name[1:]))
    for i in sorted(names):
        _teardown_node(i, nodes_dir / f"n{i}")
    links = _sh(["ip", "-o", "link", "show"], check=False).stdout.decode()
    for line in links.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(VETH_PREFIX) and name[len(VETH_PREFIX):].isdigit():
                _sh(["ip", "link", "del", name], check=False)
    if _sh(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
        _sh(["ip", "link", "del", BRIDGE], check=False)
    for _ in range(20):  # the rule may have been inserted more than once by crashed runs
        if _sh(["iptables", "-C", *FORWARD_RULE], check=False).returncode != 0:
            break
        _sh(["iptables", "-D", *FORWARD_RULE], check=False)
