"""Preflight over SSH on three real nodes: one table, a failing node named, nothing changed."""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from harness import cluster as rc
from harness import rayimage
from tasks.cluster import preflight as pf
from tasks.errors import RunError
from tasks.nodes import Node
from tasks.connect import SshSettings
from tasks.connect import Ssh

pytestmark = pytest.mark.cluster


def _runners(c: rc.TestCluster) -> tuple[list[Node], dict[str, Ssh]]:
    s = SshSettings(known_hosts=c.known_hosts, ssh_config=c.ssh_config, connect_timeout=2)
    nodes = [Node(n.ip, "root") for n in c.nodes]
    return nodes, {n.target: Ssh(n, s) for n in nodes}


def test_three_nodes_pass_and_report_their_own_facts(cluster3: rc.TestCluster) -> None:
    nodes, runners = _runners(cluster3)
    try:
        facts = pf.preflight(nodes, runners, {n.target: 10**6 for n in nodes})
    finally:
        for r in runners.values():
            r.close()
    assert [f.node for f in facts] == [n.target for n in nodes]
    for f, n in zip(facts, cluster3.nodes):
        assert f.ok and f.ssh == "ok" and f.docker_version and not f.nvidia_runtime
        assert f.docker_disk and f.docker_disk.path == str(n.docker_root) and f.docker_disk.free > 10**6
        assert f.hf_disk and f.hf_disk.path == pf.DEFAULT_HF_CACHE  # absent on the node: its parent's disk
        assert f.gpus == () and f.mem_total and f.model_memory is None
    table = pf.render(facts)
    assert all(f"root@{n.ip}" in table for n in cluster3.nodes)
    assert table.count(" none ") == 3  # GPU column


def test_failing_nodes_are_named_in_one_table(cluster3: rc.TestCluster) -> None:
    n1, n2, n3 = cluster3.nodes
    before = {n.name: n.run(["ls", "-a", "/root"]).stdout for n in cluster3.nodes}
    n3.stop_sshd()
    nodes, runners = _runners(cluster3)
    t0 = time.monotonic()
    try:
        with pytest.raises(RunError) as e:
            pf.preflight(nodes, runners, {f"root@{n2.ip}": 10**18, f"root@{n1.ip}": 10**6})
    finally:
        for r in runners.values():
            r.close()
    assert time.monotonic() - t0 < 10
    rows = {ln.split()[0]: ln for ln in str(e.value).splitlines() if ln.strip().startswith("root@")}
    assert rows[f"root@{n1.ip}"].rstrip().endswith(" ok")
    assert "FAIL: needs 1000000.0 TB" in rows[f"root@{n2.ip}"]
    assert "refused" in rows[f"root@{n3.ip}"] and "FAIL: SSH failed" in rows[f"root@{n3.ip}"]
    assert "none" in rows[f"root@{n1.ip}"]  # GPU column
    assert {n.name: n.run(["ls", "-a", "/root"]).stdout for n in cluster3.nodes} == before


def test_room_for_a_copy_whose_size_preflight_could_not_know(cluster3: rc.TestCluster) -> None:
    """The first run builds the image after preflight: the copy checks each worker's Docker disk itself."""
    nodes, runners = _runners(cluster3)
    workers = [runners[n.target] for n in nodes[1:]]
    try:
        pf.check_room(workers, 10**6, "the image x")  # fits: nothing raised
        with pytest.raises(RunError) as ei:
            pf.check_room(workers, 10**18, "the image x")
    finally:
        for r in runners.values():
            r.close()
    msg = str(ei.value)
    assert msg.startswith("not enough disk for the image x (1000000.0 TB); nothing was copied: "), msg
    for n in cluster3.nodes[1:]:  # every short node, with its real free space on its Docker disk
        assert re.search(rf"root@{n.ip} has [0-9.]+ [KMGT]?B free on {n.docker_root}", msg), msg
    assert ei.value.node == f"root@{cluster3.nodes[1].ip}"


ROOM_DRIVER = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tasks.cluster.roles import Fleet
from tasks.ops.travel import bytes_to_copy
from tasks.plan import Options, make_plan
from tasks.recipe import parse
from tasks.connect import SshSettings
text = "recipe_version: '1'\nname: Room\ncontainer: %s\ncluster_only: true\ncommand: vllm serve org/m\n" % sys.argv[2]
plan = make_plan(parse(text, Path("/tmp/room.yaml")), Options(nodes=sys.argv[3], setup=True))
print(json.dumps(bytes_to_copy(plan, Fleet(plan, SshSettings(), "native"), image=True, weights_too=False)))
"""


def test_an_image_copy_asks_for_room_for_dockers_own_spools(cluster3: rc.TestCluster, tiny_image: str) -> None:
    """`docker save` writes the image out under the head's Docker root before it streams, and `docker
    load` unpacks the whole tar on a worker before it registers layers: the head must have the image's
    size free, each worker lacking it twice that, a worker that has it nothing."""
    head, n2, n3 = cluster3.nodes
    tag = "rr-room-test:v1"
    head.docker("tag", tiny_image, tag, check=True)
    n3.docker("rmi", "-f", tag)
    n2.docker("rmi", "-f", tag)
    rayimage.copy_image(head, n3, tag)  # n3 already has it
    size = int(head.docker("image", "inspect", "-f", "{{.Size}}", tag, check=True).stdout)
    p = head.run([sys.executable, "-c", ROOM_DRIVER, str(Path(__file__).resolve().parents[2]), tag,
                  ",".join(n.ip for n in cluster3.nodes)], timeout=120)
    assert p.returncode == 0, p.stderr
    needs = {k: tuple(v) for k, v in json.loads(p.stdout).items()}
    assert needs == {head.ip: (size, 0), n2.ip: (2 * size, 0), n3.ip: (0, 0)}


def test_interfaces_the_user_named_must_exist_on_every_node(cluster3: rc.TestCluster) -> None:
    """--eth-if / --ib-if name what NCCL must use on every node: a node without it fails preflight,
    named, instead of hanging or falling back once vLLM starts. Each node's own network namespace
    counts (its /sys/class/net would show the host's interfaces)."""
    n1, n2, n3 = cluster3.nodes
    for n in (n1, n2):
        n.run(["ip", "link", "add", "rr-nccl0", "type", "veth", "peer", "name", "rr-nccl1"], check=True)
    nodes, runners = _runners(cluster3)
    try:
        assert all(f.ok for f in pf.preflight(nodes, runners, {}, interfaces=["eth0"]))
        with pytest.raises(RunError) as e:
            pf.preflight(nodes, runners, {}, interfaces=["rr-nccl0"])
        with pytest.raises(RunError) as no_hca:
            pf.preflight(nodes, runners, {}, hcas=["mlx5_0"])
        with pytest.raises(RunError) as host_only:  # the host has br-rr; no node does
            pf.preflight(nodes, runners, {}, interfaces=["br-rr"])
    finally:
        for r in runners.values():
            r.close()
        for n in (n1, n2):
            n.run(["ip", "link", "del", "rr-nccl0"])
    rows = {ln.split()[0]: ln for ln in str(e.value).splitlines() if ln.strip().startswith("root@")}
    assert "rr-nccl0" not in rows[f"root@{n1.ip}"] + rows[f"root@{n2.ip}"], str(e.value)
    assert "FAIL: no network interface 'rr-nccl0' (--eth-if / ETH_IF)" in rows[f"root@{n3.ip}"], str(e.value)
    assert str(no_hca.value).count("FAIL: no InfiniBand/RoCE device 'mlx5_0' (--ib-if / IB_IF)") == 3
    assert str(host_only.value).count("no network interface 'br-rr'") == 3
