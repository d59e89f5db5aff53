"""tasks.ops.weights_copy on real nodes: image chain-streamed to workers, weights rsynced, each proven per node.

The image part runs the library *on the head* (inside n1's namespaces, as a user there would), so
`docker save` talks to the head's daemon and the chain runs n1 -> n2 -> n3 over real ssh. The weights
part runs from the host (198.18.0.1) with a hand-built HF cache in a temp dir as the head's cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cluster as rc
from harness import rayimage

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tasks.connect import chain  # noqa: E402
from tasks.ops import weights_copy as dist, weights_state
from tasks.ops.copy_chain import Report
from tasks.ops import image_copy
from tasks.errors import RunError  # noqa: E402
from tasks.connect import HERE, SshLink, close_shared_connections  # noqa: E402

IMAGE = "rr-dist-test:v1"
IMAGE_MB = 32

DRIVER = r"""
import dataclasses, json, sys
sys.path.insert(0, sys.argv[1])
from tasks.ops import image_copy as d
from tasks.connect import SshLink
from tasks.connect.chain import Worker
from tasks.errors import RunError
a = json.loads(sys.argv[2])
workers = [Worker(w["name"], SshLink(tuple(w["ssh"])), SshLink(tuple(w["peer_ssh"])) if "peer_ssh" in w else None)
           for w in a["workers"]]
try:
    r = d.distribute_image(a["tag"], a["head_id"], workers,
                           progress=None, stall_timeout=a["stall"])
    print(json.dumps({"ok": True, "report": dataclasses.asdict(r)}))
except RunError as e:
    print(json.dumps({"ok": False, "node": e.node, "error": str(e)}))
"""


# ----------------------------------------------------------------------------- helpers
def ssh_prefix(node: rc.Node) -> list[str]:
    """What tasks/connect's ssh_argv gives: strict host keys, one key, batch mode, the node's address."""
    return ["ssh", *node.ssh_args, node.target]


def link(node: rc.Node) -> SshLink:
    return SshLink(tuple(ssh_prefix(node)))


@pytest.fixture(scope="module")
def big_image(cluster3: rc.TestCluster, tiny_image: str) -> tuple[str, str]:
    """A ~32 MB image on the head (busybox + a random layer): big enough to cut a link mid-copy."""
    head = cluster3.head
    hid = rayimage.has_image(head, IMAGE)
    if not hid:
        ctx = head.home / "dist-ctx"
        ctx.mkdir(exist_ok=True)
        (ctx / "blob").write_bytes(os.urandom(IMAGE_MB << 20))
        (ctx / "Dockerfile").write_text(f"FROM {tiny_image}\nCOPY blob /blob\n")
        head.docker("build", "-q", "-t", IMAGE, "/root/dist-ctx", env={"DOCKER_BUILDKIT": "0"},
                    check=True, timeout=300)
        hid = rayimage.has_image(head, IMAGE)
    assert hid
    return IMAGE, hid


def drop_image(*nodes: rc.Node) -> None:
    for n in nodes:
        n.docker("rmi", "-f", IMAGE, timeout=120)
        assert not rayimage.has_image(n, IMAGE)


def distrusting(node: rc.Node) -> list[str]:
    """How a worker would reach `node` if it had no known_hosts entry for it: the hop is refused."""
    return ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", node.target]


def driver_argv(c: rc.TestCluster, tag: str, head_id: str, stall: float = 60, peers_trust: bool = True) -> list[str]:
    workers = [{"name": n.name, "ssh": ssh_prefix(n), **({} if peers_trust else {"peer_ssh": distrusting(n)})}
               for n in c.nodes[1:]]
    args = {"tag": tag, "head_id": head_id, "workers": workers, "stall": stall}
    return [sys.executable, "-c", DRIVER, str(ROOT), json.dumps(args)]


def distribute_on_head(c: rc.TestCluster, tag: str, head_id: str, peers_trust: bool = True) -> dict:
    p = c.head.run(driver_argv(c, tag, head_id, peers_trust=peers_trust), timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- image
def test_image_chain_to_two_workers_then_noop(cluster3: rc.TestCluster, big_image: tuple[str, str]) -> None:
    tag, hid = big_image
    n2, n3 = cluster3.node("n2"), cluster3.node("n3")
    drop_image(n2, n3)
    out = distribute_on_head(cluster3, tag, hid)
    assert out["ok"], out
    rep = out["report"]
    assert rep["strategy"] == "chain"
    assert [n["name"] for n in rep["nodes"] if n["action"] == "sent"] == ["n2", "n3"]
    assert rep["bytes_sent"] > IMAGE_MB << 20  # one stream left the head, not two
    assert rep["bytes_sent"] < 2 * (IMAGE_MB << 20)
    assert rayimage.has_image(n2, tag) == hid and rayimage.has_image(n3, tag) == hid

    again = distribute_on_head(cluster3, tag, hid)
    assert again["ok"], again
    assert again["report"]["bytes_sent"] == 0
    assert [n["action"] for n in again["report"]["nodes"]] == ["up-to-date", "up-to-date"]


def test_image_only_missing_worker_gets_it(cluster3: rc.TestCluster, big_image: tuple[str, str]) -> None:
    tag, hid = big_image
    n2, n3 = cluster3.node("n2"), cluster3.node("n3")
    distribute_on_head(cluster3, tag, hid)
    drop_image(n3)
    out = distribute_on_head(cluster3, tag, hid)
    assert out["ok"], out
    assert {n["name"]: n["action"] for n in out["report"]["nodes"]} == {"n2": "up-to-date", "n3": "sent"}
    assert rayimage.has_image(n3, tag) == hid


def test_image_falls_back_to_the_head_when_workers_cannot_reach_each_other(
        cluster3: rc.TestCluster, big_image: tuple[str, str]) -> None:
    """n2 cannot verify n3's host key, so the chain's n2 -> n3 hop is refused: n3 gets its own stream."""
    tag, hid = big_image
    n2, n3 = cluster3.node("n2"), cluster3.node("n3")
    drop_image(n2, n3)
    out = distribute_on_head(cluster3, tag, hid, peers_trust=False)
    assert out["ok"], out
    rep = out["report"]
    assert rep["strategy"] == "chain, then direct to n3", rep["strategy"]
    assert rayimage.has_image(n2, tag) == hid and rayimage.has_image(n3, tag) == hid
    assert 2 * (IMAGE_MB << 20) < rep["bytes_sent"] < 3 * (IMAGE_MB << 20)  # the head's link carried it twice


def test_image_link_down_mid_copy_names_node_and_rerun_completes(
        cluster3: rc.TestCluster, big_image: tuple[str, str]) -> None:
    tag, hid = big_image
    n2, n3 = cluster3.node("n2"), cluster3.node("n3")
    drop_image(n2, n3)
    for n in cluster3.nodes:
        n.shape("50mbit")  # 32 MB takes ~5.5 s: time to pull n3's cable in the middle
    proc = cluster3.head.popen(driver_argv(cluster3, tag, hid), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    assert proc.poll() is None, "the copy finished before the link could be cut"
    n3.link_down()
    t_cut = time.monotonic()
    out_text, err = proc.communicate(timeout=120)
    took = time.monotonic() - t_cut
    out = json.loads(out_text.strip().splitlines()[-1])
    assert not out["ok"], out
    assert out["node"] == "n3", out
    assert "n3" in out["error"]
    assert took < 60, f"failure took {took:.0f} s to surface"
    n3.link_up()
    for n in cluster3.nodes:
        n.unshape()
    assert rayimage.has_image(n3, tag) != hid  # not loaded, and nothing claimed it was

    again = distribute_on_head(cluster3, tag, hid)
    assert again["ok"], again
    assert rayimage.has_image(n2, tag) == hid and rayimage.has_image(n3, tag) == hid
    assert "n3" in [n["name"] for n in again["report"]["nodes"] if n["action"] == "sent"]


def test_image_id_on_local_and_remote(cluster3: rc.TestCluster, big_image: tuple[str, str]) -> None:
    tag, hid = big_image
    n2 = cluster3.node("n2")
    distribute_on_head(cluster3, tag, hid)
    assert image_copy.image_id_on(link(n2), tag) == hid
    assert image_copy.image_id_on(link(n2), "rr-no-such:image") is None
    n2.stop_dockerd()
    with pytest.raises(RunError) as ei:
        image_copy.image_id_on(link(n2), tag)
    assert ei.value.node == n2.target


# ----------------------------------------------------------------------------- weights
REPO = "org/tiny-model"
REMOTE_CACHE = "~/.cache/huggingface/hub"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def make_commit(cache: Path, repo: str, files: dict[str, bytes], ref: str = "main") -> str:
    """Write one commit of `repo` in HF cache layout (blobs, relative snapshot links, refs, trees json)."""
    commit = hashlib.sha1(json.dumps(sorted((p, hashlib.sha256(d).hexdigest()) for p, d in files.items()))
                          .encode()).hexdigest()
    folder = cache / ("models--" + repo.replace("/", "--"))
    listing = {}
    for path, data in files.items():
        lfs = len(data) > 1_000_000 or path.endswith(".safetensors")
        blob = hashlib.sha256(data).hexdigest() if lfs else git_sha1(data)
        (folder / "blobs").mkdir(parents=True, exist_ok=True)
        if not (folder / "blobs" / blob).exists():
            (folder / "blobs" / blob).write_bytes(data)
        link = folder / "snapshots" / commit / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(folder / "blobs" / blob, link.parent))
        info = {"size": len(data), "blob_id": git_sha1(data)}
        if lfs:
            info.update(lfs_sha256=blob, lfs_size=len(data))
        listing[path] = info
    (folder / "trees").mkdir(exist_ok=True)
    (folder / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": listing}))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / ref).write_text(commit)
    return commit


def model_files(seed: int = 0) -> dict[str, bytes]:
    rnd = lambda n, s: hashlib.shake_256(f"{seed}-{s}".encode()).digest(n)  # noqa: E731
    return {
        "config.json": b'{"model_type": "tiny"}',
        "tokenizer.json": rnd(200_000, "tok"),
        "model-00001-of-00002.safetensors": rnd(3 << 20, "w1"),
        "model-00002-of-00002.safetensors": rnd(2 << 20, "w2"),
        "sub/dir/extra.bin": rnd(1_500_000, "extra"),
    }


def remote_folder(node: rc.Node) -> Path:
    return node.home / ".cache/huggingface/hub" / ("models--" + REPO.replace("/", "--"))


def sync(cache: Path, commit: str, nodes: list[rc.Node], verify: bool = False,
         peers_trust: bool = True) -> Report:
    return dist.sync_weights(cache, REMOTE_CACHE, REPO, commit,
                             [chain.Worker(n.name, link(n), None if peers_trust else SshLink(tuple(distrusting(n))))
                              for n in nodes], verify=verify)


@pytest.fixture
def workers(cluster3: rc.TestCluster) -> list[rc.Node]:
    nodes = cluster3.nodes[1:]
    for n in nodes:  # each test starts with no copy of the model on the workers
        subprocess.run(["rm", "-rf", str(remote_folder(n))], check=True)
    return nodes


def test_weights_sync_layout_noop_and_one_changed_file(tmp_path: Path, workers: list[rc.Node]) -> None:
    cache = tmp_path / "hub"
    files = model_files()
    c1 = make_commit(cache, REPO, files)
    rep = sync(cache, c1, workers)
    assert rep.sent_to == ["n2", "n3"]
    model_bytes = sum(len(d) for d in files.values())
    assert rep.strategy == "chain (tar stream)"
    assert model_bytes < rep.bytes_sent < 1.2 * model_bytes  # left the head once for both workers
    for n in workers:
        folder = remote_folder(n)
        assert (folder / "refs" / "main").read_text() == c1
        assert (folder / "trees" / f"{c1}.json").exists()
        for path, data in files.items():
            snap = folder / "snapshots" / c1 / path
            assert snap.is_symlink() and not os.readlink(snap).startswith("/")  # relative, as HF makes it
            assert snap.read_bytes() == data
        assert weights_state.remote_manifest(link(n), REMOTE_CACHE, REPO, c1) == \
            weights_state.remote_manifest(HERE, str(cache), REPO, c1)
    assert {n.files for n in rep.nodes} == {6}  # 5 blobs + the tree listing

    again = sync(cache, c1, workers)
    assert again.up_to_date == ["n2", "n3"] and again.bytes_sent == 0
    assert all(n.files == 0 for n in again.nodes)

    # a new commit where one weight shard changed: only that blob (and the new listing) travel
    files2 = dict(files, **{"model-00002-of-00002.safetensors": model_files(seed=1)["model-00002-of-00002.safetensors"]})
    c2 = make_commit(cache, REPO, files2)
    new_blob = hashlib.sha256(files2["model-00002-of-00002.safetensors"]).hexdigest()
    rep2 = sync(cache, c2, workers)
    for n in rep2.nodes:
        assert n.action == "sent"
        sent_blobs = [p for p in n.detail.split() if p.startswith("blobs/")]
        assert sent_blobs == [f"blobs/{new_blob}"], n.detail
        assert n.files == 2  # the changed blob + trees/<c2>.json
        assert (2 << 20) <= n.bytes < (2 << 20) + 100_000  # literal data: that file, not the model
    for n in workers:
        assert (remote_folder(n) / "refs" / "main").read_text() == c2
    assert rep2.bytes_sent < (2 << 20) + 200_000  # the changed shard left the head once


def test_open_hops_connects_each_pair_once_and_shrugs_off_a_refused_hop(workers: list[rc.Node]) -> None:
    """What a run does right after preflight: the chain's worker-to-worker connection is then up on
    n2 (its master answers), so the stream's hop needs no handshake of its own."""
    close_shared_connections()  # a fresh run: no hop socket of an earlier test's connections
    n2, n3 = workers
    w2, w3 = (chain.Worker(n.name, link(n)) for n in workers)
    hop = w3.hop.argv_for([], from_head=False)[:-1]  # the hop's ssh, without a command

    def master_on_n2() -> int:
        return n2.run([*hop[:-1], "-O", "check", hop[-1]]).returncode

    assert master_on_n2() == 255  # not open yet
    chain.open_hops([[w2, w3], [w2, w3]])
    assert master_on_n2() == 0
    refused = chain.Worker(n3.name, link(n3), peer=SshLink(tuple(distrusting(n3))))
    chain.open_hops([[w2, refused]])  # no error here: the stream reports it, and the head takes over


def test_weights_chain_falls_back_to_rsync(tmp_path: Path, workers: list[rc.Node]) -> None:
    """n2 cannot verify n3's host key: the chain reaches n2 only, n3 then gets rsync from the head."""
    cache = tmp_path / "hub"
    files = model_files()
    commit = make_commit(cache, REPO, files)
    rep = sync(cache, commit, workers, peers_trust=False)
    assert rep.strategy == "chain (tar stream), then rsync to n3", rep.strategy
    for n in workers:
        assert weights_state.remote_manifest(link(n), REMOTE_CACHE, REPO, commit) == \
            weights_state.remote_manifest(HERE, str(cache), REPO, commit)
        assert (remote_folder(n) / "snapshots" / commit / "tokenizer.json").read_bytes() == files["tokenizer.json"]


def test_weights_truncated_and_corrupted_blobs(tmp_path: Path, workers: list[rc.Node]) -> None:
    cache = tmp_path / "hub"
    files = model_files()
    commit = make_commit(cache, REPO, files)
    sync(cache, commit, workers)
    n2, n3 = workers
    shard = "model-00001-of-00002.safetensors"
    blob = remote_folder(n2) / "blobs" / hashlib.sha256(files[shard]).hexdigest()

    os.truncate(blob, 1000)  # e.g. a disk filled up mid-copy
    rep = sync(cache, commit, workers)
    assert {n.name: n.action for n in rep.nodes} == {"n2": "sent", "n3": "up-to-date"}
    assert (remote_folder(n2) / "snapshots" / commit / shard).read_bytes() == files[shard]

    blob3 = remote_folder(n3) / "blobs" / blob.name
    data = bytearray(blob3.read_bytes())
    data[12345] ^= 0xFF  # same size, wrong byte
    blob3.write_bytes(bytes(data))
    assert sync(cache, commit, workers).up_to_date == ["n2", "n3"]  # size only: cannot see it
    rep = sync(cache, commit, workers, verify=True)
    assert {n.name: n.action for n in rep.nodes} == {"n2": "up-to-date", "n3": "sent"}
    assert blob3.read_bytes() == files[shard]
    assert sync(cache, commit, workers, verify=True).up_to_date == ["n2", "n3"]


def test_weights_broken_worker_names_node(tmp_path: Path, workers: list[rc.Node]) -> None:
    cache = tmp_path / "hub"
    commit = make_commit(cache, REPO, model_files())
    n2, n3 = workers
    n3.stop_sshd()
    close_shared_connections()  # a new run: connections opened by earlier tests in this process would outlive sshd
    t0 = time.monotonic()
    with pytest.raises(RunError) as ei:
        sync(cache, commit, workers)
    assert ei.value.node == "n3" and "weights manifest" in str(ei.value)
    assert time.monotonic() - t0 < 30
    n3.start_sshd()
    assert sync(cache, commit, workers).sent_to == ["n3"]  # n2 got it in the failed run already


# ----------------------------------------------------------------------------- a long chain
WIDE = 16  # workers: past the ~12 at which hop commands nested in each other's argv stopped working


@pytest.fixture
def wide(cluster3: rc.TestCluster) -> Iterator[list[rc.Node]]:
    """n2, n3 and 14 more nodes with sshd only (no dockerd: a weights chain needs none), empty caches."""
    extra = cluster3.add_nodes(WIDE - 2, dockerd=False)
    try:
        nodes = cluster3.nodes[1:]
        for n in nodes:
            subprocess.run(["rm", "-rf", str(remote_folder(n))], check=True)
        yield nodes
    finally:
        cluster3.remove_nodes(extra)


def test_weights_chain_through_sixteen_workers(tmp_path: Path, wide: list[rc.Node]) -> None:
    """One tar stream leaves the head once and runs through all 16 workers; each ends up with every
    file of the commit, byte for byte, in the HF cache layout."""
    rnd = lambda n, s: hashlib.shake_256(s.encode()).digest(n)  # noqa: E731
    files = {"config.json": b'{"model_type": "tiny"}', "tokenizer.json": rnd(150_000, "tok"),
             "model-00001-of-00002.safetensors": rnd(600_000, "w1"),
             "model-00002-of-00002.safetensors": rnd(400_000, "w2"), "sub/dir/extra.bin": rnd(50_000, "x")}
    cache = tmp_path / "hub"
    commit = make_commit(cache, REPO, files)
    t0 = time.monotonic()
    rep = sync(cache, commit, wide)
    took = time.monotonic() - t0
    assert rep.strategy == "chain (tar stream)", rep.strategy
    assert rep.sent_to == [n.name for n in wide]
    model_bytes = sum(len(d) for d in files.values())
    assert model_bytes < rep.bytes_sent < 1.2 * model_bytes, rep.bytes_sent  # left the head once, not 16 times
    for n in wide:
        folder = remote_folder(n)
        assert (folder / "refs" / "main").read_text() == commit, n.name
        assert (folder / "trees" / f"{commit}.json").read_bytes() == \
            (cache / folder.name / "trees" / f"{commit}.json").read_bytes(), n.name
        for path, data in files.items():
            snap = folder / "snapshots" / commit / path
            assert snap.is_symlink() and not os.readlink(snap).startswith("/"), (n.name, path)
            assert snap.read_bytes() == data, (n.name, path)
    assert took < 60, f"16 workers took {took:.1f} s"
    assert sync(cache, commit, wide).up_to_date == [n.name for n in wide]


# ----------------------------------------------------------------------------- IPv6
@pytest.fixture(scope="module")
def v6(cluster3: rc.TestCluster) -> Iterator[list[rc.Node]]:
    """Three more nodes with dockerd, reachable over IPv6 (unique local and link-local) as well as IPv4."""
    extra = cluster3.add_nodes(3, dockerd=True, ipv6=True)
    try:
        yield extra
    finally:
        cluster3.remove_nodes(extra)


def over(node: rc.Node, address: str) -> list[str]:
    return ["ssh", *node.ssh_args, f"root@{address}"]


def over_links(hosts: dict[str, list[str]]) -> list[chain.Worker]:
    return [chain.Worker(name, SshLink(tuple(argv))) for name, argv in hosts.items()]


def test_image_chain_over_ipv6_with_and_without_zone(v6: list[rc.Node]) -> None:
    """Head n4 streams to n5 by its unique local address, n5 forwards to n6 by link-local with zone
    (eth0 is the same name on every node, as the ConnectX port is on identical Sparks)."""
    head, a, b = v6
    tag = rayimage.build_tiny_image(head)
    hid = rayimage.has_image(head, tag)
    for worker in (a, b):  # node data-roots persist between runs: start from "never copied"
        worker.docker("rmi", "-f", tag, timeout=120)
    workers = [{"name": a.name, "ssh": over(a, a.ip6)}, {"name": b.name, "ssh": over(b, f"{b.link_local}%eth0")}]
    args = {"tag": tag, "head_id": hid, "workers": workers, "stall": 60}
    p = head.run([sys.executable, "-c", DRIVER, str(ROOT), json.dumps(args)], timeout=300)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["ok"], out
    assert out["report"]["strategy"] == "chain"
    assert [n["action"] for n in out["report"]["nodes"]] == ["sent", "sent"]
    assert rayimage.has_image(a, tag) == hid and rayimage.has_image(b, tag) == hid


def test_weights_chain_over_ipv6_with_and_without_zone(tmp_path: Path, v6: list[rc.Node]) -> None:
    """From the host: n5 by link-local with the bridge as zone, then n5 -> n6 by unique local address."""
    _, a, b = v6
    files = model_files(seed=6)
    cache = tmp_path / "hub"
    commit = make_commit(cache, REPO, files)
    hosts = {a.name: over(a, f"{a.link_local}%{rc.BRIDGE}"), b.name: over(b, b.ip6)}
    rep = dist.sync_weights(cache, REMOTE_CACHE, REPO, commit, over_links(hosts), verify=True)
    assert rep.strategy == "chain (tar stream)" and rep.sent_to == [a.name, b.name]
    for node in (a, b):
        snap = remote_folder(node) / "snapshots" / commit
        assert {p: (snap / p).read_bytes() for p in files} == files
    again = dist.sync_weights(cache, REMOTE_CACHE, REPO, commit, over_links(hosts))
    assert again.sent_to == []
    subprocess.run(["rm", "-rf", str(remote_folder(b))], check=True)
    lone = {b.name: over(b, f"{b.link_local}%{rc.BRIDGE}")}  # one worker lacking files: rsync, not a chain
    rep = dist.sync_weights(cache, REMOTE_CACHE, REPO, commit, over_links(lone), verify=True)
    assert rep.sent_to == [b.name] and "rsync" in rep.strategy, rep.strategy
    snap = remote_folder(b) / "snapshots" / commit
    assert {p: (snap / p).read_bytes() for p in files} == files
