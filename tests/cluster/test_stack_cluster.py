"""A three-node stack on real netns nodes: one entry native on two nodes, one alone on the third, the real
LiteLLM proxy in front on the head. One run for the module (the cluster is shared and serialized).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cluster as rc
from harness import gatewayimage, images

ROOT = Path(__file__).resolve().parents[2]
TAG = "rr-cluster-standin"
NODES = "198.18.0.11,198.18.0.12,198.18.0.13"
KEY = "sk-stack-cluster-test"
PORTS = {"big": 18301, "side": 18302, "gateway": 18310}


def tool(cluster: rc.TestCluster, root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "RUNRECIPE_HOME": str(root), "RUNRECIPE_DOCKER_DIR": str(root / "docker"),
           "DOCKER_BUILDKIT": "0", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "RUNRECIPE_GATEWAY_IMAGE": root.joinpath("gateway-image").read_text(), "TRIO_KEY": KEY}
    return cluster.head.run([sys.executable, "-m", "tasks", *args], env=env, cwd=str(root), timeout=timeout)


def ask(cluster: rc.TestCluster, path: str, body: dict | None = None) -> dict | str:
    """An HTTP request to the gateway from inside the head (where it listens), as a client there would."""
    code = ("import json, sys, urllib.request\n"
            "req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode() or None,\n"
            "      headers={'Authorization': 'Bearer ' + sys.argv[3], 'Content-Type': 'application/json'})\n"
            "print(urllib.request.urlopen(req, timeout=30).read().decode())\n")
    res = cluster.head.run([sys.executable, "-c", code, f"http://127.0.0.1:{PORTS['gateway']}{path}",
                            json.dumps(body) if body else "", KEY], timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def knock(cluster: rc.TestCluster, url: str) -> str:
    """A request without a key from the head, as anyone on the network: its status, or `refused`."""
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n    print(urllib.request.urlopen(sys.argv[1], timeout=10).status)\n"
            "except urllib.error.HTTPError as exc:\n    print(exc.code)\n"
            "except OSError:\n    print('refused')\n")
    return cluster.head.run([sys.executable, "-c", code, url], timeout=60).stdout.strip()


def ours(node: rc.Node, stack: str) -> dict[str, str]:
    out = node.docker("ps", "--no-trunc", "--filter", f"label=runrecipe.stack={stack}",
                      "--format", "{{.Names}} {{.ID}}").stdout
    return dict(line.split() for line in out.splitlines())


@pytest.fixture(scope="module")
def trio(cluster3: rc.TestCluster, ray_image: str, docker_host: str):
    root = Path(f"/tmp/rr-stack-cluster-{os.getpid()}")
    shutil.rmtree(root, ignore_errors=True)
    images.cluster_standin_dir(root / "docker", ray_image)
    (root / "recipes").mkdir()
    (root / "stacks").mkdir()
    (root / ".env").write_text(f"CLUSTER_NODES={NODES}\nNON_PRIVILEGED=1\nETH_IF=eth0\n")
    # the gateway image is built once on the test dockerd, then loaded on the head
    tag = gatewayimage.ensure_gateway_image([gatewayimage.Daemon(docker_host), cluster3.head])
    (root / "gateway-image").write_text(tag)
    (root / "recipes" / "big.yaml").write_text("""\
recipe_version: "1"
name: Big across two
container: rr-cluster-standin
cluster_only: true
defaults: {port: 8000, host: 0.0.0.0, tensor_parallel: 2}
command: vllm serve org/big --port {port} --host {host} -tp {tensor_parallel}
""")
    (root / "recipes" / "side.yaml").write_text("""\
recipe_version: "1"
name: Side
container: rr-cluster-standin
command: vllm serve org/side --served-model-name side --host 0.0.0.0
""")
    (root / "stacks" / "trio.yaml").write_text(f"""\
name: trio
models:
  - {{recipe: big, on: [198.18.0.11, 198.18.0.12], gpu_mem: 0.5, port: {PORTS['big']}}}
  - {{recipe: side, on: [198.18.0.13], gpu_mem: 0.3, port: {PORTS['side']}}}
gateway: {{port: {PORTS['gateway']}, api_key_env: TRIO_KEY}}
""")
    first = tool(cluster3, root, "stack", "trio", "-d", "--setup", "--ready-timeout", "240")
    yield cluster3, root, first
    tool(cluster3, root, "stack", "trio", "stop")
    shutil.rmtree(root, ignore_errors=True)


def test_three_node_stack_places_serves_routes_and_stops(trio) -> None:
    cluster, root, first = trio
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    n1, n2, n3 = cluster.nodes
    assert sorted(ours(n1, "trio")) == ["trio-big", "trio-gateway"]
    assert sorted(ours(n2, "trio")) == ["trio-big"] and sorted(ours(n3, "trio")) == ["trio-side"]
    worker_argv = n2.docker("exec", ours(n2, "trio")["trio-big"], "cat", "/tmp/vllm-argv").stdout.split("\0")
    assert worker_argv[worker_argv.index("--node-rank") + 1] == "1" and "--headless" in worker_argv
    assert worker_argv[worker_argv.index("--master-addr") + 1] == "198.18.0.11"
    side_argv = n3.docker("exec", ours(n3, "trio")["trio-side"], "cat", "/tmp/vllm-argv").stdout.split("\0")
    assert side_argv[side_argv.index("--port") + 1] == str(PORTS["side"])
    assert "--nnodes" not in side_argv  # solo on n3, its image copied there from the head
    listed = json.loads(ask(cluster, "/v1/models"))
    assert sorted(m["id"] for m in listed["data"]) == ["org/big", "side"]
    for model in ("org/big", "side"):  # routed by name across the nodes, by the real gateway
        answer = json.loads(ask(cluster, "/v1/chat/completions",
                                {"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        assert answer["choices"][0]["message"]["content"] == f"standin reply from {model}"
    assert KEY not in out
    # no walking around the gateway's key: the entry the head leads listens on loopback, the one on n3 wants
    # a key of its own, which only the gateway's route to it presents (through the env file: not in argv)
    assert knock(cluster, f"http://198.18.0.11:{PORTS['big']}/v1/models") == "refused"
    assert knock(cluster, f"http://198.18.0.13:{PORTS['side']}/v1/models") == "401"
    inspect = json.loads(n3.docker("inspect", ours(n3, "trio")["trio-side"]).stdout)[0]
    assert "--api-key" not in side_argv and "VLLM_API_KEY" not in json.dumps(inspect["Args"])
    status = tool(cluster, root, "stack", "trio", "status", "--json")
    rows = json.loads(status.stdout)
    assert sorted((r["node"], r["container"]) for r in rows) == [
        ("198.18.0.11", "trio-big"), ("198.18.0.11", "trio-gateway"), ("198.18.0.12", "trio-big"),
        ("198.18.0.13", "trio-side")]
    again = tool(cluster, root, "stack", "trio", "-d")
    assert again.returncode == 0, again.stdout + again.stderr
    assert [ln for ln in again.stdout.splitlines() if ln.startswith(".  ")] == []
    stopped = tool(cluster, root, "stack", "trio", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert all(ours(n, "trio") == {} for n in cluster.nodes)
