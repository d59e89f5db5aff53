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
   launch) against `--no-cache-dirs` (a cold cache in the container every time), alternately, same run.

    python3 bench/real_engine.py [--rounds 2]
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


def vllm_start(env: dict[str, str], rid: str) -> float:
    """Seconds from the server container's start to vLLM's "Application startup complete" line."""
    cid = subprocess.run(["docker", "ps", "-q", "--filter", f"label=runrecipe.recipe={rid}"], env=env,
                         capture_output=True, text=True).stdout.split()[0]
    started = json.loads(subprocess.run(["docker", "inspect", cid], env=env, capture_output=True,
                                        text=True).stdout)[0]["State"]["StartedAt"]
    logs = subprocess.run(["docker", "logs", "--timestamps", cid], env=env, capture_output=True, text=True)
    line = next(ln for ln in (logs.stdout + logs.stderr).splitlines() if "Application startup complete" in ln)
    return stamp(line.split()[0]) - stamp(started)


def launch(env: dict[str, str], root: Path, rid: str, *extra: str) -> float:
    """Wall seconds of `run-recipe RID --solo -d` (returns at the first streamed token), after a stop."""
    subprocess.run([sys.executable, "-m", "tasks", "stop", rid], cwd=root, env=env, capture_output=True, timeout=300)
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "tasks", rid, "--solo", "-d", "--ready-timeout", "900", *extra],
                         cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    took = time.monotonic() - t0
    if res.returncode:
        sys.exit(f"launch of {rid} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    host = os.environ.get("DOCKER_HOST") or engine.docker_host()
    cpuengine.ensure_base(Daemon(host))
    folder = cpuengine.docker_dir()
    cpuengine.ensure_built(host, folder)
    with tempfile.TemporaryDirectory(prefix="rr-bench-real-") as tmp, LocalHub() as hub:
        hub.create_repo(cpuengine.MODEL, cpuengine.model_files(64))
        root = Path(tmp)
        (root / "recipes").mkdir()
        (root / ".env").write_text("NON_PRIVILEGED=1\n")
        (root / "recipes" / "eager.yaml").write_text(cpuengine.recipe("eager", PORT))
        compiled = cpuengine.recipe("compiled", PORT).replace(" --enforce-eager", "")
        (root / "recipes" / "compiled.yaml").write_text(compiled)
        env = {**os.environ, "DOCKER_HOST": host, "RUNRECIPE_HOME": str(root), "RUNRECIPE_DOCKER_DIR": str(folder),
               "HF_HOME": str(root / "hf"), "HF_ENDPOINT": hub.endpoint, "HOME": str(root / "home"),
               "PYTHONPATH": str(ROOT), "DOCKER_BUILDKIT": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
        subprocess.run([sys.executable, "-m", "tasks", "eager", "--solo", "--setup", "-d", "--ready-timeout", "900"],
                       cwd=root, env=env, capture_output=True, timeout=1800, check=True)  # weights in, checks kept

        total, own = [], []
        for _ in range(args.rounds):
            total.append(launch(env, root, "eager"))
            own.append(vllm_start(env, "eager"))
        t, v = statistics.median(total), statistics.median(own)
        print(f"eager launch to first token: {t:.1f} s = vLLM's own start {v:.1f} s + runrecipe {t - v:.1f} s "
              f"({(t - v) / t:.0%}); median of {args.rounds}")

        cold_first = launch(env, root, "compiled")  # fills the mounted caches
        warm, cold = [], []
        for _ in range(args.rounds):
            warm.append(launch(env, root, "compiled"))
            cold.append(launch(env, root, "compiled", "--no-cache-dirs"))
        w, c = statistics.median(warm), statistics.median(cold)
        print(f"compiled launch: caches mounted and warm {w:.1f} s vs --no-cache-dirs {c:.1f} s: "
              f"{c / w:.2f}x (first launch, empty cache: {cold_first:.1f} s); median of {args.rounds}")
        subprocess.run([sys.executable, "-m", "tasks", "stop", "--all"], cwd=root, env=env, capture_output=True)


if __name__ == "__main__":
    main()
