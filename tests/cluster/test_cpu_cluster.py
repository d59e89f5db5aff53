"""A CPU recipe on two real netns nodes with an image the head has but runrecipe did not build:
`--setup --no-build` takes it as it is, copies it to the worker, and the group runs with no GPU asked."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from harness import cluster as rc
from harness import images

ROOT = Path(__file__).resolve().parents[2]
TAG = "rr-cluster-mine"


def executed(out: str) -> list[str]:
    return [ln.split()[1] for ln in out.splitlines() if ln.startswith(".  ")]


@pytest.fixture
def project(cluster3: rc.TestCluster) -> Path:
    """A project (visible inside the nodes: /tmp is shared) whose Docker folder has no Dockerfile.cpu; the head
    gets the stand-in image by a plain `docker build` (no inputs label of ours), the workers nothing."""
    root = Path(f"/tmp/rr-cluster-cpu-{os.getpid()}")
    shutil.rmtree(root, ignore_errors=True)
    context = images.standin_docker_dir(root / "standin")
    (root / "docker").mkdir()
    (root / "recipes").mkdir()
    (root / ".env").write_text("NON_PRIVILEGED=1\nETH_IF=eth0\n")
    for node in cluster3.nodes:
        node.docker("rmi", "-f", TAG)
    built = cluster3.head.docker("build", "-q", "-t", TAG, str(context), env={"DOCKER_BUILDKIT": "0"})
    assert built.returncode == 0, built.stderr
    (root / "recipes" / "cpuc.yaml").write_text(f"""\
recipe_version: "1"
name: Cluster CPU
container: {TAG}
build_args: [--cpu]
cluster_only: true
defaults: {{port: 18210, host: 0.0.0.0, tensor_parallel: 2}}
env: {{VLLM_CPU_KVCACHE_SPACE: '1'}}
command: vllm serve org/model --port {{port}} --host {{host}} -tp {{tensor_parallel}}
""")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_setup_no_build_copies_the_heads_own_image_and_runs_the_cpu_group(cluster3: rc.TestCluster,
                                                                            project: Path) -> None:
    head, worker = cluster3.nodes[:2]
    image = head.docker("image", "inspect", "-f", "{{.Id}}", TAG).stdout.strip()
    env = {"PYTHONPATH": str(ROOT), "RUNRECIPE_HOME": str(project), "RUNRECIPE_DOCKER_DIR": str(project / "docker"),
           "DOCKER_BUILDKIT": "0", "HF_HUB_OFFLINE": "1"}
    res = head.run([sys.executable, "-m", "tasks", "cpuc", "-n", f"{head.ip},{worker.ip}", "--setup", "--no-build",
                    "-d", "--ready-timeout", "120"], env=env, cwd=str(project), timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "build:" + TAG not in executed(res.stdout) and f"image:{TAG}@{worker.ip}" in executed(res.stdout), out
    assert "CPU image: no GPU needed; memory checked against system RAM\n" in res.stdout  # under the preflight table
    assert f"CPU image: no GPU needed; memory checked against system RAM: {head.ip}: needs 1.1 GB" in res.stderr
    assert "NVIDIA" not in out
    for node in (head, worker):  # the head's image, unchanged, now on the worker too; no GPU asked anywhere
        assert node.docker("image", "inspect", "-f", "{{.Id}}", TAG).stdout.strip() == image, node.name
        (cid,) = node.docker("ps", "-q", "--filter", "label=runrecipe.recipe=cpuc").stdout.split()
        assert node.docker("inspect", "-f", "{{json .HostConfig.DeviceRequests}}", cid).stdout.strip() == "null"
    assert cluster3.nodes[2].docker("image", "inspect", TAG).returncode != 0  # not in this run's group
