"""A CPU recipe (`build_args: [--cpu]`) asks for no GPU: its containers get no `--gpus`, even on an engine
with the NVIDIA runtime, while a GPU recipe on that engine still gets `--gpus all`."""
from __future__ import annotations

from pathlib import Path

import pytest

from tasks.facts import cache as facts
from tasks.ops import launch
from tasks.cluster.roles import Placement
from tasks.plan import Options, make_plan
from tasks.recipe import load_named
from tasks.connect import Local

RECIPE = "recipe_version: '1'\nname: r\ncontainer: img-{rid}\n{build}\ncommand: vllm serve org/m --port 8000\n"
NVIDIA_ENGINE = {"version": "27.3.1", "runtimes": {"nvidia": {}, "runc": {}}, "root": "/var/lib/docker"}


@pytest.mark.parametrize("build, gpus", [("build_args: [--cpu]", False), ("", True)])
def test_a_cpu_plan_gets_no_gpus_on_an_engine_with_the_nvidia_runtime(tmp_path: Path, build: str, gpus: bool) -> None:
    rid = "cpu" if build else "gpu"
    path = tmp_path / f"{rid}.yaml"
    path.write_text(RECIPE.format(rid=rid, build=build))
    plan = make_plan(load_named(str(path), tmp_path), Options(solo=True))
    assert plan.cpu is not gpus
    runner = Local()
    runner.node = f"unit-nvidia-{rid}"  # facts of a node of its own: no real engine is asked
    facts.remember(runner.node, "docker info", (), NVIDIA_ENGINE)
    facts.remember(runner.node, "image", plan.build.tag, {"id": "sha256:" + "1" * 64, "labels": {}})
    try:
        args = launch.wanted(Placement(runner, plan.script), plan, []).args
    finally:
        facts.forget(runner.node)
    assert ("--gpus" in args) is gpus
    if gpus:
        assert args[args.index("--gpus") + 1] == "all"
