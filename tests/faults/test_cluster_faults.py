"""Node faults, injection and secrets on the real netns cluster (n1 head, n2, n3), the tool run on the head.

- a worker's link cut mid image copy: a clear error naming the node and step, in bounded time, nothing left;
- the head's container exits during readiness: the error names the node and shows the log tail, and every
  container the run started is removed on every node;
- shell metacharacters in recipe env and -o values arrive literally in every worker's container; canary
  files prove nothing ran, on any node or in any container;
- HF_TOKEN in the tool's environment reaches no output, script, docker inspect or argv on any node.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from harness import cluster as rc

from .conftest import CLUSTER_TAG, ClusterProject
from .test_kill_mid_step import chain_streaming, wait_for

pytestmark = pytest.mark.cluster

HEAD, N2, N3 = "198.18.0.11", "198.18.0.12", "198.18.0.13"


def all_containers(node: rc.Node) -> list[str]:
    return node.docker("ps", "-aq").stdout.split()


def native_recipe(p: ClusterProject, rid: str, port: int, env: str = "", tail: str = "", defaults: str = "",
                  model: str = "", serve: str = "org/model") -> None:
    p.recipe(rid, f"""\
recipe_version: "1"
name: Cluster faults {rid}
container: {CLUSTER_TAG}
cluster_only: true
{model}
defaults: {{port: {port}, host: 0.0.0.0{defaults}}}
{env}
command: |
  vllm serve {serve} --port {{port}} --host {{host}}{tail}
""")


def test_worker_link_cut_during_image_copy(cluster_project: ClusterProject) -> None:
    p, c = cluster_project, cluster_project.cluster
    n2 = c.node(2)
    native_recipe(p, "cut", 18220)
    built = p.tool("cut", "--build-only", "--no-ray")
    assert built.returncode == 0, built.stdout + built.stderr
    for node in c.nodes[1:]:
        node.docker("rmi", "-f", CLUSTER_TAG)
    n2.shape("50mbit")  # the copy lasts long enough to be cut in the middle
    proc = p.start("cut", "--setup", "-d", "--no-ray", "--ready-timeout", "60")
    try:
        wait_for("the image stream to start", lambda: chain_streaming(proc), proc=proc)
        time.sleep(1.0)
        n2.link_down()
        cut = time.monotonic()
        out, err = proc.communicate(timeout=90)
        took = time.monotonic() - cut
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        n2.link_up()
    text = out + err
    assert proc.returncode != 0, text
    assert took < 90, f"the run took {took:.0f} s to notice the cut link"
    assert "Traceback" not in text
    error = err[err.index("Error:"):] if "Error:" in err else text
    assert N2 in error and "image" in error, error
    assert "failed at step" in error or "lost the SSH connection" in error or "timed out" in error, error
    for node in c.nodes:
        assert p.ours(node, "cut") == [] and all_containers(node) == [], f"{node.name} kept a container"
    assert p.image_id(n2) != p.image_id(c.head)


def test_head_container_exits_during_readiness(cluster_project: ClusterProject) -> None:
    """Ray mode: only the head runs vLLM (workers run `ray start --block`), so STANDIN_EXIT fails the head
    alone, after every worker's container joined."""
    p, c = cluster_project, cluster_project.cluster
    native_recipe(p, "headdies", 18221, env='env: {STANDIN_EXIT: "5"}', tail=" --distributed-executor-backend ray")
    seen: dict[str, set[str]] = {n.name: set() for n in c.nodes}
    done = threading.Event()

    def watch() -> None:  # every container the run starts, on every node
        while not done.is_set():
            for node in c.nodes:
                seen[node.name].update(p.ours(node, "headdies"))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch)
    watcher.start()
    t0 = time.monotonic()
    try:
        res = p.tool("headdies", "--setup", "-d", "--ray", "--ready-timeout", "120", timeout=240)
    finally:
        done.set()
        watcher.join()
    text = res.stdout + res.stderr
    assert res.returncode != 0, text
    assert time.monotonic() - t0 < 200
    assert "Traceback" not in text
    error = res.stderr[res.stderr.index("Error:"):]
    assert "exited (code 5) before it was ready" in error, error
    assert "failing on purpose" in error, error  # the log tail
    assert f"node: {HEAD}" in error, f"the error does not name the head node:\n{error}"
    assert all(seen[n.name] for n in c.nodes), f"not every node got a container: {seen}"
    for node in c.nodes:
        left = set(all_containers(node))
        assert not left, f"{node.name} kept {left} (the run started {seen[node.name]})"


CANARY = "/tmp/rr-canary-worker"


def evil(tag: str) -> str:
    c = f"{CANARY}-{tag}"
    return (f"$(touch {c}-dollar) `touch {c}-tick` ; touch {c}-semi && touch {c}-and | touch {c}-pipe "
            f"'q' \"dq\" \\ x\ny > {c}-redir")


def canaries(node: rc.Node) -> str:
    return node.run(["sh", "-c", f"ls -d {CANARY}* 2>/dev/null; true"]).stdout.strip()


# Runs the rendered script with bash but a `vllm` that only records what it got (NUL-separated):
# the env value as the script exported it, then the argv.
PROBE = r"""set -e
mkdir -p /tmp/rr-probe
cat > /tmp/rr-probe/vllm <<'END'
#!/bin/sh
printf '%s\0' "$EVIL_ENV" "$@" > /tmp/rr-probe/got
END
chmod +x /tmp/rr-probe/vllm
PATH=/tmp/rr-probe:$PATH bash /runrecipe/launch.sh
cat /tmp/rr-probe/got"""


def test_injection_arrives_literally_on_workers(cluster_project: ClusterProject) -> None:
    p, c = cluster_project, cluster_project.cluster
    for node in c.nodes:
        node.run(["sh", "-c", f"rm -f {CANARY}*"])
    env_value, o_value = evil("env"), evil("o")
    native_recipe(p, "inj", 18222, env=f"env:\n  EVIL_ENV: {json.dumps(env_value)}",
                  defaults=", served: plain", tail=" --x-served {served}")
    res = p.tool("inj", "--setup", "-d", "--no-ray", "--ready-timeout", "90", "-o", f"served={o_value}")
    assert res.returncode == 0, res.stdout + res.stderr
    for rank, node in enumerate(c.nodes):
        (cid,) = p.ours(node, "inj")
        argv = node.docker("exec", cid, "cat", "/tmp/vllm-argv").stdout.split("\0")[:-1]
        assert argv[argv.index("--x-served") + 1] == o_value, argv
        got = node.docker("exec", cid, "bash", "-c", PROBE)
        assert got.returncode == 0, got.stderr
        fields = got.stdout.split("\0")[:-1]
        assert fields[0] == env_value, f"{node.name}: EVIL_ENV arrived as {fields[0]!r}"
        assert fields[1:] == argv, f"{node.name}: the script's command differs from the running one"
        assert ("--headless" in argv) == (rank > 0)
        inside = node.docker("exec", cid, "sh", "-c", f"ls -d {CANARY}* 2>/dev/null; true").stdout.strip()
        assert inside == "", f"something executed in {node.name}'s container: {inside}"
        assert canaries(node) == "", f"something executed on {node.name}: {canaries(node)}"
    assert not list(Path("/tmp").glob("rr-canary-worker*"))


def test_hf_token_never_leaks_on_any_node(cluster_project: ClusterProject) -> None:
    from huggingface_hub import snapshot_download

    from harness.hub import LocalHub, fake_safetensors

    p, c = cluster_project, cluster_project.cluster
    mark = "hf_rrsecret" + uuid.uuid4().hex
    cache = Path(c.head.home) / ".cache" / "huggingface" / "hub"
    with LocalHub() as hub:
        sha = hub.create_repo("org/secw", {"config.json": b"{}", "w.safetensors": fake_safetensors(50_000)})
        snapshot_download("org/secw", revision=sha, cache_dir=cache, endpoint=hub.endpoint)
    for node in c.nodes[1:]:  # the weights travel during this run, with the token in the tool's environment
        node.run(["rm", "-rf", "/root/.cache/huggingface/hub/models--org--secw"])
    native_recipe(p, "sec", 18223, model=f"model: org/secw\nrevision: '{sha}'",
                  env='env: {STANDIN_CHECK_WEIGHTS: "1"}', serve="org/secw")
    argvs: list[str] = []
    done = threading.Event()

    def sample() -> None:
        i = 0
        while not done.is_set():
            argvs.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
            if i % 5 == 0:  # the same pid namespace, seen from inside each node too
                for node in c.nodes:
                    argvs.append(node.run(["ps", "-eo", "args"], timeout=10).stdout)
            i += 1
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    secret_env = {"HF_TOKEN": mark, "HUGGING_FACE_HUB_TOKEN": mark}
    outputs = []
    try:
        res = p.tool("sec", "--setup", "-d", "--no-ray", "--ready-timeout", "90", env=secret_env)
        outputs.append(res.stdout + res.stderr)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"weights:org/secw@{sha}@{N2}" in res.stdout
        for args in (("status", "--json"), ("sec", "--dry-run", "--json"), ("logs", "sec")):
            outputs.append((lambda r: r.stdout + r.stderr)(p.tool(*args, env=secret_env)))
    finally:
        done.set()
        sampler.join()
    assert len(argvs) > 10
    places = {"tool output": "\n".join(outputs), "ps during the run": "\n".join(argvs)}
    for node in c.nodes:
        (cid,) = p.ours(node, "sec")
        assert "standin-vllm: weights ok" in node.docker("logs", cid).stdout or node is not c.head
        places[f"{node.name} launch.sh"] = node.docker("exec", cid, "cat", "/runrecipe/launch.sh").stdout
        places[f"{node.name} container environ/argv"] = node.docker(
            "exec", cid, "sh", "-c", "cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null; true").stdout
        cfg = json.loads(node.docker("inspect", cid).stdout)[0]["Config"]
        places[f"{node.name} docker inspect"] = json.dumps({k: cfg.get(k) for k in ("Env", "Cmd", "Labels",
                                                                                  "Entrypoint")})
    places["state dir"] = "".join(f.read_text(errors="replace") for f in (p.root / ".runrecipe").rglob("*")
                                  if f.is_file())
    leaked = [where for where, text in places.items() if mark in text]
    assert not leaked, f"HF_TOKEN leaked into: {leaked}"
