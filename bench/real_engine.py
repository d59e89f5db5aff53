"""The real vLLM (CPU build) through runrecipe: where the time to the first token goes, and what the
compile caches save.

On the test dockerd (DOCKER_HOST, or tests/harness/dockerd.sh's socket) with the image docker/Dockerfile.cpu
makes (built by runrecipe's build step from the offline inputs of tests/harness/cpuengine.py, ~4 min once)
and the harness's tiny Llama served from a loopback hub:

1. eager launches (`--solo -d`, image and weights present): the command's wall time to the first streamed
   token, vLLM's own start (container start -> its "Application startup complete" line, from
   `docker logs --timestamps`) and runrecipe's share (the rest: the CLI, docker create/start, the
   readiness probes, the first token);
2. compiled launches (no --enforce-eager): with the compile caches mounted (the default; warmed by a first
   launch) against `--no-cache-dirs` (a cold cache in the container every time), alternately, same run;
3. with --cluster (root: brings up its own two netns nodes): a native two-node group's formation (`-tp 2`
   and `-dp 2`, launch to first token with image and weights in place, and vLLM's own start on the head),
   and the watcher's re-form of the `-dp 2` group after the worker's container is killed.

    python3 bench/real_engine.py [--rounds 2] [--cluster]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import cpuengine, engine  # noqa: E402
from harness.gatewayimage import Daemon  # noqa: E402
from harness.hub import LocalHub  # noqa: E402

PORT = 18655


def stamp(text: str) -> float:
    """Docker's RFC 3339 nano timestamp as epoch seconds (microseconds kept)."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0")[:6])


Docker = Callable[..., "subprocess.CompletedProcess[str]"]


def vllm_start(docker: Docker, rid: str) -> float:
    """Seconds from the server container's start to vLLM's "Application startup complete" line."""
    cid = docker("ps", "-q", "--filter", f"label=runrecipe.recipe={rid}").stdout.split()[0]
    started = json.loads(docker("inspect", cid).stdout)[0]["State"]["StartedAt"]
    logs = docker("logs", "--timestamps", cid)
    line = next(ln for ln in (logs.stdout + logs.stderr).splitlines() if "Application startup complete" in ln)
    return stamp(line.split()[0]) - stamp(started)


Tool = Callable[..., "subprocess.CompletedProcess[str]"]


def local_tool(env: dict[str, str], root: Path) -> Tool:
    """run-recipe in project `root` on this machine."""
    return lambda *args: subprocess.run([sys.executable, "-m", "tasks", *args], cwd=root, env=env,
                                        capture_output=True, text=True, timeout=1800)


def launch(tool: Tool, rid: str, *extra: str) -> float:
    """Wall seconds of `run-recipe RID -d EXTRA` (it returns at the first streamed token), after a stop."""
    tool("stop", rid)
    t0 = time.monotonic()
    res = tool(rid, "-d", "--ready-timeout", "900", *extra)
    took = time.monotonic() - t0
    if res.returncode:
        sys.exit(f"launch of {rid} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return took


def local_docker(env: dict[str, str]) -> Docker:
    return lambda *args: subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=300)


def solo(rounds: int, host: str, folder: Path, hub: LocalHub) -> None:
    """Where the time of a solo launch goes; compiled launches with and without the caches mounted."""
    with tempfile.TemporaryDirectory(prefix="rr-bench-real-") as tmp:
        root = Path(tmp)
        (root / "recipes").mkdir()
        (root / ".env").write_text("NON_PRIVILEGED=1\n")
        (root / "recipes" / "eager.yaml").write_text(cpuengine.recipe("eager", PORT))
        compiled = cpuengine.recipe("compiled", PORT).replace(" --enforce-eager", "")
        (root / "recipes" / "compiled.yaml").write_text(compiled)
        env = {**os.environ, "DOCKER_HOST": host, "RUNRECIPE_HOME": str(root), "RUNRECIPE_DOCKER_DIR": str(folder),
               "HF_HOME": str(root / "hf"), "HF_ENDPOINT": hub.endpoint, "HOME": str(root / "home"),
               "PYTHONPATH": str(ROOT), "DOCKER_BUILDKIT": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
        tool, docker = local_tool(env, root), local_docker(env)
        if tool("eager", "--solo", "--setup", "-d", "--ready-timeout", "900").returncode:  # weights in, checks kept
            sys.exit("the first eager launch failed")
        total, own = [], []
        for _ in range(rounds):
            total.append(launch(tool, "eager", "--solo"))
            own.append(vllm_start(docker, "eager"))
        t, v = statistics.median(total), statistics.median(own)
        print(f"eager launch to first token: {t:.1f} s = vLLM's own start {v:.1f} s + runrecipe {t - v:.1f} s "
              f"({(t - v) / t:.0%}); median of {rounds}", flush=True)

        tool("stop", "eager")  # same port: a server left there would answer the next one's readiness
        cold_first = launch(tool, "compiled", "--solo")  # fills the mounted caches
        warm, cold = [], []
        for _ in range(rounds):
            warm.append(launch(tool, "compiled", "--solo"))
            cold.append(launch(tool, "compiled", "--solo", "--no-cache-dirs"))
        w, c = statistics.median(warm), statistics.median(cold)
        print(f"compiled launch: caches mounted and warm {w:.1f} s vs --no-cache-dirs {c:.1f} s: "
              f"{c / w:.2f}x (first launch, empty cache: {cold_first:.1f} s); median of {rounds}", flush=True)
        tool("stop", "--all")


def cluster(rounds: int, host: str, folder: Path) -> None:
    """Two netns nodes: a native group's formation (tp 2, dp 2) and the watcher's re-form of the dp group."""
    from huggingface_hub import snapshot_download

    from harness import cluster as rc
    from harness import rayimage

    c = rc.up_when_free(2, "bench/real_engine.py", 900)
    root = Path(f"/tmp/rr-bench-real-cluster-{os.getpid()}")
    try:
        with LocalHub() as hub:
            sha = hub.create_repo(cpuengine.MODEL, cpuengine.model_files(64))
            snapshot_download(cpuengine.MODEL, revision=sha, cache_dir=c.head.home / ".cache/huggingface/hub",
                              endpoint=hub.endpoint)
        rayimage.copy_image(Daemon(host), c.head, cpuengine.TAG, timeout=1800)
        (root / "recipes").mkdir(parents=True)
        (root / ".env").write_text(f"CLUSTER_NODES={c.head.ip},{c.nodes[1].ip}\nNON_PRIVILEGED=1\nETH_IF=eth0\n")
        pin = f"revision: '{sha}'"
        (root / "recipes" / "tp.yaml").write_text(cpuengine.recipe("tp", PORT, tp=2, extra=pin))
        (root / "recipes" / "dp.yaml").write_text(cpuengine.recipe("dp", PORT, args=" -dp 2", extra=pin))
        env = {"PYTHONPATH": str(ROOT), "RUNRECIPE_HOME": str(root), "RUNRECIPE_DOCKER_DIR": str(folder),
               "DOCKER_BUILDKIT": "0", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}

        def tool(*args: str) -> "subprocess.CompletedProcess[str]":
            return c.head.run([sys.executable, "-m", "tasks", *args], env=env, cwd=str(root), timeout=1800)

        def docker(*args: str) -> "subprocess.CompletedProcess[str]":
            return c.head.docker(*args, timeout=300)

        t0 = time.monotonic()
        if tool("tp", "--setup", "-d", "--ready-timeout", "900").returncode:  # the image and weights travel
            sys.exit("the first two-node launch failed")
        print(f"two nodes, first --setup (the image and weights copied to the worker, then the group): "
              f"{time.monotonic() - t0:.1f} s", flush=True)
        for rid in ("tp", "dp"):
            total, own = [], []
            for _ in range(rounds):
                total.append(launch(tool, rid))
                own.append(vllm_start(docker, rid))
            t, v = statistics.median(total), statistics.median(own)
            print(f"two-node -{rid} 2 group to first token: {t:.1f} s (vLLM's own start on the head {v:.1f} s); "
                  f"median of {rounds}", flush=True)
            if rid == "tp":
                tool("stop", "tp")

        watcher = c.head.popen([sys.executable, "-m", "tasks", "watch", "dp", "--interval", "1"], env=env,
                               cwd=str(root), stderr=subprocess.DEVNULL)
        try:
            time.sleep(3)
            worker = c.nodes[1].docker("ps", "-q", "--filter", "label=runrecipe.recipe=dp").stdout.split()[0]
            c.nodes[1].docker("kill", worker)
            killed = time.monotonic()
            runs = root / ".runrecipe" / "runs"
            while time.monotonic() - killed < 900:
                record = json.loads(next(runs.glob("dp*.json")).read_text())
                if record.get("watch", {}).get("restarts") == 1 and record["watch"].get("state") == "watching":
                    break
                time.sleep(0.5)
            print(f"-dp 2 group serving again {time.monotonic() - killed:.1f} s after its worker's container was "
                  f"killed (watch --interval 1; vLLM's own start on the head {vllm_start(docker, 'dp'):.1f} s)",
                  flush=True)
        finally:
            watcher.terminate()
            watcher.wait(timeout=120)
            tool("stop", "--all")
    finally:
        subprocess.run(["rm", "-rf", str(root)])
        c.teardown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cluster", action="store_true", help="also two netns nodes (root; brings them up and down)")
    ap.add_argument("--no-solo", dest="solo", action="store_false", help="skip the solo figures")
    args = ap.parse_args()
    host = os.environ.get("DOCKER_HOST") or engine.docker_host()
    cpuengine.ensure_base(Daemon(host))
    folder = cpuengine.docker_dir()
    cpuengine.ensure_built(host, folder)
    if args.solo:
        with LocalHub() as hub:
            hub.create_repo(cpuengine.MODEL, cpuengine.model_files(64))
            solo(args.rounds, host, folder, hub)
    if args.cluster:
        cluster(args.rounds, host, folder)


if __name__ == "__main__":
    main()
