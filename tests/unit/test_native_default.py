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
    from tasks.cli import loader

    assert loader._switch({"ray": value}, "ray") is ray


@pytest.mark.parametrize("variable, said", [("ray=yes", "doit ray=: 'yes' is not 1 (Ray) or 0"),
                                            ("no_build=yes", "doit no_build=: 'yes' is not 1 (use the image as it is")])
def test_doit_refuses_a_switch_value_it_cannot_read(home: Path, variable: str, said: str) -> None:
    import os
    import subprocess
    import sys

    from .test_cli import ROOT

    env = {**os.environ, "RUNRECIPE_HOME": str(home), "PYTHONPATH": str(ROOT), "DOCKER_HOST": "unix:///nonexistent.sock"}
    res = subprocess.run([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "list", "recipe=good", variable],
                         cwd=home, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and said in res.stderr, res.stderr


CPU_PAIR = RAY_RECIPE.replace("container: img\n", "container: img\nbuild_args: [--cpu]\n")
RAY_REFUSED = ("its build_args hold --cpu, and vLLM's CPU build refuses Ray when its engine starts "
               "(\"current platform cpu does not support ray\"); nothing was started. Run it without --ray")


@pytest.mark.parametrize("flags", [NODES, []])  # a cluster, and a run that is solo anyway
def test_ray_with_a_cpu_recipe_is_refused_with_the_engines_reason(home: Path, flags: list[str]) -> None:
    (home / "recipes" / "cpupair.yaml").write_text(CPU_PAIR.replace("cluster_only: true\n", ""))
    res = cli(home, "cpupair", *flags, "--dry-run", "--ray")
    assert res.returncode == 1 and RAY_REFUSED in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert res.stdout == ""
    native = cli(home, "cpupair", *NODES, "--dry-run", "--json")
    assert native.returncode == 0 and json.loads(native.stdout)["backend"] == "native", native.stderr


def test_doit_ray_with_a_cpu_recipe_is_refused(home: Path) -> None:
    import os
    import subprocess
    import sys

    from .test_cli import ROOT

    (home / "recipes" / "cpupair.yaml").write_text(CPU_PAIR)
    env = {**os.environ, "RUNRECIPE_HOME": str(home), "PYTHONPATH": str(ROOT), "DOCKER_HOST": "unix:///nonexistent.sock"}
    res = subprocess.run([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "list", "recipe=cpupair", "ray=1",
                          "nodes=10.9.9.1,10.9.9.2"], cwd=home, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and RAY_REFUSED in res.stderr, res.stderr


def test_lint_vllm_plans_no_ray_run_of_a_cpu_recipe(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.cli import lint_vllm

    (home / "recipes" / "cpupair.yaml").write_text(CPU_PAIR)
    (home / "recipes" / "pair.yaml").write_text(RAY_RECIPE)
    monkeypatch.setenv("RUNRECIPE_HOME", str(home))
    plans, skipped = lint_vllm.plans_of([home / "recipes" / "cpupair.yaml", home / "recipes" / "pair.yaml"])
    assert skipped == []
    assert [(p.recipe.id, p.options.ray) for p in plans] == [("cpupair", False), ("pair", True), ("pair", False)]
