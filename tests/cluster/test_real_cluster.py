"""The real vLLM (CPU build) as a native two-node group on the netns test cluster, through runrecipe.

The image is built once by runrecipe's build step from docker/Dockerfile.cpu on the test dockerd
(harness.cpuengine) and loaded onto the head; the worker gets it, and the weights, only through the
product's own copies. The model is the harness's tiny Llama, put in the head's HF cache from the local
hub at a pinned commit. Tokens at temperature 0 must be those of one process.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import cluster as rc
from harness import cpuengine, rayimage
from harness.cpuengine import MODEL, TAG, complete
from harness.gatewayimage import Daemon
from harness.hub import LocalHub
from test_cluster_e2e import executed, ours, tool, watcher

HEAD, WORKER = "198.18.0.11", "198.18.0.12"
PORT = 18300
READY = ("--ready-timeout", "900")
HF_CACHE = ".cache/huggingface/hub"


@pytest.fixture(scope="module")
def cpu_head(cluster3: rc.TestCluster, docker_host: str, cpu_docker_dir: Path) -> Path:
    """The CPU Docker folder; its image (built by runrecipe on the test dockerd) loaded on the head only."""
    rayimage.copy_image(Daemon(docker_host), cluster3.head, TAG, timeout=1800)
    return cpu_docker_dir


@pytest.fixture
def two(cluster3: rc.TestCluster, cpu_head: Path, tmp_path: Path) -> tuple[Path, str]:
    """A project on the head for a two-node group; the worker has neither the image nor the model."""
    root = Path(f"/tmp/rr-real-cluster-{tmp_path.name}")
    (root / "recipes").mkdir(parents=True)
    (root / "docker").symlink_to(cpu_head)
    (root / ".env").write_text(f"CLUSTER_NODES={HEAD},{WORKER}\nNON_PRIVILEGED=1\nETH_IF=eth0\n")
    from huggingface_hub import snapshot_download

    with LocalHub() as hub:
        sha = hub.create_repo(MODEL, cpuengine.model_files(64))
        snapshot_download(MODEL, revision=sha, cache_dir=cluster3.head.home / HF_CACHE, endpoint=hub.endpoint)
    worker = cluster3.node(2)
    worker.docker("rmi", "-f", TAG)
    worker.run(["rm", "-rf", str(worker.home / HF_CACHE / f"models--{MODEL.replace('/', '--')}")])
    yield root, sha
    tool(cluster3, root, "stop", "--all")
    subprocess.run(["rm", "-rf", str(root)])


def group(root: Path, rid: str, sha: str, tp: int = 1, args: str = "") -> None:
    (root / "recipes" / f"{rid}.yaml").write_text(cpuengine.recipe(rid, PORT, args=args, tp=tp,
                                                                   extra=f"revision: '{sha}'"))


def test_tensor_parallel_group_answers_as_one_process_does(cluster3: rc.TestCluster, two: tuple[Path, str]) -> None:
    root, sha = two
    group(root, "tp", sha, tp=2)
    res = tool(cluster3, root, "tp", "--setup", "-d", *READY, timeout=2400)
    assert res.returncode == 0, res.stdout + res.stderr
    done = executed(res.stdout)
    assert f"image:{TAG}@{WORKER}" in done and f"weights:{MODEL}@{sha}@{WORKER}" in done, done
    assert [len(ours(n, "tp")) for n in cluster3.nodes] == [1, 1, 0]
    (worker_cid,) = ours(cluster3.node(2), "tp")
    argv = json.loads(cluster3.node(2).docker("inspect", worker_cid).stdout)[0]
    assert "--headless" in cluster3.node(2).docker("exec", worker_cid, "cat", "/runrecipe/launch.sh").stdout, argv
    group_text = complete(f"http://{HEAD}:{PORT}/v1")
    assert group_text

    assert tool(cluster3, root, "stop", "tp").returncode == 0  # a --solo run does not reach the worker's part
    solo = tool(cluster3, root, "tp", "--solo", "-d", "--tp", "1", *READY, timeout=1200)
    assert solo.returncode == 0, solo.stdout + solo.stderr
    assert [len(ours(n, "tp")) for n in cluster3.nodes] == [1, 0, 0]
    assert complete(f"http://{HEAD}:{PORT}/v1") == group_text  # the group computed what one process computes

    # the CPU build refuses Ray at engine start: runrecipe refuses the combination before anything runs
    before = [ours(n, "tp") for n in cluster3.nodes]
    refused = tool(cluster3, root, "tp", "--ray", "-d", *READY)
    assert refused.returncode == 1 and "current platform cpu does not support ray" in refused.stderr, \
        refused.stdout + refused.stderr
    assert executed(refused.stdout) == [] and [ours(n, "tp") for n in cluster3.nodes] == before


def test_data_parallel_group_is_re_formed_after_its_worker_is_killed(cluster3: rc.TestCluster,
                                                                    two: tuple[Path, str]) -> None:
    root, sha = two
    group(root, "dp", sha, args=" -dp 2")
    res = tool(cluster3, root, "dp", "--setup", "-d", *READY, timeout=2400)
    assert res.returncode == 0, res.stdout + res.stderr
    text = complete(f"http://{HEAD}:{PORT}/v1")
    (worker_cid,) = ours(cluster3.node(2), "dp")
    logs = (lambda p: p.stdout + p.stderr)(cluster3.node(2).docker("logs", worker_cid))
    assert "data_parallel_rank 1" in logs or "DP1" in logs, logs[-3000:]

    watching = watcher(cluster3, root, "dp", "--interval", "2")
    runs = root / ".runrecipe" / "runs" / "dp.json"
    try:
        time.sleep(3)
        cluster3.node(2).docker("kill", worker_cid, check=True)
        killed = time.monotonic()
        deadline = killed + 900  # a ceiling: vLLM's own start of a two-node group is ~40 s here
        watch: dict = {}
        while time.monotonic() < deadline:
            watch = json.loads(runs.read_text()).get("watch", {})
            if watch.get("state") == "watching" and watch.get("restarts") == 1:
                break
            time.sleep(1)
        assert watch.get("restarts") == 1, watch
        print(f"real dp2 group serving again {time.monotonic() - killed:.1f} s after its worker was killed")
        assert complete(f"http://{HEAD}:{PORT}/v1") == text
        assert len(ours(cluster3.node(2), "dp")) == 1 and ours(cluster3.node(2), "dp") != [worker_cid]
    finally:
        watching.send_signal(signal.SIGTERM)
        log = watching.communicate(timeout=120)[1]
    assert "serving again after restart 1" in log, log
