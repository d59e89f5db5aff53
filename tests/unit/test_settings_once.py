"""The .env is read once per command, through config.py, and only a launch checks its launch values:
status, stop and logs take the node list from one lenient read (read_env), so a bad IB_IF, ETH_IF or
MASTER_PORT cannot keep anyone from looking at or stopping what runs; a stack's plan takes its nodes and
its gateway's key from the one Settings its entry point read."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tasks import config
from tasks.cli import lifecycle as lifecycle_cli
from tasks.plan import Options
from tasks.serve import lifecycle
from tasks.stacks.files import find, load
from tasks.stacks.plan import make_stack_plan

from .test_stack import TWO, project, write  # noqa: F401  (project: a fixture)
from .test_stop_scope import fake  # noqa: F401  (a fake docker on PATH that lists two containers)

LAUNCH_ONLY = "IB_IF=not an hca!\nETH_IF=-oops\nMASTER_PORT=99999\n"


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every .env read (config.py is the one module that reads it)."""
    seen: list[Path] = []
    real = config.load_env

    def counting(path: Path) -> dict[str, str]:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(config, "load_env", counting)
    return seen


def test_a_launch_refuses_what_status_does_not_read(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(LAUNCH_ONLY)
    with pytest.raises(config.ConfigError, match="MASTER_PORT"):
        config.read_settings(env)
    lenient = config.read_env(env)
    assert lenient.values["IB_IF"] == "not an hca!" and lenient.cluster_nodes() == ()
    with pytest.raises(ValueError, match="read_settings"):  # a lenient read cannot become a run's options
        lenient.options()


def test_status_reads_the_env_once_and_ignores_launch_values(project: Path, reads: list[Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (project / ".env").write_text(LAUNCH_ONLY + "CLUSTER_NODES=127.0.0.1\n")
    asked: list[Any] = []
    monkeypatch.setattr(lifecycle_cli, "status_rows", lambda runners, rid, details: asked.append(runners) or ([], []))
    assert lifecycle_cli.main("status", []) == 0
    assert reads == [project / ".env"]
    assert [r.node for r in asked[0]] == ["127.0.0.1"]


def test_nodes_flag_reads_no_env(project: Path, reads: list[Path]) -> None:
    assert [n.target for n in lifecycle.listed_nodes("127.0.0.1", project / "missing.env")] == ["127.0.0.1"]
    assert reads == []


def test_status_and_stop_work_with_a_bad_launch_value(fake: tuple[Path, dict[str, str]]) -> None:  # noqa: F811
    _, env = fake
    Path(env["RUNRECIPE_HOME"], ".env").write_text(LAUNCH_ONLY)
    said = {}
    for args in (["status"], ["stop", "a"], ["logs", "a"]):
        res = subprocess.run([sys.executable, "-m", "tasks", *args], env=env, cwd=env["RUNRECIPE_HOME"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and "Error" not in res.stderr, (args, res.stderr)
        said[args[0]] = res.stdout
    assert "runrecipe-a" in said["status"] and "runrecipe-b" in said["status"]
    assert said["stop"] == "stopped runrecipe-a@local\n"


def test_a_stack_plan_reads_the_env_once(project: Path, reads: list[Path],  # noqa: F811
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUO_KEY", raising=False)
    (project / ".env").write_text("DUO_KEY=sk-from-dotenv\n")
    write(project, TWO, "duo")
    plan = make_stack_plan(load(find("duo")), Options(**config.read_settings(None).options()))
    assert reads == [project / ".env"] and len(plan.entries) == 2


def test_stack_status_and_stop_ignore_launch_values(project: Path, reads: list[Path],  # noqa: F811
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.cli import stack as stack_cli

    (project / ".env").write_text(LAUNCH_ONLY)
    write(project, TWO, "duo")
    seen: list[tuple] = []
    monkeypatch.setattr(stack_cli, "status", lambda name, nodes, as_json: seen.append((name, nodes)) or 0)
    monkeypatch.setattr(stack_cli, "stop", lambda name, nodes, order: seen.append((name, nodes, order)) or 0)
    assert stack_cli.main(["duo", "status"]) == 0 and stack_cli.main(["duo", "stop"]) == 0
    assert [s[0] for s in seen] == ["duo", "duo"] and len(seen[1][2]) == 2  # stop knows the start order
    assert reads == [project / ".env"] * 2  # once per command
    with pytest.raises(config.ConfigError, match="MASTER_PORT"):  # a start checks them
        stack_cli.main(["duo", "--dry-run"])


def test_folders_are_read_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from tasks import settings

    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path / "a"))  # through monkeypatch: seen at once (conftest)
    assert settings.project_root() == (tmp_path / "a").resolve()
    os.environ["RUNRECIPE_HOME"] = str(tmp_path / "b")  # behind its back (monkeypatch restores it after)
    assert settings.project_root() == (tmp_path / "a").resolve() and settings.recipes_dir().parent.name == "a"
    settings.forget()
    assert settings.project_root() == (tmp_path / "b").resolve()
