"""The test cluster behaves like real machines: own daemons, strict SSH, shaped links, Ray."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from harness import cluster as rc
from harness import rayimage

pytestmark = pytest.mark.cluster


def ssh(cfg: Path, target: str, cmd: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    """ssh from the host (198.18.0.1) with an ssh_config, as a user of the tool would."""
    return subprocess.run(["ssh", "-F", str(cfg), target, cmd], capture_output=True, timeout=timeout, **kw)


def test_ssh_reaches_each_nodes_own_daemon(cluster3: rc.TestCluster) -> None:
    fmt = "'{{.Name}}|{{.ID}}|{{.DockerRootDir}}'"
    infos = {}
    for node in cluster3.nodes:
        p = ssh(cluster3.ssh_config, f"root@{node.ip}", f"hostname; docker info --format {fmt}", text=True)
        assert p.returncode == 0, p.stderr
        host, info = p.stdout.split()
        infos[node.name] = info.split("|")
        assert host == node.name
    name2, id2, root2 = infos["n2"]
    assert name2 == "n2"
    assert root2 == str(cluster3.node("n2").docker_root)
    assert len({i[1] for i in infos.values()}) == 3, f"daemon IDs not distinct: {infos}"
    assert len({i[2] for i in infos.values()}) == 3


def test_nodes_have_no_route_out(cluster3: rc.TestCluster) -> None:
    """Safety: a node can reach only the test subnet."""
    for node in cluster3.nodes:
        routes = node.run(["ip", "-4", "route"], check=True).stdout.strip().splitlines()
        assert routes == [f"198.18.0.0/24 dev eth0 proto kernel scope link src {node.ip}"], routes
        assert node.run(["ip", "-6", "route"]).stdout.strip() == ""


def test_head_runs_as_a_user_would(cluster3: rc.TestCluster) -> None:
    head = cluster3.head
    p = head.run(["sh", "-c", "echo $HOME; hostname; ls /root/.ssh; ssh n3 hostname"], check=True)
    home, host, *rest = p.stdout.split()
    assert (home, host) == ("/root", "n1")
    assert {"config", "known_hosts", "id_ed25519", "authorized_keys"} <= set(rest)
    assert rest[-1] == "n3"
    # the node's /root is its own, not the host's
    (head.home / "marker").write_text("n1 only")
    assert head.run(["cat", "/root/marker"]).stdout == "n1 only"
    assert cluster3.node("n2").run(["cat", "/root/marker"]).returncode != 0


def test_image_streams_between_nodes(cluster3: rc.TestCluster, tiny_image: str) -> None:
    n1, n2 = cluster3.node("n1"), cluster3.node("n2")
    n2.docker("rmi", "-f", tiny_image)
    assert rayimage.has_image(n2, tiny_image) is None
    t0 = time.monotonic()
    p = n1.run(["bash", "-c", f"set -o pipefail; docker save {tiny_image} | ssh n2 docker load"],
               timeout=60)
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 < 30
    assert rayimage.has_image(n2, tiny_image) == rayimage.has_image(n1, tiny_image)
    out = n2.docker("run", "--rm", "--network", "none", tiny_image, "sh", "-c", "echo hello from $(hostname)",
                    timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("hello from")
    # the harness copier is a no-op once IDs match
    assert rayimage.copy_image(n1, n2, tiny_image) is False


def test_unknown_or_changed_host_key_is_refused(cluster3: rc.TestCluster, tmp_path: Path) -> None:
    n1, n2, n3 = cluster3.nodes
    kh = cluster3.write_known_hosts(tmp_path / "known_hosts", [n1, n3])  # n2 missing
    cfg = cluster3.write_ssh_config(tmp_path / "ssh_config", kh)
    assert ssh(cfg, "n1", "true").returncode == 0  # control: the same config works for a known node
    p = ssh(cfg, "n2", "true", text=True)
    assert p.returncode == 255
    assert "Host key verification failed" in p.stderr
    assert kh.read_text().count("\n") == 2, "StrictHostKeyChecking=yes must not add keys"
    # n2's name with n3's key: a changed key is refused too
    kh.write_text(f"n2,{n2.ip} {n3.host_key_pub}\n")
    p = ssh(cfg, f"root@{n2.ip}", "true", text=True)
    assert p.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in p.stderr


def _send(node: rc.Node, data: bytes) -> float:
    t0 = time.monotonic()
    p = subprocess.run(["ssh", *node.ssh_args, node.target, "cat > /dev/null"], input=data,
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return time.monotonic() - t0


def test_shaping_limits_throughput(cluster3: rc.TestCluster) -> None:
    n2 = cluster3.node("n2")
    data = os.urandom(20 << 20)
    rate_mbit = 100
    ideal = len(data) * 8 / (rate_mbit * 1e6)  # 1.68 s
    free = _send(n2, data)
    n2.shape(f"{rate_mbit}mbit")
    try:
        shaped = _send(n2, data)
    finally:
        n2.unshape()
    assert free < 0.5 * ideal, f"unshaped 20 MB took {free:.2f}s"
    assert 0.85 * ideal <= shaped <= 2.0 * ideal, f"shaped: {shaped:.2f}s, ideal {ideal:.2f}s"
    after = _send(n2, data[: 4 << 20])
    assert after < 0.5 * ideal


def test_link_down_makes_ssh_fail_fast(cluster3: rc.TestCluster) -> None:
    n3 = cluster3.node("n3")
    n3.link_down()
    try:
        t0 = time.monotonic()
        p = n3.ssh("true", extra=["-o", "ConnectTimeout=2"], timeout=20)
        took = time.monotonic() - t0
        assert p.returncode == 255
        assert took < 10, took
    finally:
        n3.link_up()
    rc._wait("ssh to n3 after link_up", lambda: n3.ssh("true", timeout=10).returncode == 0, 20)


def test_stopped_sshd_and_dockerd_fail_like_a_dead_node(cluster3: rc.TestCluster) -> None:
    n3 = cluster3.node("n3")
    n3.stop_dockerd()
    p = n3.ssh("docker info", timeout=30)
    assert p.returncode != 0 and b"docker" in p.stderr.lower() + p.stdout.lower()
    n3.stop_sshd()
    p = n3.ssh("true", timeout=20)
    assert p.returncode == 255 and b"refused" in p.stderr
    n3.heal()
    assert n3.ssh("docker info --format '{{.Name}}'", timeout=30).stdout.strip() == b"n3"


def test_ray_worker_joins_head(cluster3: rc.TestCluster, ray_image: str) -> None:
    n1, n2 = cluster3.node("n1"), cluster3.node("n2")
    common = ["run", "-d", "--network", "host", "--shm-size", "256m",
              "-e", "RAY_memory_monitor_refresh_ms=0", "--label", "runrecipe.test=1"]
    ray_opts = ["--block", "--num-cpus", "1", "--object-store-memory", "100000000", "--disable-usage-stats"]
    try:
        n1.docker(*common, "--name", "rr-ray-head", ray_image, "ray", "start", "--head",
                  "--node-ip-address", n1.ip, "--port", "6379", "--include-dashboard=false", *ray_opts,
                  check=True, timeout=60)
        n2.docker(*common, "--name", "rr-ray-worker", ray_image, "ray", "start",
                  "--address", f"{n1.ip}:6379", "--node-ip-address", n2.ip, *ray_opts, check=True, timeout=60)
        status = ""

        def two_nodes() -> bool:
            nonlocal status
            p = n1.docker("exec", "rr-ray-head", "ray", "status", timeout=30)
            status = p.stdout + p.stderr
            active = status.split("Active:")[-1].split("Pending:")[0] if "Active:" in status else ""
            return active.count("node_") == 2
        try:
            rc._wait("ray status to show 2 active nodes", two_nodes, 120, 2)
        except rc.ClusterError as e:
            logs = n2.docker("logs", "--tail", "20", "rr-ray-worker").stderr
            pytest.fail(f"{e}\nlast ray status:\n{status}\nworker log:\n{logs}")
    finally:
        n1.docker("rm", "-f", "rr-ray-head", timeout=60)
        n2.docker("rm", "-f", "rr-ray-worker", timeout=60)
    assert n1.containers() == [] and n2.containers() == []
