"""A server you can leave running, solo on the real test dockerd with the stand-in vLLM: readiness
that proves generation, causes read from the log, the memory guard, the watcher's re-form and cap."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import Project, free_port, get_json
from .test_solo import simple


def record(project: Project, rid: str) -> dict:
    return json.loads((project.root / ".runrecipe" / "runs" / f"{rid}.json").read_text())


def test_ready_means_a_streamed_token_and_its_times_are_kept(project: Project) -> None:
    port = free_port()
    project.recipe("gen", simple("gen", port))
    res = project.cli("gen", "--setup", "-d")
    assert res.returncode == 0, res.stderr
    assert "ready in " in res.stderr and "first token in " in res.stderr
    rows = json.loads(project.cli("status", "gen", "--json").stdout)
    times = rows[0]["record"]["readiness"]
    assert 0 <= times["port_seconds"] <= times["health_seconds"] <= times["ready_seconds"]
    assert 0 < times["first_token_seconds"] < times["ready_seconds"] + 1
    assert "ready in " in project.cli("status").stdout

    # the same image, a server that answers /health but never streams a token: not ready
    project.recipe("mute", simple("gen", free_port(), extra_env="STANDIN_NO_TOKENS: '1'"))
    res = project.cli("mute", "-d", "--ready-timeout", "4")
    assert res.returncode == 1
    assert "health answers but a streamed completion returned no token" in res.stderr
    assert "cause:" not in res.stderr, "a server that is slow, not dead, gets no cause"
    kept = Path(res.stderr.split("every node's full log is kept in ", 1)[1].split()[0])
    assert (kept / "local-runrecipe-mute.log").read_text().startswith("standin-vllm: serving org/model\n")
    assert project.containers("mute") == []


@pytest.mark.parametrize("env,cause", [
    ("STANDIN_CRASH: oom", "cause: out of memory (torch.OutOfMemoryError: CUDA out of memory."),
    ("STANDIN_HEALTH_503: '0'", "answered 503 (vLLM's engine is dead)"),
])
def test_a_failing_start_fails_fast_with_its_cause(project: Project, env: str, cause: str) -> None:
    project.recipe("bad", simple("bad", free_port(), extra_env=env))
    start = time.monotonic()
    res = project.cli("bad", "--setup", "-d", "--ready-timeout", "120")
    assert res.returncode == 1 and cause in res.stderr, res.stderr
    assert time.monotonic() - start < 60 and "Traceback" not in res.stderr
    assert project.containers("bad") == []


@pytest.mark.parametrize("error,cause", [
    ("Unsupported CPU attention configuration: head_dim=16",
     "cause: vLLM's CPU attention refuses the model's head size (Unsupported CPU attention configuration: "
     "head_dim=16); fix: the CPU build's attention kernels do not support this model's head_dim"),
    ("KeyError: 'rope_theta'", "cause: the first error the server logged (KeyError: 'rope_theta'); fix: "),
])
def test_a_dead_engine_is_reported_by_its_root_cause_and_its_whole_log_is_kept(project: Project, error: str,
                                                                                cause: str) -> None:
    """The engine dies at the first request, as the real CPU build's did on a head size it refuses: the
    log ends with vLLM's generic EngineDeadError, but the error names the first one; the container's whole
    log (stdout and stderr in order, the --api-key vLLM prints masked) is kept before it is removed."""
    key = "sk-e2e-crash-5"
    project.recipe("head16", simple("head16", free_port(), extra_env=f'STANDIN_ENGINE_ERROR: "{error}"'))
    res = project.cli("head16", "--setup", "-d", "--ready-timeout", "60", "--", "--api-key", key)
    assert res.returncode == 1 and "answered 503 (vLLM's engine is dead)" in res.stderr, res.stderr
    assert cause in res.stderr and "vLLM's engine died" not in res.stderr
    assert "Traceback" not in res.stderr.split("last output:")[0] and key not in res.stdout + res.stderr
    assert project.containers("head16") == []
    kept = Path(res.stderr.split("every node's full log is kept in ", 1)[1].split()[0])
    assert kept.parent == project.root / ".runrecipe" / "logs" / "head16"
    assert [p.name for p in kept.iterdir()] == ["local-runrecipe-head16.log"]
    lines = (kept / "local-runrecipe-head16.log").read_text().splitlines()
    assert lines[0] == "standin-vllm: serving org/model"
    assert "'api_key': ['****']" in lines[1] and key not in "\n".join(lines)
    first = next(i for i, line in enumerate(lines) if line.endswith(f"] {error}"))
    assert first < lines.index("(APIServer pid=1) Traceback (most recent call last):") < len(lines) - 1
    assert lines[-1].startswith("(APIServer pid=1) vllm.v1.engine.exceptions.EngineDeadError: ")


STANDIN_NVIDIA_SMI = """#!/bin/sh
# stand-in nvidia-smi of a DGX Spark (GB10: memory unified with the CPU, reported as [N/A])
case "$*" in
  *query-gpu=name,memory.total*) echo "NVIDIA GB10, [N/A]" ;;
  *query-gpu=index,memory.total,memory.free*) echo "0, [N/A], [N/A]" ;;
  *query-compute-apps*) ;;
  *) exit 9 ;;
esac
"""
MEMORY_CGROUP = Path("/sys/fs/cgroup/memory")


@pytest.mark.skipif(os.geteuid() != 0 or not (MEMORY_CGROUP / "cgroup.procs").exists(),
                    reason="needs root and the cgroup v1 memory controller")
def test_memory_guard_refuses_on_a_capped_unified_node_and_force_overrides(project: Project, tmp_path: Path) -> None:
    """The CLI runs in a memory cgroup capped at 1 GiB on a (stand-in) unified-memory GPU: 0.9 of
    MemTotal does not fit, the refusal gives the numbers, nothing starts; --force starts it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(STANDIN_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    group = MEMORY_CGROUP / f"runrecipe-test-guard-{os.getpid()}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(1 << 30))
        project.env["PATH"] = f"{bin_dir}:{project.env['PATH']}"
        port = free_port()
        project.recipe("big", simple("big", port))

        def capped(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group),
                                   sys.executable, "-m", "tasks", *args], cwd=project.root, env=project.env,
                                  capture_output=True, text=True, timeout=300)

        res = capped("big", "--setup", "-d")
        assert res.returncode == 1, res.stderr
        assert "the server does not fit in memory now; nothing was started" in res.stderr
        assert "available (0.9 x " in res.stderr and "unified memory; available = the cgroup's limit minus its usage" in res.stderr
        assert "--force" in res.stderr and project.containers("big") == []
        res = capped("big", "-d", "--force")
        assert res.returncode == 0, res.stderr
        assert get_json(f"http://127.0.0.1:{port}/v1/models")["data"][0]["id"] == "org/model"
    finally:
        subprocess.run(["sh", "-c", 'sleep 0.3; rmdir "$0"', str(group)], check=False)


def wait_watch(project: Project, rid: str, restarts: int, ceiling: float = 180) -> dict:
    """The run record's watch once it is watching again after `restarts` re-forms (a ceiling, not a bound)."""
    deadline = time.monotonic() + ceiling
    while time.monotonic() < deadline:
        watch = record(project, rid).get("watch", {})
        if watch.get("state") == "watching" and watch.get("restarts") == restarts:
            return watch
        time.sleep(0.5)
    return record(project, rid).get("watch", {})


def test_watch_re_forms_a_killed_or_wedged_server_then_a_crash_loop_hits_the_cap(project: Project) -> None:
    port = free_port()
    project.recipe("kept", simple("kept", port))
    assert project.cli("kept", "--setup", "-d").returncode == 0
    first = project.containers("kept")[0]["Id"]
    watcher = project.watcher("kept", "--interval", "0.5", "--token-every", "1", "--token-wait", "5")
    try:
        time.sleep(1.5)
        project.docker("kill", first)
        watch = wait_watch(project, "kept", 1)
        assert watch["restarts"] == 1 and "rank 0 on " in watch["last_cause"] and "container exited" in watch["last_cause"]
        assert get_json(f"http://127.0.0.1:{port}/v1/models")["data"][0]["id"] == "org/model"
        running = project.containers("kept")
        assert len(running) == 1 and running[0]["Id"] != first and running[0]["State"]["Running"]
        assert "watch: watching, 1 restart(s), last cause: rank 0" in project.cli("status").stdout

        # the new server wedges: /health stays 200 but no token comes; two silent probes re-form it
        second = running[0]["Id"]
        project.docker("exec", second, "sh", "-c", "for d in /tmp/standin-run.*; do touch \"$d/mute\"; done")
        watch = wait_watch(project, "kept", 2)
        assert watch["restarts"] == 2 and "/health but streamed no token in 2 tries" in watch["last_cause"], watch
        assert [c["Id"] for c in project.containers("kept")] not in ([first], [second])
    finally:
        watcher.send_signal(signal.SIGINT)
        log = watcher.communicate(timeout=120)[1]
    assert "tearing down the group on every node and converging again (restart 1)" in log
    assert "serving again after restart 2" in log

    # a server that crashes at start every time: the watcher stops at the cap and says why
    project.recipe("loop", simple("kept", free_port(), extra_env="STANDIN_CRASH: cuda"))
    res = subprocess.run([sys.executable, "-m", "tasks", "watch", "loop", "--interval", "0.2", "--backoff", "0.2",
                          "--max-restarts", "2", "--within", "5"], cwd=project.root, env=project.env,
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 1, res.stderr
    assert ("stopped watching: crash loop: 2 failed restarts within 5 min; last cause: cause: CUDA error "
            "(RuntimeError: CUDA error: an illegal memory access was encountered)") in res.stderr
    assert "next try in 0.2 s" in res.stderr
    assert record(project, "loop")["watch"]["state"] == "stopped"


def test_stop_ends_the_watch_instead_of_being_re_formed(project: Project) -> None:
    """`run-recipe stop` while a watcher runs (a service, say): the server stays stopped, the watcher
    ends with 0 (systemd's Restart=on-failure leaves it be) and says why."""
    port = free_port()
    project.recipe("halt", simple("halt", port))
    assert project.cli("halt", "--setup", "-d").returncode == 0
    watcher = project.watcher("halt", "--interval", "0.2")
    try:
        time.sleep(1.0)
        stopped = project.cli("stop", "halt")
        assert stopped.returncode == 0 and "stopped runrecipe-halt" in stopped.stdout, stopped.stdout + stopped.stderr
        code = watcher.wait(timeout=180)  # ceilings, not bounds: CI shares the machine
    finally:
        watcher.kill()
        log = watcher.communicate()[1]
    assert code == 0, log
    assert "halt: stopped with `run-recipe stop` at " in log and "tearing down" not in log, log
    time.sleep(1.0)
    assert project.containers("halt") == []
    assert record(project, "halt")["watch"]["state"] == "ended"
    assert "watch: ended" in project.cli("status", "halt").stdout
    # a new launch is watched again: its record no longer says stopped
    assert project.cli("halt", "-d").returncode == 0 and "stopped" not in record(project, "halt")


def test_a_stop_while_the_watcher_re_forms_holds(project: Project) -> None:
    """The run's vLLM words after `--` reach vLLM as they are in a re-form (the watcher's -d goes before
    them). Then `run-recipe stop` lands while a re-form waits for the state lock (held here, as another
    run would hold it): the re-form refuses to start over the stop, and the watcher ends with 0 without
    counting a failed restart. Before, the re-form started the server again and wrote a record without
    the mark, and the watcher went on watching it."""
    port = free_port()
    project.recipe("race", simple("race", port))
    assert project.cli("race", "--setup", "-d", "--", "--seed", "7").returncode == 0
    watcher = project.watcher("race", "--interval", "0.2", "--backoff", "0.2", "--", "--seed", "7")
    try:
        time.sleep(1.0)
        project.docker("kill", project.containers("race")[0]["Id"])
        assert wait_watch(project, "race", 1)["restarts"] == 1
        again = project.containers("race")[0]["Id"]
        argv = project.docker("exec", again, "cat", "/tmp/vllm-argv").stdout.split("\0")
        assert argv[-3:-1] == ["--seed", "7"] and "-d" not in argv, argv

        with open(project.root / ".runrecipe" / "lock", "a+") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            project.docker("kill", again)
            deadline = time.monotonic() + 180
            while project.containers("race") and time.monotonic() < deadline:  # the teardown
                time.sleep(0.1)
            time.sleep(1.5)  # the re-form's process is up and waits for the lock
            stopped = project.cli("stop", "race")
            assert stopped.returncode == 0, stopped.stderr
        code = watcher.wait(timeout=240)
    finally:
        watcher.kill()
        log = watcher.communicate()[1]
    assert code == 0, log
    assert "the watcher does not start it again" in log and "race: stopped with `run-recipe stop` at " in log, log
    assert "next try" not in log and "serving again after restart 2" not in log, log
    time.sleep(1.0)
    assert project.containers("race") == []
    rec = record(project, "race")
    assert rec["stopped"] and rec["watch"]["state"] == "ended" and rec["watch"]["failed_restarts"] == 0


@pytest.mark.parametrize("how", ["argv", "env"])
def test_a_server_that_wants_an_api_key_is_asked_with_it(project: Project, how: str) -> None:
    """vLLM's --api-key (or VLLM_API_KEY via -e) makes /v1/ answer 401 without it: readiness, the no-op
    re-run's check and the watcher's token probe present the key; no output shows it."""
    port, key = free_port(), f"sk-e2e-{how}-7"
    words = ["--", "--api-key", key] if how == "argv" else ["-e", f"VLLM_API_KEY={key}"]
    project.recipe("keyed", simple("keyed", port))
    first = project.cli("keyed", "--setup", "-d", "--ready-timeout", "300", *words)
    assert first.returncode == 0 and "first token in" in first.stdout + first.stderr, first.stdout + first.stderr
    with pytest.raises(Exception, match="401"):
        get_json(f"http://127.0.0.1:{port}/v1/models")
    assert key not in (project.root / ".runrecipe" / "runs" / "keyed.json").read_text()  # the record's argv masks it
    again = project.cli("keyed", "-d", *words)
    assert again.returncode == 0 and "-- launch:keyed" in again.stdout, again.stdout + again.stderr
    watcher = project.watcher("keyed", "--interval", "0.2", "--token-every", "0.2", "--token-wait", "20", *words)
    try:
        time.sleep(3)  # ten rounds of probes; a 401 would count as no token and re-form after two
    finally:
        watcher.send_signal(signal.SIGINT)
        log = watcher.communicate(timeout=120)[1]
    assert "tearing down" not in log, log
    for output in (first.stdout, first.stderr, again.stdout, again.stderr, log):
        assert key not in output
