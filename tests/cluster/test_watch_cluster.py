"""The watcher on three real netns nodes: a worker's container is killed; the watcher tears the
whole native group down on every node and converges it again, and the endpoint answers."""
from __future__ import annotations

import json
import signal
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from harness import cluster as rc
from test_cluster_e2e import ours, project, recipe, tool, watcher  # noqa: F401  (project is a fixture)


def test_killed_worker_makes_the_watcher_re_form_the_group(cluster3: rc.TestCluster, project: Path) -> None:  # noqa: F811
    recipe(project, "watched", backend="")
    res = tool(cluster3, project, "watched", "--setup", "-d", "--ready-timeout", "120")
    assert res.returncode == 0, res.stdout + res.stderr
    before = [ours(node, "watched") for node in cluster3.nodes]
    watching = watcher(cluster3, project, "watched", "--interval", "1")
    runs = project / ".runrecipe" / "runs" / "watched.json"
    try:
        time.sleep(3)
        cluster3.node(2).docker("kill", before[1][0], check=True)
        killed = datetime.now(timezone.utc)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and json.loads(runs.read_text()).get("watch", {}).get("state") != "watching":
            time.sleep(1)
        watch = json.loads(runs.read_text())["watch"]
        assert watch["restarts"] == 1 and watch["state"] == "watching", watch
        assert watch["last_cause"].startswith("rank 1 on 198.18.0.12: container exited"), watch
        with urllib.request.urlopen("http://198.18.0.11:18200/v1/models", timeout=10) as answer:
            assert json.loads(answer.read())["data"][0]["id"] == "org/model"
        after = [ours(node, "watched") for node in cluster3.nodes]
        assert all(len(a) == 1 and a != b for a, b in zip(after, before)), (before, after)
    finally:
        watching.send_signal(signal.SIGTERM)
        log = watching.communicate(timeout=120)[1]
    assert "tearing down the group on every node and converging again (restart 1)" in log, log
    assert "serving again after restart 1" in log, log
    began = next(ln.split(" watch: ")[0] for ln in log.splitlines() if "tearing down the group" in ln)
    print(f"watcher began re-forming {(datetime.fromisoformat(began) - killed).total_seconds():.2f} s after "
          "the worker's container was killed (interval 1 s)")

