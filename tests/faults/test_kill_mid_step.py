"""kill -9 of the whole run (its process group) in the middle of a step, then a re-run.

Each test proves three things: while the run is in the step and after it was killed, doit's state
(`.runrecipe/doit.sqlite3`, table `doit`: task id -> JSON of saved values) holds no new record of the
step and `--dry-run --json` says it would run (or, for cluster steps it cannot check, does not say
"up to date"); the fact the step produces is not half there (no container counted as serving, no
derived image, no image ID, no complete manifest on the worker); a plain re-run completes and is
verified. The download kill is tested in tests/e2e/test_weights.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from .conftest import CLUSTER_TAG, ClusterProject, Project, free_port

GRACE = 60  # the longest any wait in these tests may take


def executed(out: str) -> list[str]:
    return [ln.split()[1] for ln in out.splitlines() if ln.startswith(".  ")]


def record(root: Path, task: str) -> dict | None:
    """doit's saved values of `task` (None when it has no row), read as another process would."""
    db = root / ".runrecipe" / "doit.sqlite3"
    if not db.exists():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        assert tables == {"doit"}, tables
        row = con.execute("select task_data from doit where task_id=?", (task,)).fetchone()
    finally:
        con.close()
    return json.loads(row[0]) if row else None


def status_of(dry_json: str, task: str) -> str:
    return {t["task"]: t["status"] for t in json.loads(dry_json)["tasks"]}[task]


def wait_for(what: str, pred: Callable[[], object], timeout: float = GRACE, proc: subprocess.Popen | None = None
             ) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended (rc={proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def group_cmdlines(pgid: int) -> list[str]:
    """Command lines of every live process in process group `pgid` (host view: nodes share the pid ns)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.getpgid(int(d.name)) != pgid:
                continue
            found.append((d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ProcessLookupError):
            continue
    return found


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.communicate()
    deadline = time.monotonic() + 10  # every process of the run is gone (none reparented and still working)
    while group_cmdlines(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group_cmdlines(proc.pid) == []


def start(project: Project, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tasks", *args], cwd=project.root, env=project.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def serves(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


# ----------------------------------------------------------------------------- solo
def test_kill_during_launch_wait(project: Project, standin_tag: str) -> None:
    """The container the killed run started is not counted as serving; the re-run leaves exactly one."""
    port = free_port()
    project.recipe("kwait", f"""\
        recipe_version: "1"
        name: Kill during readiness
        container: {standin_tag}
        defaults: {{port: {port}}}
        env: {{STANDIN_DELAY: "15"}}
        command: vllm serve org/m --port {{port}} --host 127.0.0.1
        """)
    proc = start(project, "kwait", "-d", "--ready-timeout", "120")
    wait_for("the server container to run", lambda: [c for c in project.containers("kwait")
                                                     if c["State"]["Running"]], proc=proc)
    time.sleep(1.0)  # inside wait_ready now; the stand-in sleeps 15 s before it answers (two dry runs fit in that under load)
    assert proc.poll() is None
    during = project.cli("kwait", "--dry-run", "--json")
    assert record(project.root, "launch:kwait") is None
    kill_group(proc)
    after = project.cli("kwait", "--dry-run", "--json")
    for dry in (during, after):
        assert dry.returncode == 0, dry.stderr
        assert status_of(dry.stdout, "launch:kwait").startswith("would run"), dry.stdout
    assert record(project.root, "launch:kwait") is None
    assert not serves(port)

    again = project.cli("kwait", "-d", "--ready-timeout", "60")
    assert again.returncode == 0, again.stdout + again.stderr
    assert executed(again.stdout) == ["launch:kwait"]
    running = [c for c in project.containers("kwait") if c["State"]["Running"]]
    assert len(running) == 1 and len(project.containers("kwait")) == 1
    assert serves(port)
    assert record(project.root, "launch:kwait") is not None
    third = project.cli("kwait", "-d")
    assert third.returncode == 0 and executed(third.stdout) == [], third.stdout + third.stderr


def test_kill_during_mods_build(project: Project, standin_tag: str) -> None:
    """The derived image is never tagged half-built; the re-run builds it and launches on it."""
    mod = project.root / "mods" / "slow"
    mod.mkdir(parents=True)
    (mod / "run.sh").write_text('#!/bin/sh\nset -eu\nsleep 5\necho "slow done" > "$WORKSPACE_DIR/slow.txt"\n')
    port = free_port()
    project.recipe("kmods", f"""\
        recipe_version: "1"
        name: Kill during mods
        container: {standin_tag}
        mods: [mods/slow]
        defaults: {{port: {port}}}
        command: vllm serve org/m --port {{port}} --host 127.0.0.1
        """)

    def mods_images() -> set[str]:
        return set(project.docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                                  "reference=runrecipe-mods").stdout.split())

    def leftover_build_containers() -> list[str]:
        # the classic builder's intermediate containers run `/bin/sh -c echo 'runrecipe: applying mod ...`
        out = project.docker("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Command}}").stdout
        return [ln for ln in out.splitlines() if "applying mod slow" in ln]

    before = mods_images()
    proc = start(project, "kmods", "-d", "--ready-timeout", "60")
    wait_for("docker build to run", lambda: any("docker build" in c for c in group_cmdlines(proc.pid)), proc=proc)
    time.sleep(2.0)  # the mod's run.sh is sleeping inside the build now
    assert proc.poll() is None
    during = project.cli("kmods", "--dry-run", "--json")
    kill_group(proc)
    for dry in (during, project.cli("kmods", "--dry-run", "--json")):
        assert dry.returncode == 0, dry.stderr
        assert status_of(dry.stdout, "mods:kmods").startswith("would run"), dry.stdout
        assert status_of(dry.stdout, "launch:kmods").startswith("would run"), dry.stdout
    assert record(project.root, "mods:kmods") is None
    assert mods_images() == before, "a mods image was tagged by a build that was killed"
    assert project.containers("kmods") == []
    # the daemon ends the build when its client dies: the run.sh's container does not live on
    wait_for("the killed build's container to go", lambda: not leftover_build_containers(), timeout=30)
    assert mods_images() == before

    again = project.cli("kmods", "-d", "--ready-timeout", "60")
    assert again.returncode == 0, again.stdout + again.stderr
    assert executed(again.stdout) == ["mods:kmods", "check:kmods", "launch:kmods"]
    tag = record(project.root, "mods:kmods")["_values_:"]["tag"]
    assert mods_images() == before | {tag}
    (c,) = project.containers("kmods")
    assert project.docker("exec", c["Id"], "cat", "/workspace/vllm/slow.txt").stdout == "slow done\n"
    assert serves(port)
    assert leftover_build_containers() == []
    assert executed(project.cli("kmods", "-d").stdout) == []


# ----------------------------------------------------------------------------- cluster
N2, N3 = "198.18.0.12", "198.18.0.13"


def chain_streaming(proc: subprocess.Popen) -> bool:
    """The head is streaming `docker save` into the ssh chain (the hop script runs on the workers)."""
    cmds = group_cmdlines(proc.pid)
    return any(c.startswith("docker save") for c in cmds) and any("RRSTAT" in c for c in cmds)


@pytest.mark.cluster
def test_kill_during_cluster_image_copy(cluster_project: ClusterProject) -> None:
    p, c = cluster_project, cluster_project.cluster
    n2, n3 = c.node(2), c.node(3)
    p.recipe("kimg", f"""\
recipe_version: "1"
name: Kill during image copy
container: {CLUSTER_TAG}
cluster_only: true
command: vllm serve org/model --port 18210 --host 0.0.0.0
""")
    built = p.tool("kimg", "--build-only", "--no-ray")  # the head's image, so only the copy is killed
    assert built.returncode == 0, built.stdout + built.stderr
    head_id = p.image_id(c.head)
    for node in (n2, n3):  # start from "never copied": no image on the workers, no record of a copy
        node.docker("rmi", "-f", CLUSTER_TAG)
    (p.root / ".runrecipe" / "doit.sqlite3").unlink()
    n2.shape("20mbit")
    task = f"image:{CLUSTER_TAG}@{N2}"
    proc = p.start("kimg", "--build-only", "--no-ray")
    wait_for("the image stream to start", lambda: chain_streaming(proc), proc=proc)
    time.sleep(3.0)
    assert proc.poll() is None and chain_streaming(proc)
    assert record(p.root, task) is None
    kill_group(proc)
    dry = p.tool("kimg", "--build-only", "--no-ray", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert not status_of(dry.stdout, task).startswith("up to date")
    assert record(p.root, task) is None and record(p.root, f"image:{CLUSTER_TAG}@{N3}") is None
    time.sleep(1.0)  # let the workers' `docker load` see the cut stream
    for node in (n2, n3):
        assert p.image_id(node) != head_id, f"{node.name} counts an image it got half of"
    n2.unshape()

    again = p.tool("kimg", "--build-only", "--no-ray")
    assert again.returncode == 0, again.stdout + again.stderr
    assert task in executed(again.stdout)
    for node in c.nodes:
        assert p.image_id(node) == head_id
    assert record(p.root, task) is not None
    assert executed(p.tool("kimg", "--build-only", "--no-ray").stdout) == []


@pytest.mark.cluster
def test_kill_during_cluster_weights_sync(cluster_project: ClusterProject) -> None:
    from huggingface_hub import snapshot_download

    from harness.hub import LocalHub

    from tasks.ops import weights_copy as distribute, weights_state
    from tasks.connect import HERE, SshLink

    p, c = cluster_project, cluster_project.cluster
    n2 = c.node(2)
    cache = Path(c.head.home) / ".cache" / "huggingface" / "hub"
    repo_dir = "models--org--kwts"
    shutil.rmtree(cache / repo_dir, ignore_errors=True)
    for node in c.nodes[1:]:
        node.run(["rm", "-rf", f"/root/.cache/huggingface/hub/{repo_dir}"])
    blob = os.urandom(20_000_000)  # random: nothing on the way can make it smaller
    with LocalHub() as hub:
        sha = hub.create_repo("org/kwts", {"config.json": b"{}", "w.safetensors": blob})
        snapshot_download("org/kwts", revision=sha, cache_dir=cache, endpoint=hub.endpoint)
    p.recipe("kwts", f"""\
recipe_version: "1"
name: Kill during weights sync
container: {CLUSTER_TAG}
cluster_only: true
model: org/kwts
revision: '{sha}'
command: vllm serve org/kwts --port 18211
""")
    task = f"weights:org/kwts@{sha}@{N2}"
    n2.shape("20mbit")  # 20 MB take ~8 s to n2; n3 is unshaped and finishes at once
    proc = p.start("kwts", "--download-only")
    wait_for("the copy to n2", lambda: any(x.startswith(("rsync ", "ssh ")) and N2 in x
                                           and ("rsync" in x or "RRSTAT" in x)  # rsync, or the chained tar stream
                                           for x in group_cmdlines(proc.pid)), proc=proc)
    time.sleep(3.0)
    assert proc.poll() is None
    assert record(p.root, task) is None
    kill_group(proc)
    dry = p.tool("kwts", "--download-only", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert not status_of(dry.stdout, task).startswith("up to date")
    assert record(p.root, task) is None

    ssh2 = SshLink(("ssh", *n2.ssh_args, n2.target))
    remote = "/root/.cache/huggingface/hub"
    assert not distribute.weights_current(cache, remote, "org/kwts", sha, ssh2, N2), \
        "n2 counts weights it got part of"
    have = weights_state.remote_manifest(ssh2, remote, "org/kwts", sha, N2)
    assert have.get(f"snapshots/{sha}/w.safetensors") != len(blob)
    n2.unshape()

    again = p.tool("kwts", "--download-only")
    assert again.returncode == 0, again.stdout + again.stderr
    assert task in executed(again.stdout)
    want = weights_state.remote_manifest(HERE, cache, "org/kwts", sha)
    for node in c.nodes[1:]:
        ssh = SshLink(("ssh", *node.ssh_args, node.target))
        assert weights_state.remote_manifest(ssh, remote, "org/kwts", sha, node.ip) == want
        got = node.run(["sha256sum", f"{remote}/{repo_dir}/snapshots/{sha}/w.safetensors"]).stdout.split()[0]
        assert got == hashlib.sha256(blob).hexdigest()
    assert record(p.root, task) is not None
    assert executed(p.tool("kwts", "--download-only").stdout) == []
