"""Every command that changes a node goes through the executor, not only a step's Change: a stop's removal,
a failed start's cleanup, a foreground Ctrl-C's `docker stop`, and the gateway's removal, create, copy and
start are all recorded (RUNRECIPE_EXEC_LOG). A fake runner, no daemon."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.connect import Result
from tasks.errors import NotReadyError, RunError
from tasks.facts import cache as facts
from tasks.facts.docker import Container
from tasks.ops import answers as steps, launch
from tasks.ops.commands import Command, Input
from tasks.stacks import gateway
from tasks.stacks.gateway import GatewayPlan, Route

NODE = "unit-exec-changes"


class Fake:
    """Records run/feed calls. `docker create` prints CID; a command whose
    first words are in `fails` exits 1; every read says "no such container"."""

    node = NODE

    def __init__(self, fails: tuple[str, ...] = ()) -> None:
        self.calls: list[list[str]] = []
        self.fails = fails

    def _answer(self, argv: list[str], check: bool, out: str) -> Result:
        self.calls.append(argv)
        if " ".join(argv[:2]) in self.fails:
            if check:
                raise RunError("command failed", node=self.node, command=" ".join(argv), exit_code=1)
            return Result("", "failed", 1)
        return Result(out, "", 0)

    def run(self, argv: list[str], *, stream: bool = True, timeout: float | None = None, check: bool = True) -> Result:
        return self._answer(argv, check, "")

    def feed(self, argv: list[str], data: bytes, *, timeout: float | None = 600, check: bool = True) -> Result:
        return self._answer(argv, check, "CID\n" if argv[0] == "bash" else "")

    def read(self, argv: list[str], *, check: bool = True, timeout: float = 60) -> Result:
        return Result("", "Error: No such object", 1)


@pytest.fixture(autouse=True)
def exec_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "ran.jsonl"
    monkeypatch.setenv("RUNRECIPE_EXEC_LOG", str(log))
    return log


def recorded(log: Path) -> list[str]:
    """What the executor recorded on this test's node, as `plan` shows it (node prefix dropped)."""
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [e["command"].removeprefix(f"[{NODE}] ") for e in lines if e["node"] == NODE]


def containers(*ids: str) -> tuple[Container, ...]:
    return tuple(Container(i, f"runrecipe-{i}", "running", "img", {"runrecipe.inputs": "old"}) for i in ids)


def test_stop_removes_through_the_executor(exec_log: Path) -> None:
    runner = Fake()
    facts.remember(NODE, "containers", (("recipe", "r"),), containers("c1", "c2"))
    assert launch.stop(runner, "r") == ["runrecipe-c1", "runrecipe-c2"]
    assert runner.calls == [["docker", "rm", "-f", "c1", "c2"]]
    assert recorded(exec_log) == ["docker rm -f c1 c2"]
    assert json.loads(exec_log.read_text()) == {"node": NODE, "command": f"[{NODE}] docker rm -f c1 c2"}


def test_a_failed_removal_still_raises() -> None:
    facts.remember(NODE, "containers", (("recipe", "r"),), containers("c1"))
    with pytest.raises(RunError, match="command failed"):
        launch.stop(Fake(fails=("docker rm",)), "r")


def test_a_failed_start_removes_what_it_created_through_the_executor(exec_log: Path) -> None:
    runner = Fake(fails=("docker start",))
    start = [Command(("bash", "-c", "create"), NODE, Input("env file: empty")), Command(("docker", "cp", "-", "x:/"), NODE),
             Command(("docker", "start", "x"), NODE)]
    with pytest.raises(RunError):
        launch._start(runner, start)
    assert recorded(exec_log) == ["bash -c create < env file: empty", "docker cp - x:/", "docker start x", "docker rm -f CID"]


def test_ctrl_c_in_the_foreground_stops_the_server_through_the_executor(monkeypatch: pytest.MonkeyPatch, exec_log: Path) -> None:
    class Logs:
        def __init__(self, argv: list[str]) -> None:
            pass

        def wait(self) -> int:
            raise KeyboardInterrupt

        def terminate(self) -> None:
            pass

    monkeypatch.setattr(launch.subprocess, "Popen", Logs)
    runner = Fake(fails=("docker stop",))
    plan = SimpleNamespace(container_name="runrecipe-x")
    assert launch.follow(runner, plan, "CID") == 130  # a failed stop: not raised
    assert recorded(exec_log) == ["docker stop CID"]


def gateway_on(runner: Fake) -> GatewayPlan:
    gw = GatewayPlan("s", "runrecipe-s-gateway", 4000, "", "litellm:unit",
                     (Route("m", "http://127.0.0.1:8000/v1", "runrecipe-s-m"),), "model_list: []\n")
    facts.remember(runner.node, "image", gw.image, {"id": "sha256:" + "2" * 64, "labels": {}})
    facts.remember(runner.node, "containers", (("recipe", gw.id),), containers("old"))
    return gw


def test_the_gateway_is_replaced_and_started_through_the_executor(monkeypatch: pytest.MonkeyPatch, exec_log: Path) -> None:
    monkeypatch.setattr(gateway, "wait_ready", lambda *args, **kwargs: None)
    runner = Fake()
    gw = gateway_on(runner)
    assert gateway.converge(runner, gw)["container_id"] == "CID"
    rm, create, cp, start = recorded(exec_log)
    assert rm == "docker rm -f old" and create.startswith("bash -c ") and create.endswith(" < env file: empty")
    assert cp == f"docker cp - {gw.name}:/ < tar: /runrecipe/gateway.yaml" and start == f"docker start {gw.name}"


def test_a_gateway_that_never_lists_its_routes_is_removed_through_the_executor(
        monkeypatch: pytest.MonkeyPatch, exec_log: Path) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise NotReadyError("the gateway did not list every model")

    monkeypatch.setattr(gateway, "wait_ready", never)
    runner = Fake()
    with pytest.raises(NotReadyError):
        gateway.converge(runner, gateway_on(runner))
    assert recorded(exec_log)[-1] == "docker rm -f CID"


def test_the_gateway_plan_names_what_its_start_then_runs(monkeypatch: pytest.MonkeyPatch, exec_log: Path) -> None:
    """A stack's plan shows the gateway's removal, create, copy and start: the very text the executor records."""
    monkeypatch.setattr(gateway, "wait_ready", lambda *args, **kwargs: None)
    runner = Fake()
    gw = gateway_on(runner)
    planned = gateway.answer(runner, gw)
    assert isinstance(planned, steps.Change)
    gateway.converge(runner, gw)
    assert recorded(exec_log) == [c.shown().removeprefix(f"[{NODE}] ") for c in planned.commands]
