"""A hostile (or broken) hub mirror: its file listing names paths outside the snapshot folder.

The real client, the real CLI and the loopback test hub: the run must end in a clear error naming the repo
and the path, with nothing outside the snapshot written or removed. A victim file sits where each path
points, with a size that differs from the listed one (which once made the tool delete it as "wrong size")."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.hub import LocalHub

CODE_ROOT = Path(__file__).resolve().parents[2]
VICTIM = b"must survive\n"


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "dot-part"])
def test_a_listing_path_outside_the_snapshot_is_refused_and_nothing_is_touched(tmp_path: Path, kind: str) -> None:
    home, hf = tmp_path / "project", tmp_path / "hf"
    (home / "recipes").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    # snapshots/<commit>/ is hf/hub/models--org--evil/snapshots/<commit>: five levels below tmp_path
    path = {"dotdot": "../../../../../victim.txt", "absolute": str(victim),
            "dot-part": "./../../x/../../../../victim.txt"}[kind]
    with LocalHub() as hub:
        hub.create_repo("org/evil", {"config.json": b"{}", path: b"a different size than the victim's"})
        (home / "recipes" / "evil.yaml").write_text(
            "recipe_version: '1'\nname: Evil\ncontainer: img\nmodel: org/evil\ncommand: vllm serve org/evil --port {port}\n"
            "defaults: {port: 8000}\n")
        env = {**os.environ, "RUNRECIPE_HOME": str(home), "PYTHONPATH": str(CODE_ROOT), "HF_HOME": str(hf),
               "HF_ENDPOINT": hub.endpoint, "DOCKER_HOST": "unix:///nonexistent.sock"}
        env.pop("HF_HUB_CACHE", None)
        for _ in range(2):  # the second run finds the listing the first one left (if any) in the cache
            res = subprocess.run([sys.executable, "-m", "tasks", "evil", "--solo", "--download-only"], cwd=home,
                                 env=env, capture_output=True, text=True, timeout=120)
            out = res.stdout + res.stderr
            assert res.returncode == 1, out
            assert "Traceback" not in out
            assert out.startswith("Error: ") or "\nError: " in out, out
            assert "org/evil@" in out and repr(path) in out and "not a file inside the snapshot folder" in out
            assert victim.read_bytes() == VICTIM
        assert not [p for p in tmp_path.iterdir() if p.name not in ("project", "hf", "victim.txt")]
        assert not hub.count("GET", "/resolve/"), "no file was fetched from a hub that lies about paths"
