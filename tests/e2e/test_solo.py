"""Solo mode end to end on a real dockerd: build, launch, readiness, converge, lifecycle."""
from __future__ import annotations

import subprocess
import sys
import time

from .conftest import CODE_ROOT, Project, free_port, get_json


def simple(tag: str, port: int, extra_env: str = "", command_tail: str = "", mods: str = "",
           build_args: str = "") -> str:
    return f"""\
        recipe_version: "1"
        name: E2E {tag}
        container: rr-e2e-{tag}
        {build_args}
        {mods}
        defaults:
          port: {port}
          host: 127.0.0.1
          tensor_parallel: 2
        env:
          FROM_RECIPE: '{{"json": "kept"}}'
          {extra_env}
        command: |
          vllm serve org/model \\
              --port {{port}} --host {{host}} \\
              -tp {{tensor_parallel}} {command_tail}
        """


def executed(output: str) -> list[str]:
    """Tasks doit ran (lines '.  task'), as opposed to up-to-date ones ('-- task')."""
    return [ln.split()[1] for ln in output.splitlines() if ln.startswith(".  ")]


def test_doit_run_converges_and_reruns_nothing(project: Project) -> None:
    port = free_port()
    project.recipe("conv", simple("conv", port))
    first = project.doit("run", "recipe=conv")
    assert first.returncode == 0, first.stderr + first.stdout
    assert executed(first.stdout) == ["build:rr-e2e-conv", "check:conv", "launch:conv"]
    models = get_json(f"http://127.0.0.1:{port}/v1/models")
    assert [m["id"] for m in models["data"]] == ["org/model"]
    (c1,) = project.containers("conv")

    again = project.doit("run", "recipe=conv")
    assert again.returncode == 0, again.stderr
    assert executed(again.stdout) == []
    assert "-- launch:conv" in again.stdout and "-- build:rr-e2e-conv" in again.stdout
    (same,) = project.containers("conv")
    assert same["Id"] == c1["Id"] and same["State"]["Running"]

    # The container sees the recipe env exactly, and the command solo mode asked for (tp forced to 1).
    env = dict(e.split("=", 1) for e in project.docker("exec", c1["Id"], "sh", "-c", "cat /proc/1/environ")
               .stdout.split("\0") if "=" in e)
    assert "FROM_RECIPE" not in env  # recipe env lives in the script, exported by it
    argv = project.argv_in(c1["Id"])
    assert argv == ["serve", "org/model", "--port", str(port), "--host", "127.0.0.1", "-tp", "1"]

    # --dry-run sends no request, not even to this loopback server: frozen, it would make /health time out.
    signal_server = ("for d in /proc/[0-9]*; do tr '\\0' ' ' <$d/cmdline 2>/dev/null | grep -q 'nc -l[l]' "
                     "&& kill -$0 ${d#/proc/}; done; true")
    project.docker("exec", c1["Id"], "sh", "-c", signal_server, "STOP")
    try:
        dry = project.cli("conv", "--dry-run")
    finally:
        project.docker("exec", c1["Id"], "sh", "-c", signal_server, "CONT")
    assert dry.returncode == 0, dry.stderr
    (launch_row,) = [ln for ln in dry.stdout.splitlines() if ln.strip().startswith("launch:conv")]
    assert "up to date" in launch_row and "not asked whether it answers" in launch_row, launch_row

    # Changing one value (through doit's key=value) replaces the server; the image is not rebuilt.
    port2 = free_port()
    moved = project.doit("run", "recipe=conv", f"port={port2}")
    assert moved.returncode == 0, moved.stderr
    assert executed(moved.stdout) == ["check:conv", "launch:conv"]  # a new argv is checked again
    (c2,) = project.containers("conv")
    assert c2["Id"] != c1["Id"]
    assert get_json(f"http://127.0.0.1:{port2}/v1/models")["data"][0]["id"] == "org/model"


def test_cli_port_change_replaces_and_lifecycle_commands(project: Project) -> None:
    port = free_port()
    project.recipe("life", simple("life", port))
    assert project.cli("life", "--setup", "-d").returncode == 0
    (c1,) = project.containers("life")
    again = project.cli("life", "-d")
    assert again.returncode == 0 and "-- launch:life" in again.stdout
    assert project.containers("life")[0]["Id"] == c1["Id"]

    port2 = free_port()
    moved = project.cli("life", "-d", "--port", str(port2))
    assert moved.returncode == 0, moved.stderr
    assert "replacing runrecipe-life" in moved.stderr
    (c2,) = project.containers("life")
    assert c2["Id"] != c1["Id"] and c2["Config"]["Labels"]["runrecipe.endpoint"] == f"http://127.0.0.1:{port2}/v1"

    status = project.cli("status", "life", "--json")
    assert status.returncode == 0
    import json
    rows = json.loads(status.stdout)
    assert [(r["recipe"], r["state"]) for r in rows] == [("life", "running")]
    logs = project.cli("logs", "life")
    assert "standin-vllm: serving org/model" in logs.stdout + logs.stderr
    stop = project.cli("stop", "life")
    assert stop.returncode == 0 and "runrecipe-life" in stop.stdout
    assert project.containers("life") == []
    assert "nothing running" in project.cli("status", "life").stdout


def test_events_as_json_lines_keep_stdout_for_results(project: Project) -> None:
    """RUNRECIPE_EVENTS=json: the run's progress arrives as one JSON object per line on stderr (started,
    ready, with their endpoint), and `status --json` still prints its JSON alone on stdout."""
    import json

    port = free_port()
    project.recipe("ev", simple("ev", port))
    project.env["RUNRECIPE_EVENTS"] = "json"
    run = project.cli("ev", "--setup", "-d")
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith('{"event"')]
    kinds = [e["event"] for e in events]
    assert "started" in kinds and kinds[-1] == "ready", run.stderr
    assert events[-1]["endpoint"] == f"http://127.0.0.1:{port}/v1" and events[-1]["model"] == "org/model"
    assert '{"event"' not in run.stdout
    status = project.cli("status", "ev", "--json")
    assert status.returncode == 0 and [r["recipe"] for r in json.loads(status.stdout)] == ["ev"]
    assert project.cli("stop", "ev").returncode == 0


def test_injected_values_arrive_literally_in_the_container(project: Project) -> None:
    port = free_port()
    project.recipe("inj", simple("inj", port, extra_env="EVIL: '$(touch /tmp/pwned-env)'",
                                 command_tail="--served-model-name {served}").replace(
        "tensor_parallel: 2", "tensor_parallel: 2\n          served: plain"))
    evil = "$(touch /tmp/pwned-o) a;b `touch /tmp/pwned-b`"
    res = project.cli("inj", "--setup", "-d", "-o", f"served={evil}",
                      "--", "--x", "a b", "$(touch /tmp/pwned-x)", "x'y")
    assert res.returncode == 0, res.stderr
    (c,) = project.containers("inj")
    assert project.argv_in(c["Id"]) == ["serve", "org/model", "--port", str(port), "--host", "127.0.0.1",
                                        "-tp", "1", "--served-model-name", evil,
                                        "--x", "a b", "$(touch /tmp/pwned-x)", "x'y"]
    found = project.docker("exec", c["Id"], "sh", "-c", "ls /tmp/pwned* 2>/dev/null; true").stdout
    assert found.strip() == ""
    assert get_json(f"http://127.0.0.1:{port}/v1/models")["data"][0]["id"] == evil


def test_missing_image_without_setup_says_add_setup(project: Project) -> None:
    project.recipe("noimg", simple("noimg-never-built", free_port()))
    res = project.cli("noimg", "-d")
    assert res.returncode != 0
    assert "--setup" in res.stdout + res.stderr and "Traceback" not in res.stdout + res.stderr
    assert project.containers("noimg") == []


def test_server_exiting_before_ready_fails_with_its_logs_and_leaves_nothing(project: Project) -> None:
    project.recipe("dies", simple("dies", free_port(), extra_env="STANDIN_EXIT: '3'"))
    res = project.cli("dies", "--setup", "-d", "--ready-timeout", "300")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "exited (code 3) before it was ready" in out and "failing on purpose" in out
    assert "Traceback" not in out
    assert project.containers("dies") == []


def test_readiness_waits_for_a_slow_server(project: Project) -> None:
    port = free_port()
    project.recipe("slow", simple("slow", port, extra_env="STANDIN_DELAY: '3'"))
    start = time.monotonic()
    res = project.cli("slow", "--setup", "-d")
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - start >= 3
    assert get_json(f"http://127.0.0.1:{port}/v1/models")["data"][0]["id"] == "org/model"


def test_build_args_select_dockerfile_and_args_and_rebuild_on_change(project: Project) -> None:
    project.recipe("pretf", simple("pretf", free_port(), build_args="build_args: [--pre-tf]"))
    project.recipe("mx", simple("mx", free_port(), build_args="build_args: [--exp-mxfp4]"))
    assert project.cli("pretf", "--build-only").returncode == 0
    assert project.cli("mx", "--build-only").returncode == 0
    info = lambda tag: project.docker("run", "--rm", "--entrypoint", "cat", tag, "/build-info").stdout.strip()
    assert info("rr-e2e-pretf") == "dockerfile=Dockerfile pre_transformers=1"
    assert info("rr-e2e-mx") == "dockerfile=Dockerfile.mxfp4 pre_transformers=0"
    again = project.cli("pretf", "--build-only")
    assert executed(again.stdout) == []
    # A tag pointing at some other image is not "built": it is rebuilt.
    project.docker("tag", "rr-e2e-mx", "rr-e2e-pretf")
    rebuilt = project.cli("pretf", "--build-only")
    assert executed(rebuilt.stdout) == ["build:rr-e2e-pretf"]
    assert info("rr-e2e-pretf") == "dockerfile=Dockerfile pre_transformers=1"
    forced = project.cli("pretf", "--force-build", "--build-only")
    assert "build:rr-e2e-pretf" in executed(forced.stdout)


def test_mods_are_baked_once_and_reapplied_when_they_change(project: Project) -> None:
    mod = project.root / "mods" / "stamp"
    mod.mkdir(parents=True)
    (mod / "run.sh").write_text('#!/bin/sh\nset -eu\necho "stamp v1" > "$WORKSPACE_DIR/stamp.txt"\n')
    port = free_port()
    project.recipe("modded", simple("modded", port, mods="mods: [mods/stamp]"))
    first = project.cli("modded", "--setup", "-d")
    assert first.returncode == 0, first.stderr
    assert executed(first.stdout) == ["build:rr-e2e-modded", "mods:modded", "check:modded", "launch:modded"]
    (c1,) = project.containers("modded")
    assert project.docker("exec", c1["Id"], "cat", "/workspace/vllm/stamp.txt").stdout == "stamp v1\n"
    assert executed(project.cli("modded", "--setup", "-d").stdout) == []
    (mod / "run.sh").write_text('#!/bin/sh\nset -eu\necho "stamp v2" > "$WORKSPACE_DIR/stamp.txt"\n')
    third = project.cli("modded", "--setup", "-d")
    assert executed(third.stdout) == ["mods:modded", "check:modded", "launch:modded"]
    (c2,) = project.containers("modded")
    assert project.docker("exec", c2["Id"], "cat", "/workspace/vllm/stamp.txt").stdout == "stamp v2\n"
    (mod / "run.sh").write_text('#!/bin/sh\necho "patch target missing" >&2\nexit 4\n')
    failed = project.cli("modded", "--setup", "-d")
    assert failed.returncode != 0 and "mod 'stamp' failed" in failed.stdout + failed.stderr
    assert "patch target missing" in failed.stdout + failed.stderr


def test_two_concurrent_runs_wait_for_each_other(project: Project) -> None:
    port = free_port()
    project.recipe("twice", simple("twice", port, extra_env="STANDIN_DELAY: '2'"))
    assert project.cli("twice", "--build-only").returncode == 0
    cmd = [sys.executable, "-m", "tasks", "twice", "-d"]
    procs = [subprocess.Popen(cmd, cwd=project.root, env=project.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert any("waiting for another run" in err for _, err in outs)
    assert len(project.containers("twice")) == 1
    assert sum(".  launch:twice" in out for out, _ in outs) == 1
    # The state survived both: a third run finds everything done.
    third = project.cli("twice", "-d")
    assert third.returncode == 0 and executed(third.stdout) == []
    busy = subprocess.Popen(cmd + ["--port", str(free_port())], cwd=project.root, env=project.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    refused = project.cli("twice", "-d", "--no-wait")
    busy.communicate(timeout=120)
    assert refused.returncode != 0 and "another run holds" in refused.stderr
    assert CODE_ROOT.is_dir()


def test_foreground_follows_logs_and_ctrl_c_stops_the_server(project: Project) -> None:
    import signal

    port = free_port()
    project.recipe("fg", simple("fg", port))
    assert project.cli("fg", "--build-only").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "tasks", "fg", "--nccl-debug", "INFO", "--restart"],
                            cwd=project.root, env=project.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240  # a ceiling: CI shares the machine
    while time.monotonic() < deadline:
        running = [c for c in project.containers("fg") if c["State"]["Running"]]
        try:
            if running and get_json(f"http://127.0.0.1:{port}/v1/models"):
                break
        except OSError:
            pass
        time.sleep(0.3)
    (c,) = project.containers("fg")
    assert "NCCL_DEBUG=INFO" in c["Config"]["Env"]
    assert c["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert "standin-vllm: serving org/model" in out  # the server's log was followed
    (stopped,) = project.containers("fg")
    assert not stopped["State"]["Running"]
