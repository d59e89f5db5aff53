"""The launch step's commands from a real plan and a node's facts (no daemon): the old container's removal,
then create (secret env on stdin, no clock value on argv), copy the script, start, all by the container's
name, so `plan` can show them before they run. Secret values appear nowhere in the shown text."""
from __future__ import annotations

from pathlib import Path

from tasks import container_flags
from tasks.facts import cache as facts
from tasks.ops import launch
from tasks.ops import answers as steps
from tasks.cluster.roles import Placement
from tasks.ops.commands import shown
from tasks.facts.docker import Container
from tasks.plan import Options, make_plan
from tasks.recipe import load_named
from tasks.connect import Local

RECIPE = "recipe_version: '1'\nname: r\ncontainer: img-l\ncommand: vllm serve org/m --port 8000\n"
ENGINE = {"version": "27.3.1", "runtimes": {"runc": {}}, "root": "/var/lib/docker"}
SECRET = "unitsecret-" + "7" * 16


def test_launch_answers_with_the_commands_converge_runs(tmp_path: Path) -> None:
    path = tmp_path / "l.yaml"
    path.write_text(RECIPE)
    side = container_flags.make(env=[f"MY_TOKEN={SECRET}"], privileged=False)
    plan = make_plan(load_named(str(path), tmp_path), Options(solo=True, docker=side))
    runner = Local()
    runner.node = "unit-launch-commands"  # facts of a node of its own: no real engine is asked
    old = Container("c0ffee", plan.container_name, "running", "img", {"runrecipe.inputs": "before"})
    facts.remember(runner.node, "docker info", (), ENGINE)
    facts.remember(runner.node, "image", plan.build.tag, {"id": "sha256:" + "1" * 64, "labels": {}})
    facts.remember(runner.node, "containers", (("recipe", plan.recipe.id),), (old,))
    place = Placement(runner, plan.script)
    try:
        answer = launch.answer([place], plan)
        want = launch.wanted(place, plan, [])
    finally:
        facts.forget(runner.node)
    assert isinstance(answer, steps.Change) and answer.why == f"{plan.container_name}: its inputs changed"
    rm, create, cp, start = answer.commands
    assert rm.argv == ("docker", "rm", "-f", "c0ffee")
    assert create.argv[:2] == ("bash", "-c") and create.argv[-len(want.args):] == tuple(want.args)
    assert f"runrecipe.inputs={want.digest}" in create.argv and not any("started" in w for w in create.argv)
    assert create.stdin is not None and create.stdin.secret and create.stdin.data() == f"MY_TOKEN={SECRET}\n".encode()
    assert cp.argv == ("docker", "cp", "-", f"{plan.container_name}:/") and cp.stdin is not None
    assert start.argv == ("docker", "start", plan.container_name)
    texts = [shown(c) for c in answer.commands]
    assert texts[1].endswith(" < env file: MY_TOKEN") and not any(SECRET in t for t in texts)
    assert answer.commands == tuple(c for cs in launch.commands([place], plan, [want], [[old]])[0] for c in cs) + \
        tuple(launch.start_commands(place, plan, want))
