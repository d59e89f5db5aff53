"""A whole cluster run on three real netns nodes: the tool runs on the head as a user there would.

Everything is real (sshd with verified host keys, three dockerds, Ray, docker save | ssh | docker
load, rsync of the HF cache); only vLLM is the stand-in, built FROM the Ray test image.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import cluster as rc
from harness import images, rayimage, vllmsite

ROOT = Path(__file__).resolve().parents[2]
TAG = "rr-cluster-standin"
NODES = "198.18.0.11,198.18.0.12,198.18.0.13"


def executed(out: str) -> list[str]:
    return [ln.split()[1] for ln in out.splitlines() if ln.startswith(".  ")]


@pytest.fixture
def project(cluster3: rc.TestCluster, ray_image: str, tmp_path: Path) -> Path:
    """A project dir (visible inside the nodes: /tmp is shared) with a Docker folder FROM the Ray image."""
    root = Path(f"/tmp/rr-cluster-project-{os.getpid()}")
    shutil.rmtree(root, ignore_errors=True)
    images.cluster_standin_dir(root / "docker", ray_image)
    (root / "recipes").mkdir()
    (root / ".env").write_text(f"CLUSTER_NODES={NODES}\nNON_PRIVILEGED=1\nETH_IF=eth0\n")
    for node in cluster3.nodes:  # every test starts from "never copied"
        node.docker("rmi", "-f", TAG)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def recipe(root: Path, rid: str, backend: str = " --distributed-executor-backend ray", extra: str = "") -> None:
    (root / "recipes" / f"{rid}.yaml").write_text(f"""\
recipe_version: "1"
name: Cluster {rid}
container: {TAG}
cluster_only: true
{extra}
defaults: {{port: 18200, host: 0.0.0.0, tensor_parallel: 3}}
env:
  FROM_RECIPE: '{{"json": "kept on every node"}}'
command: |
  vllm serve org/model --port {{port}} --host {{host}} \\
      -tp {{tensor_parallel}}{backend}
""")


def tool(cluster: rc.TestCluster, root: Path, *args: str, timeout: float = 300,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "RUNRECIPE_HOME": str(root), "RUNRECIPE_DOCKER_DIR": str(root / "docker"),
           "DOCKER_BUILDKIT": "0", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", **(env or {})}
    return cluster.head.run([sys.executable, "-m", "tasks", *args], env=env, cwd=str(root), timeout=timeout)


def watcher(cluster: rc.TestCluster, root: Path, rid: str, *args: str) -> subprocess.Popen:
    """`run-recipe watch RID ARGS...` on the head in the background; its stderr is the watcher's log."""
    env = {"PYTHONPATH": str(ROOT), "RUNRECIPE_HOME": str(root), "RUNRECIPE_DOCKER_DIR": str(root / "docker"),
           "DOCKER_BUILDKIT": "0", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    return cluster.head.popen([sys.executable, "-m", "tasks", "watch", rid, *args], env=env, cwd=str(root),
                              stderr=subprocess.PIPE, text=True)


def ours(node: rc.Node, rid: str) -> list[str]:
    return node.docker("ps", "-aq", "--filter", f"label=runrecipe.recipe={rid}").stdout.split()


def test_ray_cluster_converges_then_reruns_nothing(cluster3: rc.TestCluster, project: Path) -> None:
    mod(project, "mark", 'echo "applied in $WORKSPACE_DIR" > "$WORKSPACE_DIR/mod-mark"\n', cluster3)
    recipe(project, "rayc", extra="mods: [mods/mark]")
    first = tool(cluster3, project, "rayc", "--setup", "-d", "--ray", "--ready-timeout", "240")
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    assert "preflight" in out.lower() or "198.18.0.12" in first.stdout  # the table names every node
    # One chained stream serves both workers: n3's image task then finds its image already there.
    ips = [n.ip for n in cluster3.nodes]
    assert executed(first.stdout) == ["build:rr-cluster-standin", f"mods:rayc@{ips[0]}", "check:rayc", f"image:{TAG}@{ips[1]}",
                                      f"mods:rayc@{ips[1]}", f"mods:rayc@{ips[2]}", "launch:rayc"]
    assert f"-- image:{TAG}@198.18.0.13" in first.stdout
    head_id = cluster3.head.docker("image", "inspect", "-f", "{{.Id}}", TAG).stdout.strip()
    for node in cluster3.nodes:
        assert node.docker("image", "inspect", "-f", "{{.Id}}", TAG).stdout.strip() == head_id
        (cid,) = ours(node, "rayc")
        env = node.docker("exec", cid, "bash", "-c",
                          "source <(grep '^export' /runrecipe/launch.sh); echo \"$FROM_RECIPE|$VLLM_HOST_IP\"").stdout
        assert env.strip() == f'{{"json": "kept on every node"}}|{node.ip}'
    (head_cid,) = ours(cluster3.head, "rayc")
    deadline = time.monotonic() + 60  # the autoscaler's view (ray status) lags the GCS by a few seconds
    while True:
        status = cluster3.head.docker("exec", head_cid, "ray", "status").stdout
        active = sum(1 for ln in status.splitlines() if ln.strip().startswith("1 node_"))
        if active == 3 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert active == 3, status
    argv = cluster3.head.docker("exec", head_cid, "cat", "/tmp/vllm-argv").stdout.split("\0")
    assert argv[-3:-1] == ["--distributed-executor-backend", "ray"]

    for node in cluster3.nodes:
        (cid,) = ours(node, "rayc")
        assert node.docker("exec", cid, "cat", "/workspace/vllm/mod-mark").stdout.strip() == \
            "applied in /workspace/vllm", node.name

    def received() -> dict[str, int]:
        return {n.name: int(n.run(["cat", "/sys/class/net/eth0/statistics/rx_bytes"]).stdout) for n in cluster3.nodes}

    before = {n.name: ours(n, "rayc") for n in cluster3.nodes}
    rx = received()
    again = tool(cluster3, project, "rayc", "--setup", "-d", "--ray")
    assert again.returncode == 0, again.stdout + again.stderr
    assert executed(again.stdout) == []
    image_bytes = int(cluster3.head.docker("image", "inspect", "-f", "{{.Size}}", TAG).stdout)
    for name, n in received().items():  # a few SSH round trips, no copy: far below the image's size
        assert n - rx[name] < min(2_000_000, image_bytes // 20), (name, n - rx[name], image_bytes)
    assert {n.name: ours(n, "rayc") for n in cluster3.nodes} == before

    # `plan` asks every node, read-only: each step says why it is up to date, nothing would travel.
    asked = tool(cluster3, project, "plan", "rayc", "--ray", "--json")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    report = json.loads(asked.stdout)
    tasks = {t["task"]: t["status"] for t in report["tasks"]}
    assert f"image:{TAG}@198.18.0.13" in tasks and "launch:rayc" in tasks
    assert all(s.startswith("up to date: ") for s in tasks.values()), tasks
    assert "has the head's image ID" in tasks[f"image:{TAG}@198.18.0.12"]
    assert report["copy"] == [{"node": ip, "image_room": 0, "weights_bytes": 0} for ip in ips[1:]]
    assert {n.name: ours(n, "rayc") for n in cluster3.nodes} == before

    status = tool(cluster3, project, "status", "rayc", "--json")
    rows = json.loads(status.stdout)
    assert sorted(r["node"] for r in rows) == ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
    record = rows[0]["record"]
    assert [n["rank"] for n in record["nodes"]] == [0, 1, 2]
    for entry, node in zip(record["nodes"], cluster3.nodes):  # each node serves its own derived (mods) image
        (cid,) = ours(node, "rayc")
        assert entry["image"] == node.docker("inspect", "-f", "{{.Image}}", cid).stdout.strip() != head_id
        assert [m["name"] for m in entry["mods"]] == ["mark"] and len(entry["mods"][0]["sha256"]) == 64
    stopped = tool(cluster3, project, "stop", "rayc")
    assert stopped.returncode == 0, stopped.stderr
    assert all(ours(n, "rayc") == [] for n in cluster3.nodes)


def test_typo_refused_before_any_copy(cluster3: rc.TestCluster, project: Path) -> None:
    """The head's image carries the real vLLM 0.33.0 parser (tests/harness/vllmsite.py: the --no-deps site
    in the Debian base image, with the stand-in command): a misspelt flag stops `--setup` after the build,
    before the image travels to any worker, naming the flag and the version."""
    base = rayimage.ensure_base_image(cluster3.head)
    images.cluster_standin_dir(project / "docker", vllmsite.ensure_image(vllmsite.node_docker(cluster3.head), base))
    recipe(project, "typo", backend=" --max-modle-len 4096")
    res = tool(cluster3, project, "typo", "--setup", "-d", timeout=900)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "--max-modle-len" in res.stderr and "vLLM 0.33.0" in res.stderr, res.stderr
    assert not any(t.startswith(("image:", "weights:", "launch:")) for t in executed(res.stdout)), res.stdout
    for node in cluster3.nodes[1:]:
        assert node.docker("image", "inspect", TAG).returncode != 0, f"{node.name} got the image"
        assert ours(node, "typo") == []


def test_native_multinode_ranks(cluster3: rc.TestCluster, project: Path) -> None:
    recipe(project, "nat")  # names the Ray backend: native is still the default, the flag is removed
    res = tool(cluster3, project, "nat", "--setup", "-d", "--ready-timeout", "120")
    assert res.returncode == 0, res.stdout + res.stderr
    for rank, node in enumerate(cluster3.nodes):
        (cid,) = ours(node, "nat")
        argv = node.docker("exec", cid, "cat", "/tmp/vllm-argv").stdout.split("\0")[:-1]
        i = argv.index("--nnodes")
        assert argv[i:i + 8] == ["--nnodes", "3", "--node-rank", str(rank), "--master-addr", "198.18.0.11",
                                 "--master-port", "29501"]
        assert ("--headless" in argv) == (rank > 0)
        assert "--distributed-executor-backend" not in argv
    # --dry-run showed, without contacting a node, exactly the script each node now runs (--no-ray: the default)
    dry = tool(cluster3, project, "nat", "--no-ray", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    shown = json.loads(dry.stdout)
    assert shown["backend"] == "native" and [s["rank"] for s in shown["node_scripts"]] == [0, 1, 2]
    for node, script in zip(cluster3.nodes, shown["node_scripts"]):
        (cid,) = ours(node, "nat")
        assert node.docker("exec", cid, "cat", "/runrecipe/launch.sh").stdout == script["script"], node.name

    # A no-op re-run: what it sends to the two workers (printed for the README and the closing note).
    env = {"PYTHONPATH": str(ROOT / "tests"), "RUNRECIPE_HOME": str(project),
           "RUNRECIPE_DOCKER_DIR": str(project / "docker"), "HF_HUB_OFFLINE": "1"}
    again = cluster3.head.run([sys.executable, "-m", "harness.roundtrips", str(ROOT), "nat", "--setup", "-d"],
                              env=env, cwd=str(project), timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert executed(again.stdout) == []
    counts = json.loads(again.stdout.rsplit("COUNTS ", 1)[1])
    print(f"no-op native re-run on 3 nodes: {counts}")
    # per worker: one gathering call (preflight), its image ID, its containers (launch check)
    assert counts.get("fabric command", 0) + counts.get("ssh process", 0) <= 3 * 2, counts

    # The compile caches were made on every node; a secret -e relaunches every node (its digest is in the
    # launch hash), reaches every server and no node's docker inspect or script; the caches' files stay.
    secret = f"rrsecret{os.getpid()}"
    for node in cluster3.nodes:
        assert all((node.home / d).is_dir() for d in (".cache/vllm", ".cache/flashinfer", ".triton", ".tilelang"))
        (node.home / ".cache/vllm/kept").write_text(node.name)
    res = tool(cluster3, project, "nat", "-d", "-e", f"HF_TOKEN={secret}", "--ready-timeout", "120")
    assert res.returncode == 0 and secret not in res.stdout + res.stderr, res.stdout + res.stderr
    for node in cluster3.nodes:
        (cid,) = ours(node, "nat")
        assert f"HF_TOKEN={secret}" in node.docker("exec", cid, "cat", "/proc/1/environ").stdout.split("\0")
        shown = node.docker("inspect", "--format", "{{json .Path}}{{json .Args}}{{json .Config.Cmd}}"
                            "{{json .Config.Entrypoint}}{{json .Config.Labels}}", cid).stdout
        assert secret not in shown + node.docker("exec", cid, "cat", "/runrecipe/launch.sh").stdout, node.name
        assert node.docker("exec", cid, "cat", "/root/.cache/vllm/kept").stdout == node.name
    refused = tool(cluster3, project, "nat", "--dry-run", "-p", "18200:18200")
    assert refused.returncode == 1 and "-p/--publish is for a solo run" in refused.stderr, refused.stderr


@pytest.mark.parametrize("fault", ["sshd", "dockerd", "hostkey"])
def test_failures_are_clear_and_leave_no_container(cluster3: rc.TestCluster, project: Path, fault: str) -> None:
    recipe(project, "bad", backend="")
    if fault == "sshd":
        cluster3.node(3).stop_sshd()
    elif fault == "dockerd":
        cluster3.node(2).stop_dockerd()
    kh = Path(cluster3.head.home) / ".ssh" / "known_hosts"
    known = kh.read_text()
    if fault == "hostkey":  # the head's known_hosts without n3
        kept = [ln for ln in known.splitlines() if "198.18.0.13" not in ln and "n3" not in ln.split()[0]]
        kh.write_text("\n".join(kept) + "\n")
    try:
        res = tool(cluster3, project, "bad", "--setup", "-d", "--no-ray", "--ready-timeout", "60", timeout=240)
    finally:
        kh.write_text(known)
        for node in cluster3.nodes:
            node.heal()
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "Traceback" not in out
    expected = {"sshd": "198.18.0.13", "dockerd": "198.18.0.12", "hostkey": "198.18.0.13"}
    assert expected[fault] in out
    if fault == "hostkey":
        assert "--trust-new-hosts" in out
    for node in cluster3.nodes:
        assert ours(node, "bad") == [], f"{node.name} kept a container after: {fault}"


def test_doit_run_checks_every_node_before_any_change_and_doit_list_asks_none(
        cluster3: rc.TestCluster, project: Path) -> None:
    """`doit run recipe=X` on a cluster gets run-recipe's preflight: a worker without sshd stops it
    before the head builds anything. `doit list` contacts no node, so it still answers."""
    recipe(project, "viadoit", backend="")
    env = {"PYTHONPATH": str(ROOT), "RUNRECIPE_HOME": str(project), "RUNRECIPE_DOCKER_DIR": str(project / "docker"),
           "DOCKER_BUILDKIT": "0", "HF_HUB_OFFLINE": "1"}

    def doit(*args: str) -> subprocess.CompletedProcess:
        return cluster3.head.run([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), *args],
                                 env=env, cwd=str(project), timeout=240)

    cluster3.node(3).stop_sshd()
    try:
        listed = doit("list", "--all", "recipe=viadoit")
        res = doit("run", "recipe=viadoit")
    finally:
        cluster3.node(3).heal()
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert f"image:{TAG}@198.18.0.13" in listed.stdout
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Traceback" not in out, out
    assert "preflight failed: nothing was changed" in out and "198.18.0.13" in out, out
    assert not rayimage.has_image(cluster3.head, TAG)  # the build never started
    for node in cluster3.nodes:
        assert ours(node, "viadoit") == []


def mod(root: Path, name: str, body: str, cluster: rc.TestCluster) -> None:
    """A mod folder; every node starts without any derived (mods) image."""
    for node in cluster.nodes:
        derived = node.docker("images", "-q", "--filter", "reference=runrecipe-mods").stdout.split()
        if derived:
            node.docker("rmi", "-f", *derived)
    folder = root / "mods" / name
    folder.mkdir(parents=True)
    (folder / "run.sh").write_text("#!/bin/sh\nset -e\n" + body)


def test_mods_applied_on_every_node_then_not_again(cluster3: rc.TestCluster, project: Path) -> None:
    mod(project, "mark", 'echo "applied in $WORKSPACE_DIR from $(pwd)" > "$WORKSPACE_DIR/mod-mark"\n', cluster3)
    recipe(project, "modc", backend="", extra="mods: [mods/mark]")
    first = tool(cluster3, project, "modc", "--setup", "-d", "--no-ray", "--ready-timeout", "120")
    assert first.returncode == 0, first.stdout + first.stderr
    ips = [n.ip for n in cluster3.nodes]
    assert [t for t in executed(first.stdout) if t.startswith("mods:")] == [f"mods:modc@{ip}" for ip in ips]
    tags = set()
    for node in cluster3.nodes:  # each node built the derived image itself and serves from it
        (cid,) = ours(node, "modc")
        workdir = node.docker("inspect", "-f", "{{.Config.WorkingDir}}", cid).stdout.strip()
        mark = node.docker("exec", cid, "cat", f"{workdir}/mod-mark").stdout.strip()
        assert mark == f"applied in {workdir} from /workspace/mods/mark", node.name
        (tag,) = node.docker("images", "--filter", "reference=runrecipe-mods", "--format",
                             "{{.Repository}}:{{.Tag}}").stdout.split()
        assert node.docker("inspect", "-f", "{{.Image}}", cid).stdout.strip() == \
            node.docker("image", "inspect", "-f", "{{.Id}}", tag).stdout.strip()
        tags.add(tag)
    assert len(tags) == 1  # same base ID + same mod content: the same derived tag on every node

    again = tool(cluster3, project, "modc", "--setup", "-d", "--no-ray")
    assert again.returncode == 0 and executed(again.stdout) == [], again.stdout
    assert tool(cluster3, project, "stop", "modc").returncode == 0


def test_a_mod_failing_on_one_node_stops_the_run_everywhere(cluster3: rc.TestCluster, project: Path) -> None:
    """A real per-node difference reaches the mod: n3's docker client has a proxy configured
    (~/.docker/config.json), which docker hands to every build step as HTTPS_PROXY, and this mod
    refuses to run behind one. The derived images are otherwise identical, so only n3 fails."""
    mod(project, "direct-net", 'if [ -n "${HTTPS_PROXY:-}" ]; then\n'
        '  echo "direct-net: needs direct internet; this node builds behind $HTTPS_PROXY" >&2; exit 3\nfi\n', cluster3)
    recipe(project, "modfail", backend="", extra="mods: [mods/direct-net]")
    n3 = cluster3.node(3)
    config = n3.home / ".docker" / "config.json"
    config.parent.mkdir(exist_ok=True)
    config.write_text(json.dumps({"proxies": {"default": {"httpsProxy": "http://proxy.invalid:3128"}}}))
    try:
        res = tool(cluster3, project, "modfail", "--setup", "-d", "--no-ray", "--ready-timeout", "60")
    finally:
        config.unlink()
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "Traceback" not in out
    error = res.stderr[res.stderr.index("Error:"):]
    assert "mod 'direct-net' failed on 198.18.0.13" in error, error
    assert "this node builds behind http://proxy.invalid:3128" in error, error  # the log tail
    assert f"TaskFailed - taskid:mods:modfail@{n3.ip}" in res.stdout
    assert "launch:modfail" not in executed(res.stdout)  # nothing was started on any node
    for node in cluster3.nodes:
        assert ours(node, "modfail") == [], f"{node.name} kept a container"
    again = tool(cluster3, project, "modfail", "--setup", "-d", "--no-ray", "--ready-timeout", "120")
    assert again.returncode == 0, again.stdout + again.stderr  # the proxy is gone: the re-run completes
    assert [t for t in executed(again.stdout) if t.startswith("mods:")] == [f"mods:modfail@{n3.ip}"]
    assert tool(cluster3, project, "stop", "modfail").returncode == 0


def test_copy_hosts_choose_where_copies_go(cluster3: rc.TestCluster, project: Path) -> None:
    """.env COPY_HOSTS gives the workers' copy addresses: here their names in the head's ~/.ssh/config
    (as a second network would be); the tool pairs each with its worker by docker engine ID. A worker
    COPY_HOSTS leaves out gets no copy, and a run that needs one says so."""
    env = project / ".env"
    base = env.read_text()
    recipe(project, "cph", backend="")
    n2, n3 = cluster3.node(2), cluster3.node(3)
    env.write_text(base + "COPY_HOSTS=n2\n")
    res = tool(cluster3, project, "cph", "--setup", "-d", "--no-ray", "--ready-timeout", "60")
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert "198.18.0.12 (via n2)" in res.stdout  # n2 got its copy over the COPY_HOSTS address
    error = res.stderr[res.stderr.index("Error:"):]
    assert "198.18.0.13 lacks the image" in error and "COPY_HOSTS" in error, error
    head_id = cluster3.head.docker("image", "inspect", "-f", "{{.Id}}", TAG).stdout.strip()
    assert rayimage.has_image(n2, TAG) == head_id and not rayimage.has_image(n3, TAG)
    assert all(ours(node, "cph") == [] for node in cluster3.nodes)

    env.write_text(base + "COPY_HOSTS=n2,n3\n")
    res = tool(cluster3, project, "cph", "--setup", "-d", "--no-ray", "--ready-timeout", "120")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "image -> 198.18.0.13 (via n3)" in res.stdout
    assert rayimage.has_image(n3, TAG) == head_id
    assert all(len(ours(node, "cph")) == 1 for node in cluster3.nodes)
    assert tool(cluster3, project, "stop", "cph").returncode == 0


def test_weights_reach_every_node_and_only_changes_travel(cluster3: rc.TestCluster, project: Path) -> None:
    """The head's HF cache (made with the real client from the loopback hub) is synced to the workers;
    each node's stand-in checks, offline, that it got the pinned snapshot."""
    from huggingface_hub import snapshot_download

    from harness.hub import LocalHub, fake_safetensors

    cache = Path(cluster3.head.home) / ".cache" / "huggingface" / "hub"
    shutil.rmtree(cache / "models--org--wts", ignore_errors=True)
    for node in cluster3.nodes[1:]:
        node.run(["rm", "-rf", "/root/.cache/huggingface/hub/models--org--wts"])
    files = {"config.json": b'{"v": 1}', "a.safetensors": fake_safetensors(200_000, seed=1),
             "b.safetensors": fake_safetensors(200_000, seed=2)}
    with LocalHub() as hub:
        sha1 = hub.create_repo("org/wts", files)
        snapshot_download("org/wts", revision=sha1, cache_dir=cache, endpoint=hub.endpoint)
        sha2 = hub.commit("org/wts", files={"config.json": b'{"v": 2}'})
        snapshot_download("org/wts", revision=sha2, cache_dir=cache, endpoint=hub.endpoint)

    def write(sha: str) -> None:
        (project / "recipes" / "wts.yaml").write_text(f"""\
recipe_version: "1"
name: Cluster weights
container: {TAG}
cluster_only: true
model: org/wts
revision: '{sha}'
defaults: {{port: 18201, host: 0.0.0.0}}
env: {{STANDIN_CHECK_WEIGHTS: "1"}}
command: |
  vllm serve org/wts --port {{port}} --host {{host}}
""")

    def run_with(sha: str, log: Path | None = None, *more: str) -> subprocess.CompletedProcess:
        write(sha)
        return tool(cluster3, project, "wts", "--setup", "-d", "--no-ray", "--ready-timeout", "120", *more,
                    env={"RUNRECIPE_EXEC_LOG": str(log)} if log else None)

    first = run_with(sha1)
    assert first.returncode == 0, first.stdout + first.stderr
    # the first worker's task sends to both (one chained stream); the second then finds its node up to date
    assert [t for t in executed(first.stdout) if t.startswith("weights:")] == [f"weights:org/wts@{sha1}@198.18.0.12"]
    assert f"-- weights:org/wts@{sha1}@198.18.0.13" in first.stdout
    for node in cluster3.nodes:  # every rank loaded the pinned snapshot offline
        (cid,) = ours(node, "wts")
        assert f"standin-vllm: weights ok {sha1}" in node.docker("logs", cid).stdout
    again = run_with(sha1)
    assert again.returncode == 0 and executed(again.stdout) == []

    # `plan` names the copies that then run, node by node: n2 lost its image tag (one stream, to it
    # alone), both workers lack sha2's files (one tar stream through both, then any refs naming it).
    # Then every node's container is replaced (removal, create, copy, start).
    cluster3.node(2).docker("rmi", "-f", TAG)
    log = project / "exec.jsonl"
    write(sha2)
    planned = commands_planned(cluster3, project, "wts", "--setup", "--no-ray", "--skip-vllm-check")
    assert [c.split(" | ")[0].split()[:2] for c in planned if " | " in c] == [["docker", "save"], ["tar", "-c"]]
    moved = run_with(sha2, log, "--skip-vllm-check")  # one file changed: only it (and the new tree listing) travels
    assert moved.returncode == 0, moved.stdout + moved.stderr
    ran = [json.loads(line)["command"] for line in log.read_text().splitlines()]
    copies, launch = ran[:len(planned)], ran[len(planned):]  # plan shows no step behind one that runs
    for node in {node_of(c) for c in planned + copies}:
        assert [c for c in copies if node_of(c) == node] == [c for c in planned if node_of(c) == node], node
    assert {c.split("] ")[1].split()[:2][1] for c in launch} == {"rm", "cp", "start", "-c"}, launch
    assert executed(moved.stdout) == [f"image:{TAG}@198.18.0.12", f"weights:org/wts@{sha2}@198.18.0.12", "launch:wts"]
    for node in cluster3.nodes[1:]:
        blobs = node.run(["sh", "-c", "ls /root/.cache/huggingface/hub/models--org--wts/blobs | wc -l"]).stdout
        assert int(blobs) == 4  # 3 blobs of the first commit + the new config.json; shards not sent twice
        (cid,) = ours(node, "wts")
        assert f"standin-vllm: weights ok {sha2}" in node.docker("logs", cid).stdout

    # A new env value relaunches every node, nothing travels: each node runs what plan named, in order
    # (the nodes side by side, so only each node's own order is fixed).
    relaunch = ("--no-ray", "--skip-vllm-check", "-e", "RR_PLANNED=1")
    planned = commands_planned(cluster3, project, "wts", *relaunch)
    assert {node_of(c) for c in planned} == {"198.18.0.11", "198.18.0.12", "198.18.0.13"}, planned
    again = run_with(sha2, log, *relaunch)
    assert again.returncode == 0, again.stdout + again.stderr
    ran = [json.loads(line)["command"] for line in log.read_text().splitlines()][len(copies) + len(launch):]
    for node in {node_of(c) for c in planned + ran}:
        assert [c for c in ran if node_of(c) == node] == [c for c in planned if node_of(c) == node], node


def commands_planned(cluster: rc.TestCluster, root: Path, *args: str) -> list[str]:
    """The commands `plan --json` names, in task order."""
    asked = tool(cluster, root, "plan", *args, "--json")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    return [c["text"] for t in json.loads(asked.stdout)["tasks"] for c in t.get("commands", [])]


def node_of(text: str) -> str:
    """Where a command as shown runs: `[node] …`, a stream into `… | [node] …`, else the head."""
    if " | [" in text:
        text = text.split(" | ", 1)[1]
    return text[1:text.index("]")] if text.startswith("[") else "head"


def test_discover_yes_writes_env_inside_the_head_namespace(cluster3: rc.TestCluster, tmp_path: Path) -> None:
    root = Path(f"/tmp/rr-discover-{os.getpid()}")
    root.mkdir(exist_ok=True)
    (root / ".env").write_text("HF_TOKEN=keep-me\n")
    try:
        env = {"PYTHONPATH": str(ROOT), "RUNRECIPE_HOME": str(root)}
        res = cluster3.head.run([sys.executable, "-m", "tasks", "--discover", "--yes", "--interface", "eth0"],
                                env=env, cwd=str(root), timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        text = (root / ".env").read_text()
        assert "CLUSTER_NODES='198.18.0.11,198.18.0.12,198.18.0.13'" in text or \
               'CLUSTER_NODES="198.18.0.11,198.18.0.12,198.18.0.13"' in text or \
               "CLUSTER_NODES=198.18.0.11,198.18.0.12,198.18.0.13" in text, text
        assert "keep-me" in text
        shown = cluster3.head.run([sys.executable, "-m", "tasks", "--show-env"], env=env, cwd=str(root)).stdout
        assert "HF_TOKEN=****" in shown and "keep-me" not in shown
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_full_worker_disk_is_refused_in_preflight(cluster3: rc.TestCluster, project: Path) -> None:
    """n2's HF cache is a 64 KiB tmpfs: the run stops before copying anything, naming n2, need and free."""
    from huggingface_hub import snapshot_download

    from harness.hub import LocalHub, fake_safetensors

    cache = Path(cluster3.head.home) / ".cache" / "huggingface" / "hub"
    with LocalHub() as hub:
        sha = hub.create_repo("org/full", {"config.json": b"{}", "w.safetensors": fake_safetensors(300_000)})
        snapshot_download("org/full", revision=sha, cache_dir=cache, endpoint=hub.endpoint)
    (project / "recipes" / "full.yaml").write_text(f"""\
recipe_version: "1"
name: Full disk
container: {TAG}
cluster_only: true
model: org/full
revision: '{sha}'
command: vllm serve org/full --port 18202
""")
    n2 = cluster3.node(2)
    target = "/root/.cache/huggingface/hub"
    n2.run(["mkdir", "-p", target], check=True)
    n2.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", target], check=True)
    try:
        res = tool(cluster3, project, "full", "--download-only")
    finally:
        n2.run(["umount", "-l", target], check=True)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "preflight failed: nothing was changed" in out and "198.18.0.12" in out
    assert "needs 1.2 MB" in out and "free" in out, out
    assert "Traceback" not in out


def test_disk_filling_mid_copy_is_a_clear_error_and_nothing_counts_done(cluster3: rc.TestCluster,
                                                                        project: Path) -> None:
    """Preflight passes (n2 seems to need little: a same-named, truncated blob is there), but the copy
    needs room for the whole file: rsync runs out of space mid-copy. Clear error, n2 not counted done."""
    from huggingface_hub import snapshot_download

    from harness.hub import LocalHub, fake_safetensors

    cache = Path(cluster3.head.home) / ".cache" / "huggingface" / "hub"
    with LocalHub() as hub:
        sha = hub.create_repo("org/midfull", {"config.json": b"{}", "w.safetensors": fake_safetensors(300_000)})
        snapshot_download("org/midfull", revision=sha, cache_dir=cache, endpoint=hub.endpoint)
    (project / "recipes" / "midfull.yaml").write_text(f"""\
recipe_version: "1"
name: Mid-copy full disk
container: {TAG}
cluster_only: true
model: org/midfull
revision: '{sha}'
command: vllm serve org/midfull --port 18203
""")
    n2, target = cluster3.node(2), "/root/.cache/huggingface/hub"
    n2.run(["mkdir", "-p", target], check=True)
    n2.run(["mount", "-t", "tmpfs", "-o", "size=1600k", "tmpfs", target], check=True)
    try:
        first = tool(cluster3, project, "midfull", "--download-only")
        assert first.returncode == 0, first.stdout + first.stderr
        blob = n2.run(["sh", "-c", f"ls -S {target}/models--org--midfull/blobs/* | head -1"]).stdout.strip()
        n2.run(["truncate", "-s", "1100000", blob], check=True)
        res = tool(cluster3, project, "midfull", "--download-only")
        out = res.stdout + res.stderr
        assert res.returncode != 0, out
        assert "No space left on device" in out and "198.18.0.12" in out, out
        assert "Traceback" not in out
        again_full = tool(cluster3, project, "midfull", "--download-only")  # not counted done: it runs again
        assert f"weights:org/midfull@{sha}@198.18.0.12" in executed(again_full.stdout), again_full.stdout
        assert f"-- weights:org/midfull@{sha}@198.18.0.12" not in again_full.stdout
    finally:
        n2.run(["umount", "-l", target], check=True)  # lazy: a receiver that lingers must not keep it full
    again = tool(cluster3, project, "midfull", "--download-only")
    assert again.returncode == 0, again.stdout + again.stderr


def test_status_and_stop_with_a_worker_down_do_what_they_can(cluster3: rc.TestCluster, project: Path) -> None:
    """A worker that went away must not hide the others: status lists what answers, stop stops it,
    and both name the missing node and exit non-zero; once it is back, stop finishes the job."""
    recipe(project, "half", backend="")
    res = tool(cluster3, project, "half", "--setup", "-d", "--no-ray", "--ready-timeout", "120")
    assert res.returncode == 0, res.stdout + res.stderr
    n3 = cluster3.node(3)
    n3.stop_sshd()
    try:
        status = tool(cluster3, project, "status", "--json", timeout=120)
        stop = tool(cluster3, project, "stop", "half", timeout=120)
    finally:
        n3.heal()
    assert status.returncode == 1 and "Traceback" not in status.stderr
    assert sorted(row["node"] for row in json.loads(status.stdout)) == ["198.18.0.11", "198.18.0.12"]
    assert f"Error: status: {n3.ip}: cannot connect to {n3.ip} over SSH" in status.stderr, status.stderr
    assert stop.returncode == 1, stop.stdout + stop.stderr
    assert stop.stdout.split() == ["stopped", "runrecipe-half@198.18.0.11,", "runrecipe-half@198.18.0.12"]
    assert "run `run-recipe stop half` again once it is back" in stop.stderr, stop.stderr
    assert [ours(n, "half") for n in cluster3.nodes[:2]] == [[], []] and len(ours(n3, "half")) == 1
    again = tool(cluster3, project, "stop", "half")
    assert again.returncode == 0 and again.stdout.strip() == "stopped runrecipe-half@198.18.0.13", again.stdout
    assert ours(n3, "half") == []
