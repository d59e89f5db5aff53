"""Two runs at once on one project (solo, real test dockerd): the state lock serialises them, each ends
with a clear outcome, the shared image is built once, and doit's state stays intact (a re-run executes
nothing)."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

from .conftest import Project, free_port
from .test_kill_mid_step import executed, serves

WAIT = "waiting for another run to finish"


def start(project: Project, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tasks", *args], cwd=project.root, env=project.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def both(project: Project, first: list[str], second: list[str]) -> list[tuple[subprocess.Popen, str, str]]:
    """Start two runs 0.3 s apart (the second reaches the lock while the first holds it); wait for both."""
    procs = [start(project, *first)]
    time.sleep(0.3)
    procs.append(start(project, *second))
    done = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"a concurrent run hung:\n{out}\n{err}") from None
        done.append((proc, out, err))
    return done


def state_ok(project: Project) -> list[str]:
    """doit's sqlite file opens, passes sqlite's integrity check, and lists the tasks it holds."""
    con = sqlite3.connect(f"file:{project.root / '.runrecipe' / 'doit.sqlite3'}?mode=ro", uri=True)
    try:
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
        rows = con.execute("select task_id, task_data from doit").fetchall()
    finally:
        con.close()
    for _, data in rows:
        json.loads(data)
    return sorted(task for task, _ in rows)


def test_different_recipes_sharing_one_image(project: Project) -> None:
    """Both --setup, same container tag: one builds, the other waits for the lock and finds it built."""
    project.docker("rmi", "-f", "rr-faults-shared", check=False)  # never built (a name e2e cleanups leave alone)
    try:
        _different_recipes_sharing_one_image(project)
    finally:
        for rid in ("share-a", "share-b"):
            ids = [c["Id"] for c in project.containers(rid)]
            if ids:
                project.docker("rm", "-f", *ids, check=False)
        project.docker("rmi", "-f", "rr-faults-shared", check=False)


def _different_recipes_sharing_one_image(project: Project) -> None:
    ports = {rid: free_port() for rid in ("share-a", "share-b")}
    for rid, port in ports.items():
        project.recipe(rid, f"""\
            recipe_version: "1"
            name: Shared image {rid}
            container: rr-faults-shared
            defaults: {{port: {port}}}
            command: vllm serve org/{rid} --port {{port}} --host 127.0.0.1
            """)
    runs = both(project, ["share-a", "--setup", "-d", "--ready-timeout", "60"],
                ["share-b", "--setup", "-d", "--ready-timeout", "60"])
    for proc, out, err in runs:
        assert proc.returncode == 0, out + err
        assert "Traceback" not in out + err
    waited = [err for _, _, err in runs if WAIT in err]
    assert len(waited) == 1, [err for _, _, err in runs]
    assert "lock acquired after" in waited[0]
    builds = [executed(out).count("build:rr-faults-shared") for _, out, _ in runs]
    assert sorted(builds) == [0, 1], [out for _, out, _ in runs]
    assert [executed(out)[-1] for _, out, _ in runs] == ["launch:share-a", "launch:share-b"]
    for rid, port in ports.items():
        assert len(project.containers(rid)) == 1 and serves(port)
    tasks = state_ok(project)
    assert {"build:rr-faults-shared", "launch:share-a", "launch:share-b"} <= set(tasks), tasks
    for rid in ports:  # a third run of each executes no task
        again = project.cli(rid, "--setup", "-d")
        assert again.returncode == 0 and executed(again.stdout) == [], again.stdout + again.stderr


def test_same_recipe_two_ports_at_once(project: Project, standin_tag: str) -> None:
    """The one that got the lock last wins: exactly one container remains, serving its port."""
    project.recipe("twoport", f"""\
        recipe_version: "1"
        name: Two ports
        container: {standin_tag}
        defaults: {{port: {free_port()}}}
        env: {{STANDIN_DELAY: "1"}}
        command: vllm serve org/m --port {{port}} --host 127.0.0.1
        """)
    p1, p2 = free_port(), free_port()
    runs = both(project, ["twoport", "-d", "--port", str(p1), "--ready-timeout", "60"],
                ["twoport", "-d", "--port", str(p2), "--ready-timeout", "60"])
    for proc, out, err in runs:
        assert proc.returncode == 0, out + err  # each run's outcome: it served its port, then maybe was replaced
        assert executed(out) == ["check:twoport", "launch:twoport"], out  # each port is a new argv
        assert "serving" in err and "Traceback" not in err
    # the lock file names the last holder: that run's port is the one served now
    last_pid = json.loads((project.root / ".runrecipe" / "lock").read_text())["pid"]
    (last,) = [i for i, (proc, _, _) in enumerate(runs) if proc.pid == last_pid]
    port, other = (p1, p2) if last == 0 else (p2, p1)
    assert WAIT in runs[last][2]
    assert "replacing runrecipe-twoport" in runs[last][2]
    (c,) = project.containers("twoport")
    assert c["State"]["Running"]
    assert c["Config"]["Labels"]["runrecipe.endpoint"].endswith(f":{port}/v1")
    assert serves(port) and not serves(other)
    assert "launch:twoport" in state_ok(project)
    again = project.cli("twoport", "-d", "--port", str(port))
    assert again.returncode == 0 and executed(again.stdout) == [], again.stdout + again.stderr
    assert project.containers("twoport")[0]["Id"] == c["Id"]
