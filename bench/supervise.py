"""How fast readiness and the watcher notice things, on the real test dockerd with the stand-in vLLM.

1. Readiness: `run-recipe X -d` starts a stand-in that begins serving after STANDIN_DELAY s. A probe
   asks for a streamed token every 20 ms meanwhile; the first token it gets is the moment the server
   can generate. The run notices readiness when it prints "serving ...". Goal: <= 0.5 s after.
2. Watcher: `run-recipe watch X` runs (default interval 3 s); the server's container is killed; the
   watcher logs "tearing down ..." when it starts re-forming. Goal: <= 5 s after the kill.

    python3 bench/supervise.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from harness import engine, project  # noqa: E402
from tasks.ops import readiness

RECIPE = """\
recipe_version: "1"
name: bench supervise
container: rr-bench-standin
defaults: {{port: {port}, host: 127.0.0.1}}
env: {{STANDIN_DELAY: "{delay}"}}
command: |
  vllm serve org/model --port {{port}} --host {{host}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lines_with_times(proc: subprocess.Popen) -> "queue.Queue[tuple[float, str]]":
    """Each stderr line of `proc` with the moment it arrived."""
    out: queue.Queue[tuple[float, str]] = queue.Queue()

    def pump() -> None:
        for line in proc.stderr:
            out.put((time.monotonic(), line))
    threading.Thread(target=pump, daemon=True).start()
    return out


def wait_line(lines: "queue.Queue[tuple[float, str]]", wanted: Callable[[str], bool], timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        when, line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if wanted(line):
            return when


def readiness_lag(env: dict[str, str], port: int) -> float:
    """Seconds between the first token a 20 ms probe gets and the run printing that it serves."""
    subprocess.run([sys.executable, "-m", "tasks", "stop", "bench-supervise"], env=env, capture_output=True)
    first: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        base = f"http://127.0.0.1:{port}"
        while not stop.is_set():
            if readiness.port_open("127.0.0.1", port, 0.05) and readiness.first_token(base, "org/model", 1) is not None:
                first.append(time.monotonic())
                return
            time.sleep(0.02)
    prober = threading.Thread(target=probe)
    proc = subprocess.Popen([sys.executable, "-m", "tasks", "bench-supervise", "-d"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    prober.start()
    noticed = wait_line(lines_with_times(proc), lambda ln: ln.startswith("serving "), 120)
    proc.wait(timeout=60)
    prober.join(timeout=10)
    stop.set()
    return noticed - first[0]


def reform_lag(env: dict[str, str], docker_host: str) -> float:
    """Seconds between killing the server's container and the watcher starting to re-form."""
    watcher = subprocess.Popen([sys.executable, "-m", "tasks", "watch", "bench-supervise"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines = lines_with_times(watcher)
        wait_line(lines, lambda ln: "watching bench-supervise" in ln, 60)
        time.sleep(1.3)  # somewhere inside an interval
        cid = engine.run_docker(docker_host, "ps", "-q", "--filter", "label=runrecipe.recipe=bench-supervise").stdout.split()[0]
        killed = time.monotonic()
        engine.run_docker(docker_host, "kill", cid)
        started = wait_line(lines, lambda ln: "tearing down the group" in ln, 60)
        wait_line(lines, lambda ln: "serving again" in ln, 120)
        return started - killed
    finally:
        watcher.terminate()
        watcher.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--delay", type=float, default=2.0, help="seconds the stand-in loads before it serves")
    ns = ap.parse_args()
    host = engine.docker_host()
    with tempfile.TemporaryDirectory(prefix="rr-bench-") as tmp:
        base = Path(tmp)
        dockdir = project.standin_project(base)
        port = free_port()
        (base / "recipes" / "bench-supervise.yaml").write_text(RECIPE.format(port=port, delay=ns.delay))
        env = {**os.environ, "DOCKER_HOST": host, "RUNRECIPE_HOME": str(base), "RUNRECIPE_DOCKER_DIR": str(dockdir),
               "DOCKER_BUILDKIT": "0", "HF_HOME": str(base / "hf"), "PYTHONPATH": str(ROOT),
               "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # never the internet
        first = subprocess.run([sys.executable, "-m", "tasks", "bench-supervise", "--setup", "-d"], env=env,
                               capture_output=True, text=True)
        if first.returncode:
            print(first.stdout, first.stderr, file=sys.stderr)
            return 1
        ready = [readiness_lag(env, port) for _ in range(ns.rounds)]
        reform = [reform_lag(env, host) for _ in range(ns.rounds)]
        subprocess.run([sys.executable, "-m", "tasks", "stop", "bench-supervise"], env=env, capture_output=True)
    r, w = statistics.median(ready), statistics.median(reform)
    print(f"readiness noticed after the first token a 20 ms probe got: median {r:.3f} s, max {max(ready):.3f} s "
          f"over {ns.rounds} starts (goal <= 0.5 s: {'ok' if max(ready) <= 0.5 else 'MISSED'})")
    print(f"watcher started re-forming after the kill (interval 3 s): median {w:.2f} s, max {max(reform):.2f} s "
          f"over {ns.rounds} kills (goal <= 5 s: {'ok' if max(reform) <= 5 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
