"""Discovery runs inside test node n1's namespace, scanning only its eth0 subnet 198.18.0.0/24."""
from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path

import pytest

from harness import cluster as rc
from tasks.cluster.discover import Candidate, default_interface, scan_range, write_env
from tasks.cli.discover_ask import choose
from tasks.errors import ConfigError
from tasks.nodes import load_env

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]

# What `run-recipe --discover --yes` does, as a user logged in on the head would run it.
SCRIPT = r"""
import json, sys, time
from pathlib import Path
from tasks.cluster.discover import discover, write_env
from tasks.cli.discover_ask import choose
from tasks.connect import SshSettings
args = json.loads(sys.argv[1])
settings = SshSettings(known_hosts=Path(args["kh"]) if args.get("kh") else None, connect_timeout=2)
t0 = time.monotonic()
found = discover("eth0", None, settings)
took = time.monotonic() - t0
if args.get("env"):
    write_env(Path(args["env"]), *choose(found, yes=True))
print(json.dumps({"took": took, "found": [c.as_dict() for c in found]}))
"""


def discover_on(node: rc.Node, **args: str) -> tuple[float, dict[str, dict]]:
    """Run discovery inside ``node`` (its netns: only the test bridge is reachable)."""
    p = node.run([sys.executable, "-c", SCRIPT, json.dumps(args)], cwd=str(REPO), timeout=60,
                 env={"PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return out["took"], {c["ip"]: c for c in out["found"]}


def test_finds_exactly_the_test_nodes_and_writes_env(cluster3: rc.TestCluster, tmp_path: Path) -> None:
    n1, n2, n3 = cluster3.nodes
    env = tmp_path / ".env"
    env.write_text("HF_TOKEN=hf_secret\nCLUSTER_NODES=10.9.9.9\n")
    took, found = discover_on(n1, env=str(env))  # ssh settings: n1's own ~/.ssh/config and known_hosts
    assert set(found) == {n.ip for n in cluster3.nodes}
    assert {ip: (c["status"], c["hostname"]) for ip, c in found.items()} == {
        n.ip: ("confirmed", n.name) for n in cluster3.nodes}
    assert [ip for ip, c in found.items() if c["is_self"]] == [n1.ip]
    assert took < 5, took
    values = load_env(env)
    assert values == {"HF_TOKEN": "hf_secret", "CLUSTER_NODES": f"{n1.ip},{n2.ip},{n3.ip}",
                      "COPY_HOSTS": f"{n2.ip},{n3.ip}"}
    assert env.read_text().startswith("# Cluster nodes for run-recipe")


def test_rescan_drops_a_node_whose_sshd_stopped(cluster3: rc.TestCluster) -> None:
    n1, n2, n3 = cluster3.nodes
    assert n3.ip in discover_on(n1)[1]
    n3.stop_sshd()
    _, found = discover_on(n1)  # no cache: the second scan sees the change
    assert set(found) == {n1.ip, n2.ip}
    n3.start_sshd()
    assert discover_on(n1)[1][n3.ip]["status"] == "confirmed"


def test_unknown_host_key_is_listed_unconfirmed_never_trusted(cluster3: rc.TestCluster, tmp_path: Path) -> None:
    n1, n2, n3 = cluster3.nodes
    kh = cluster3.write_known_hosts(tmp_path / "known_hosts", [n1, n3])
    before = kh.read_text()
    _, found = discover_on(n1, kh=str(kh))
    assert found[n2.ip]["status"].startswith("unconfirmed: host key unknown (SHA256:")
    assert not found[n2.ip]["confirmed"] and found[n3.ip]["confirmed"]
    assert kh.read_text() == before
    nodes, copy = choose([Candidate(**{k: v for k, v in c.items() if k != "confirmed"}) for c in found.values()],
                         yes=True)
    assert (nodes, copy) == ([n1.ip, n3.ip], [n3.ip])


# -- no network: range rules, choice and .env ---------------------------------------------
def test_wide_networks_need_an_explicit_cidr() -> None:
    with pytest.raises(ConfigError, match="--cidr 10.1.2.0/24"):
        scan_range(ipaddress.IPv4Interface("10.1.2.3/16"), None)
    with pytest.raises(ConfigError, match="too wide"):
        scan_range(ipaddress.IPv4Interface("10.1.2.3/8"), None)
    assert scan_range(ipaddress.IPv4Interface("10.1.2.3/16"), "10.1.2.0/24").num_addresses == 256
    assert scan_range(ipaddress.IPv4Interface("192.168.7.9/24"), None) == ipaddress.ip_network("192.168.7.0/24")
    with pytest.raises(ConfigError):
        scan_range(ipaddress.IPv4Interface("10.1.2.3/24"), "not-a-net")


def test_default_interface_comes_from_the_default_route(tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_text("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
                     "enP7s7\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
                     "enP7s7\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n")
    assert default_interface(route) == "enP7s7"
    route.write_text(route.read_text().splitlines()[0] + "\n")
    with pytest.raises(ConfigError, match="--interface"):
        default_interface(route)


def test_choose_yes_puts_this_machine_first_and_skips_unconfirmed(monkeypatch: pytest.MonkeyPatch) -> None:
    cands = [Candidate("10.0.0.3", "confirmed", "b"), Candidate("10.0.0.2", "unconfirmed: host key unknown"),
             Candidate("10.0.0.9", "this machine", is_self=True), Candidate("10.0.0.1", "confirmed", "a")]
    assert choose(cands, yes=True) == (["10.0.0.9", "10.0.0.1", "10.0.0.3"], ["10.0.0.1", "10.0.0.3"])
    monkeypatch.setattr(sys, "stdin", open("/dev/null"))
    with pytest.raises(ConfigError, match="--yes"):
        choose(cands, yes=False)


def test_write_env_keeps_other_keys_and_refuses_bad_hosts(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    write_env(env, ["10.0.0.9", "10.0.0.1"], ["10.0.0.1"])
    write_env(env, ["10.0.0.9"], [])
    assert load_env(env) == {"CLUSTER_NODES": "10.0.0.9", "COPY_HOSTS": ""}
    assert env.read_text().count("# Cluster nodes") == 1
    with pytest.raises(ConfigError):
        write_env(env, ["10.0.0.9", "a b; rm -rf /"], [])
    assert load_env(env)["CLUSTER_NODES"] == "10.0.0.9"


def test_an_explicit_cidr_is_at_most_a_16() -> None:
    with pytest.raises(ConfigError, match=r"--cidr 10.0.0.0/8: 16777216 addresses .* --cidr 10.0.0.0/24"):
        scan_range(ipaddress.IPv4Interface("10.1.2.3/24"), "10.0.0.0/8")
    assert scan_range(ipaddress.IPv4Interface("10.1.2.3/24"), "10.1.0.0/16").num_addresses == 65536


def test_a_scan_holds_a_few_probes_whatever_the_range_size() -> None:
    """Over loopback only: 4094 addresses of 127.0.0.0/20, a listener on 127.0.0.1 alone. The scan
    must take addresses as it goes (one task per address took 24 GB for a /8) and find the listener."""
    import asyncio

    from tasks.cluster.discover import _probe_all

    most_tasks = 0

    async def scan() -> list:
        nonlocal most_tasks
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        scanning = asyncio.ensure_future(_probe_all(
            map(str, ipaddress.ip_network("127.0.0.0/20").hosts()), port, 8, 0.5, lambda ip: ip))
        async with server:
            while not scanning.done():
                most_tasks = max(most_tasks, len(asyncio.all_tasks()))
                await asyncio.sleep(0.001)
            return scanning.result()

    assert asyncio.run(scan()) == ["127.0.0.1"]
    # each prober and its connect's wait_for task, the scan, this test, the listener's: not one per address
    assert 0 < most_tasks <= 2 * 8 + 4, most_tasks
