"""Fixtures for tests on a real 3-node test cluster (netns + own sshd + own dockerd per node).

`cluster3` is session-scoped because bring-up is cheap (~1 s) but images live in
each node's persistent docker data-root; failure injection done by one test is
undone after it (`heal`), and every node's containers are removed after each test.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ -> `harness` package

from harness import cluster as rc  # noqa: E402
from harness import rayimage  # noqa: E402


def _why_no_cluster() -> str | None:
    if os.geteuid() != 0:
        return "test cluster needs root (netns, mounts, dockerd)"
    for tool in ("ip", "nsenter", "unshare", "dockerd", "docker", "ssh", "ssh-keygen", "tc", "iptables", "rsync"):
        if not shutil.which(tool):
            return f"test cluster needs `{tool}` on PATH"
    if not os.path.exists("/usr/sbin/sshd"):
        return "test cluster needs openssh-server (/usr/sbin/sshd)"
    p = subprocess.run(["ip", "netns", "list"], capture_output=True)
    if p.returncode != 0:
        return f"`ip netns` is unavailable: {p.stderr.decode(errors='replace').strip()}"
    return None


def _lock_holder() -> int | None:
    try:
        return int(rc.LOCK_FILE.read_text().strip())
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="session")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rc.TestCluster]:
    """n1 (head), n2, n3 on 198.18.0.11-13; torn down (and checked clean) at session end if we brought it up."""
    why = _why_no_cluster()
    if why:
        pytest.skip(why)
    deadline = time.monotonic() + float(os.environ.get("RR_CLUSTER_WAIT", "120"))
    while True:
        c = rc.TestCluster(3, client_dir=tmp_path_factory.mktemp("faults-cluster"))
        try:
            c.__enter__()
            break
        except rc.ClusterBusy as exc:
            if _lock_holder() == os.getpid():  # this very session's tests/cluster fixture holds it
                attached = rc.TestCluster.attach()
                if attached and len(attached.nodes) == 3:
                    yield attached
                    return
            if time.monotonic() > deadline:
                pytest.skip(str(exc))
            time.sleep(5)
    try:
        yield c
    finally:
        c.teardown()
        left = rc.leftovers()
        assert not left, f"test cluster teardown left: {left}"


@pytest.fixture(autouse=True)
def _heal_cluster(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test using cluster3: remove its containers and undo link/daemon/shaping changes."""
    yield
    if "cluster3" not in request.fixturenames:
        return
    c: rc.TestCluster = request.getfixturevalue("cluster3")
    for node in c.nodes:
        node.heal()
        node.remove_containers()


@pytest.fixture(scope="session")
def ray_image(cluster3: rc.TestCluster) -> str:
    """Tag of the Ray test image (Debian bookworm + ray wheels), present on every node."""
    if not shutil.which("debootstrap"):
        pytest.skip("ray_image needs debootstrap (apt-get install debootstrap)")
    return rayimage.ensure_ray_image(cluster3.nodes, log=lambda m: print(f"[ray_image] {m}"))


@pytest.fixture(scope="session")
def tiny_image(cluster3: rc.TestCluster) -> str:
    """Tag of a ~2 MB busybox image (FROM scratch), built on the head node only."""
    return rayimage.build_tiny_image(cluster3.head)
