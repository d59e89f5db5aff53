"""`run-recipe plan` shows the commands that then run: the executor's record equals what plan printed."""
from __future__ import annotations

import json
from pathlib import Path

from .conftest import Project, free_port
from .test_solo import simple

SECRET = "rrplansecret" + "0123456789"


def planned(project: Project, *args: str) -> list[str]:
    """The commands `plan --json` lists (every task), each also printed verbatim by the plain `plan`."""
    asked = project.cli("plan", *args, "--json")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    texts = [c["text"] for t in json.loads(asked.stdout)["tasks"] for c in t.get("commands", [])]
    shown = project.cli("plan", *args)
    assert shown.returncode == 0, shown.stderr
    for text in texts:
        assert f"$ {text}\n" in shown.stdout, (text, shown.stdout)
    return texts


def ran(log: Path) -> list[str]:
    """What the executor ran (RUNRECIPE_EXEC_LOG), then the log starts again."""
    lines = [json.loads(line)["command"] for line in log.read_text().splitlines()] if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


def test_plan_shows_the_commands_that_then_run(project: Project) -> None:
    log = project.root / "exec.jsonl"
    project.env["RUNRECIPE_EXEC_LOG"] = str(log)
    project.env["MY_API_KEY"] = SECRET  # `-e MY_API_KEY`: a secret env variable, in the env file on stdin
    port = free_port()
    project.recipe("shown", simple("shown", port))

    # Nothing built: the build is known to the byte; the launch waits for the image (no command shown yet).
    first = planned(project, "shown")
    assert [t.split()[:2] for t in first] == [["docker", "build"]]
    dry = project.cli("shown", "--setup", "--dry-run")  # --dry-run shows the same line (it asks only this machine)
    assert dry.returncode == 0 and f"$ {first[0]}\n" in dry.stdout, dry.stdout + dry.stderr
    assert project.cli("shown", "--setup", "-d").returncode == 0
    done = ran(log)
    assert done[:1] == first and [t.split()[:2] for t in done[1:]] == [
        ["bash", "-c"], ["docker", "cp"], ["docker", "start"]]

    # A new port: plan names the old container's removal and the new one's create, copy, start; exactly those run
    # (the vLLM check of the new argv would run before the launch, and plan shows no step behind one that runs).
    port2 = free_port()
    new = ("--port", str(port2), "--skip-vllm-check", "-e", "MY_API_KEY")
    second = planned(project, "shown", *new)
    assert [t.split()[:2] for t in second] == [["docker", "rm"], ["bash", "-c"], ["docker", "cp"], ["docker", "start"]]
    assert "< env file: MY_API_KEY" in second[1]
    moved = project.cli("shown", "-d", *new)
    assert moved.returncode == 0, moved.stderr
    assert ran(log) == second
    assert SECRET not in "".join(second)

    # Up to date: plan shows no command, and a run runs none.
    assert planned(project, "shown", *new) == []
    assert project.cli("shown", "-d", *new).returncode == 0
    assert ran(log) == []


def test_plan_shows_the_mods_build_that_then_runs(project: Project) -> None:
    """Once the base image exists, the mods image's tag is known: plan names its build (context on stdin)."""
    log = project.root / "exec.jsonl"
    project.env["RUNRECIPE_EXEC_LOG"] = str(log)
    mod = project.root / "mods" / "stamp"
    mod.mkdir(parents=True)
    (mod / "run.sh").write_text('#!/bin/sh\nset -eu\necho "stamp" > "$WORKSPACE_DIR/stamp.txt"\n')
    project.recipe("plain", simple("modsplan", free_port()))
    assert project.cli("plain", "--setup", "-d", "--skip-vllm-check").returncode == 0  # builds the base image
    ran(log)
    project.recipe("modsplan", simple("modsplan", free_port(), mods="mods: [mods/stamp]"))
    shown = planned(project, "modsplan", "--skip-vllm-check")
    assert [t.split()[:4] for t in shown] == [["docker", "build", "-t", shown[0].split()[3]]]
    assert " - < a tar: Dockerfile FROM sha256:" in shown[0] and shown[0].endswith(" running mods stamp")
    assert project.cli("modsplan", "--setup", "-d", "--skip-vllm-check").returncode == 0
    done = ran(log)
    assert done[:1] == shown and [t.split()[:2] for t in done[1:]] == [["bash", "-c"], ["docker", "cp"], ["docker", "start"]]
