"""Issue #14, item 1 (origin-facts 6.1): a cluster runs native multi-node unless --ray is given, whatever
executor backend the recipe names; --no-ray means the default; --ray on a solo run is said to do nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .test_cli import cli, home  # noqa: F401 - the fixture and the runner of the CLI tests

RAY_RECIPE = ("recipe_version: '1'\nname: Pair\ncontainer: img\ncluster_only: true\ndefaults: {tensor_parallel: 2}\n"
              "command: vllm serve org/m -tp {tensor_parallel} --distributed-executor-backend ray\n")
NODES = ["-n", "10.9.9.1,10.9.9.2"]


@pytest.mark.parametrize("flags, backend", [([], "native"), (["--no-ray"], "native"), (["--ray"], "ray")])
def test_the_recipes_ray_backend_does_not_choose_ray(home: Path, flags: list[str], backend: str) -> None:
    (home / "recipes" / "pair.yaml").write_text(RAY_RECIPE)
    res = cli(home, "pair", *NODES, "--dry-run", "--json", *flags)
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert shown["backend"] == backend
    head, worker = (s["script"] for s in shown["node_scripts"])
    if backend == "native":
        assert "--distributed-executor-backend" not in head + worker
        assert "--node-rank 1 --master-addr 10.9.9.1" in worker and "--headless" in worker
    else:
        assert "ray start --head" in head and head.rstrip().endswith("--distributed-executor-backend ray")


def test_ray_on_a_solo_run_warns_that_it_does_nothing(home: Path) -> None:
    res = cli(home, "good", "--dry-run", "--json", "--ray")  # no -n, no .env: solo
    assert res.returncode == 0, res.stderr
    assert "Warning: --ray is for a cluster: this run is solo (one node)" in res.stderr
    assert json.loads(res.stdout)["mode"] == "solo"


@pytest.mark.parametrize("value, warned", [("mp", True), ("uni", True), ("ray", False)])
def test_ray_over_another_executor_warns_that_it_is_replaced(home: Path, value: str, warned: bool) -> None:
    """The origin keeps `mp` under --ray; here Ray runs the group, so the value is replaced, and said so."""
    (home / "recipes" / "pair.yaml").write_text(RAY_RECIPE.replace("backend ray", f"backend {value}"))
    res = cli(home, "pair", *NODES, "--dry-run", "--json", "--ray")
    assert res.returncode == 0, res.stderr
    note = f"Warning: --ray: the command's --distributed-executor-backend {value} is replaced by ray"
    assert (note in res.stderr) == warned, res.stderr
    head = json.loads(res.stdout)["node_scripts"][0]["script"]
    assert head.rstrip().endswith("--distributed-executor-backend ray")
    assert "replaced by ray" not in cli(home, "pair", *NODES, "--dry-run").stderr  # native: dropped, as the origin


def test_help_says_native_is_the_default(home: Path) -> None:
    text = " ".join(cli(home, "--help").stdout.split())
    assert "native multi-node, the default" in text


@pytest.mark.parametrize("value, ray", [("0", False), ("1", True)])
def test_doit_takes_ray_as_a_variable(value: str, ray: bool) -> None:
    from tasks import loader

    assert loader._ray(value) is ray


def test_doit_refuses_a_ray_value_it_cannot_read(home: Path) -> None:
    import os
    import subprocess
    import sys

    from .test_cli import ROOT

    env = {**os.environ, "RUNRECIPE_HOME": str(home), "PYTHONPATH": str(ROOT), "DOCKER_HOST": "unix:///nonexistent.sock"}
    res = subprocess.run([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "list", "recipe=good", "ray=yes"],
                         cwd=home, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "doit ray=: 'yes' is not 1 (Ray) or 0" in res.stderr, res.stderr
