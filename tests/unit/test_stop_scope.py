"""`run-recipe stop` removes only what it was asked to: an empty name is refused before any docker call,
no name lists what runs and stops nothing, `--all` is the one way to stop every runrecipe container.

A fake `docker` on PATH records every call and lists two containers, so no real engine is at risk
(the shared test dockerd holds other sessions' containers)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROW = '"{id}"\t"runrecipe-{r}"\t"running"\t"img"\t"{r}"\t"h"\t"f"\t"http://127.0.0.1:8000"\t"now"\t""'
FAKE_DOCKER = f"""#!/bin/sh
echo "$*" >> "$DOCKER_CALLS"
case "$1" in
  ps) case "$*" in
        *label=runrecipe.recipe=a*) printf '%s\\n' '{ROW.format(id="c1", r="a")}' ;;
        *label=runrecipe.recipe=*) ;;
        *) printf '%s\\n' '{ROW.format(id="c1", r="a")}' '{ROW.format(id="c2", r="b")}' ;;
      esac ;;
esac
"""


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    (tmp_path / "recipes").mkdir()
    calls = tmp_path / "calls"
    env = {**os.environ, "RUNRECIPE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "DOCKER_CALLS": str(calls),
           "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return calls, env


def stop(fake: tuple[Path, dict[str, str]], *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    calls, env = fake
    res = subprocess.run([sys.executable, "-m", "tasks", "stop", *args], env=env, cwd=env["RUNRECIPE_HOME"],
                         capture_output=True, text=True, timeout=60)
    return res, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize("name", ["", " "])
def test_an_empty_name_is_refused_before_any_docker_call(fake, name: str) -> None:
    res, calls = stop(fake, name)
    assert res.returncode == 2 and calls == [], calls
    assert "the recipe name is empty" in res.stderr and "--all" in res.stderr
    assert "Traceback" not in res.stderr


def test_no_name_lists_what_runs_and_stops_nothing(fake) -> None:
    res, calls = stop(fake)
    assert res.returncode == 2, res.stderr
    assert "runrecipe-a" in res.stdout and "runrecipe-b" in res.stdout
    assert "name the recipe to stop" in res.stderr and "--all" in res.stderr
    assert not [c for c in calls if c.startswith("rm")], calls


def test_a_name_stops_only_that_recipe(fake) -> None:
    res, calls = stop(fake, "a")
    assert res.returncode == 0, res.stderr
    assert [c for c in calls if c.startswith("rm")] == ["rm -f c1"]


def test_all_stops_everything_and_cannot_be_mixed_with_a_name(fake) -> None:
    res, calls = stop(fake, "--all")
    assert res.returncode == 0, res.stderr
    assert [c for c in calls if c.startswith("rm")] == ["rm -f c1 c2"]
    assert "runrecipe-a" in res.stdout and "runrecipe-b" in res.stdout
    both, _ = stop(fake, "a", "--all")
    assert both.returncode == 2 and "not both" in both.stderr
