"""A throw-away runrecipe project on the real test dockerd, driven through the real CLI and doit."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CODE_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Project:
    """RUNRECIPE_HOME with its own recipes, .env and state; runs run-recipe and doit as a user would."""

    root: Path
    env: dict[str, str]
    recipes: list[str] = field(default_factory=list)

    def recipe(self, rid: str, body: str) -> Path:
        path = self.root / "recipes" / f"{rid}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
        self.recipes.append(rid)
        return path

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tasks", *args], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def watcher(self, rid: str, *args: str) -> subprocess.Popen[str]:
        """`run-recipe watch RID ARGS...` in the background; its stderr is the watcher's log."""
        return subprocess.Popen([sys.executable, "-m", "tasks", "watch", rid, *args], cwd=self.root, env=self.env,
                                stderr=subprocess.PIPE, text=True)

    def doit(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "doit", "-f", str(CODE_ROOT / "dodo.py"), *args],
                              cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, check=check)

    def containers(self, rid: str) -> list[dict]:
        ids = self.docker("ps", "-aq", "--no-trunc", "--filter", f"label=runrecipe.recipe={rid}").stdout.split()
        if not ids:
            return []
        # a container may go between the two calls (a watcher re-forming its group): inspect says so on
        # stderr and still prints the others
        listed = self.docker("inspect", *ids, check=False).stdout
        return json.loads(listed) if listed.strip() else []

    def remove_test_images(self) -> None:
        """Images the e2e recipes build (rr-e2e-*, their mods images) go: each test starts from "never built"."""
        refs = [ref for pattern in ("rr-e2e-*", "runrecipe-mods")
                for ref in self.docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                                       f"reference={pattern}").stdout.split()]
        if refs:
            self.docker("rmi", "-f", *refs, check=False)

    def argv_in(self, container_id: str) -> list[str]:
        raw = self.docker("exec", container_id, "cat", "/tmp/vllm-argv").stdout
        return raw.split("\0")[:-1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture
def project(tmp_path: Path, docker_host: str, standin_docker_dir: Path) -> Project:
    root = tmp_path / "project"
    (root / "recipes").mkdir(parents=True)
    (root / ".env").write_text("# the test engine cannot grant --privileged's capabilities\nNON_PRIVILEGED=1\n")
    env = {**os.environ, "DOCKER_HOST": docker_host, "RUNRECIPE_HOME": str(root),
           "RUNRECIPE_DOCKER_DIR": str(standin_docker_dir), "DOCKER_BUILDKIT": "0",
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(CODE_ROOT),
           # Nothing may reach the internet: the hub is a closed loopback port unless a test starts one.
           "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_DISABLE_TELEMETRY": "1"}
    proj = Project(root, env)
    proj.remove_test_images()
    yield proj
    for rid in proj.recipes:
        ids = [c["Id"] for c in proj.containers(rid)]
        if ids:
            proj.docker("rm", "-f", *ids, check=False)
    proj.remove_test_images()
