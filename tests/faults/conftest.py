"""Fixtures for the fault suite: the e2e Project (a throw-away project on the test dockerd), re-exported,
and the stand-in image under a tag recipes can name, so solo launches need no build."""
from __future__ import annotations

import pytest

from e2e.conftest import Project, free_port, project  # noqa: F401 - re-exported fixtures (tests/ is on sys.path)

STANDIN_TAG = "rr-faults-standin:latest"


@pytest.fixture(scope="session")
def standin_tag(docker, standin_image: str) -> str:
    """The stand-in vLLM image, tagged for recipes: `container: rr-faults-standin:latest`."""
    docker("tag", standin_image, STANDIN_TAG)
    return STANDIN_TAG


# ----------------------------------------------------------------------------- cluster
# The netns test cluster fixtures are tests/cluster/conftest.py's (one cluster per machine: attached
# when this session holds it, waited for a bounded time when another process does).
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

from cluster.conftest import _heal_cluster, cluster3, ray_image  # noqa: E402,F401 - shared cluster fixtures
from harness import cluster as rc  # noqa: E402
from harness import images  # noqa: E402

CODE_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_TAG = "rr-faults-cluster"
CLUSTER_NODES = "198.18.0.11,198.18.0.12,198.18.0.13"


class ClusterProject:
    """A project dir under /tmp (shared with the nodes) whose Docker folder builds the stand-in FROM the
    Ray image; the tool runs on the head (inside n1's namespaces) as a user there would."""

    def __init__(self, cluster: rc.TestCluster, root: Path) -> None:
        self.cluster, self.root = cluster, root
        self.env = {"PYTHONPATH": str(CODE_ROOT), "RUNRECIPE_HOME": str(root),
                    "RUNRECIPE_DOCKER_DIR": str(root / "docker"), "DOCKER_BUILDKIT": "0",
                    "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}

    def recipe(self, rid: str, body: str) -> None:
        (self.root / "recipes" / f"{rid}.yaml").write_text(body)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tasks", *args]

    def tool(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess:
        return self.cluster.head.run(self.argv(*args), env={**self.env, **(env or {})}, cwd=str(self.root),
                                     timeout=timeout)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """The tool in the background, in its own process group (os.killpg kills all of it)."""
        return self.cluster.head.popen(self.argv(*args), env={**self.env, **(env or {})}, cwd=str(self.root),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       start_new_session=True)

    def ours(self, node: rc.Node, rid: str) -> list[str]:
        return node.docker("ps", "-aq", "--filter", f"label=runrecipe.recipe={rid}").stdout.split()

    def image_id(self, node: rc.Node, tag: str = CLUSTER_TAG) -> str:
        return node.docker("image", "inspect", "-f", "{{.Id}}", tag).stdout.strip()


@pytest.fixture
def cluster_project(cluster3: rc.TestCluster, ray_image: str) -> Iterator[ClusterProject]:
    root = Path(f"/tmp/rr-faults-cluster-{os.getpid()}")
    shutil.rmtree(root, ignore_errors=True)
    images.cluster_standin_dir(root / "docker", ray_image, label="runrecipe.test.faults=1")
    (root / "recipes").mkdir()
    (root / ".env").write_text(f"CLUSTER_NODES={CLUSTER_NODES}\nNON_PRIVILEGED=1\nETH_IF=eth0\n")
    yield ClusterProject(cluster3, root)
    shutil.rmtree(root, ignore_errors=True)
