"""Each shipped mod, run twice inside a container of the busybox stand-in image.

Reuses the host-side cases of tests/test_catalogue_data.py (`MOD_CASES`, `exercise_mod`):
the fixture tree (mod copy under mods/<name>, the WORKSPACE_DIR, drop-caches' target
file and state dir) lives in a temporary root that is bind-mounted into the container
at the same path, so the paths in each case's env are valid on both sides. The
first run must apply, the second must be a no-op success, and a missing target must
fail with the mod's name and a clear message.

Containers run with --network none and the runrecipe.test=1 label (the `docker`
fixture adds it), and are removed at the end of each test. The test dockerd cannot
grant --privileged, so drop-caches writes to the file its DROP_CACHES_FILE override
names; that the real /proc/sys/vm/drop_caches is refused without privilege is
checked on its own.
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

import test_catalogue_data as catalogue_data
from harness import engine

pytestmark = pytest.mark.docker

Container = Callable[[Path], str]


@pytest.fixture
def container(docker: Callable[..., subprocess.CompletedProcess[str]],
              standin_image: str) -> Iterator[Container]:
    """`start(root)`: a sleeping stand-in container with root bind-mounted at the same path."""
    started: list[str] = []

    def start(root: Path) -> str:
        cid = docker("run", "-d", "--network", "none", "-v", f"{root}:{root}",
                     standin_image, "sleep", "600").stdout.strip()
        started.append(cid)
        return cid

    yield start
    if started:
        docker("rm", "-f", *started)  # also ends drop-caches' background loop


def container_runner(docker_host: str, cid: str) -> catalogue_data.ModRunner:
    """Run mod_dir/run.sh in the container with cwd=mod_dir and exactly `env` (env -i)."""
    def run(mod_dir: Path, env: dict) -> subprocess.CompletedProcess:
        pairs = [f"{k}={v}" for k, v in env.items()]
        return engine.run_docker(docker_host, "exec", "-w", str(mod_dir), cid,
                                 "env", "-i", *pairs, "sh", "./run.sh", check=False, timeout=60)
    return run


@pytest.mark.parametrize("mod", sorted(catalogue_data.MOD_CASES))
def test_mod_runs_twice_in_container(mod: str, tmp_path: Path, docker_host: str,
                                     container: Container) -> None:
    cid = container(tmp_path)
    # The case's own cleanup signals host pids; the loop's pid belongs to the container's
    # pid namespace, so cleanup is removing the container (the fixture does).
    case = dataclasses.replace(catalogue_data.MOD_CASES[mod], cleanup=lambda root: None)
    catalogue_data.exercise_mod(case, tmp_path, container_runner(docker_host, cid))


def test_every_shipped_mod_is_exercised() -> None:
    shipped = {p.name for p in catalogue_data.MODS_DIR.iterdir() if p.is_dir()}
    assert shipped == set(catalogue_data.MOD_CASES)


def test_drop_caches_refuses_unprivileged_proc(tmp_path: Path, docker_host: str,
                                               container: Container) -> None:
    """Without --privileged, the default target /proc/sys/vm/drop_caches is read-only: say so, fail."""
    cid = container(tmp_path)
    mod_dir = tmp_path / "mods" / "drop-caches"
    mod_dir.parent.mkdir()
    shutil.copytree(catalogue_data.MODS_DIR / "drop-caches", mod_dir)
    env = {"PATH": "/usr/bin:/bin", "DROP_CACHES_STATE_DIR": str(tmp_path / "state")}
    result = container_runner(docker_host, cid)(mod_dir, env)
    assert result.returncode != 0, result.stdout
    assert "drop-caches: ERROR: /proc/sys/vm/drop_caches is not writable" in result.stderr, result.stderr
    assert "privileged" in result.stderr
    assert not (tmp_path / "state" / "drop-caches.pid").exists()


def test_template_mod_places_file_in_image_workdir(tmp_path: Path, docker_host: str,
                                                    container: Container) -> None:
    """WORKSPACE_DIR as the image sets it (/workspace/vllm, not bind-mounted): applied, then a no-op."""
    cid = container(tmp_path)
    mod_dir = tmp_path / "mods" / "fix-qwen3.6-chat-template"
    mod_dir.parent.mkdir()
    shutil.copytree(catalogue_data.MODS_DIR / mod_dir.name, mod_dir)
    run = container_runner(docker_host, cid)
    env = {"PATH": "/usr/bin:/bin", "WORKSPACE_DIR": "/workspace/vllm"}
    first, second = run(mod_dir, env), run(mod_dir, env)
    assert first.returncode == 0 and "installed /workspace/vllm/fixed_chat_template.jinja" in first.stdout, first
    assert second.returncode == 0 and "nothing to do" in second.stdout, second
    placed = engine.run_docker(docker_host, "exec", cid, "cat", "/workspace/vllm/fixed_chat_template.jinja").stdout
    assert placed == (mod_dir / "chat_template.jinja").read_text(encoding="utf-8")
