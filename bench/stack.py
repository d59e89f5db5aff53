"""The tool's overhead on a three-node stack: `stack -d` until every entry is ready, minus the entries' own
start times.

Needs root: brings up its own 3-node TestCluster (n1 = head) and a stack of two entries, one native on
n1+n2 (`big`) and one alone on n3 (`side`), served by the stand-in vLLM in the Ray test image. The images
are built and copied once (a warm-up run), then each round starts the stack from stopped with
`run-recipe stack trio -d` on the head, as a user there would, and stops it again.

An entry's own start time is its server's: from the start of its first container (docker's StartedAt;
workers start first) until its `/v1/models` first answers, polled from this host every 50 ms. The rest of
the `stack -d` wall time is the tool's: Python start, the stack plan, memory checks and preflight over SSH,
doit's up-to-date checks, creating and starting each container, waiting each entry out before the next.

    python3 bench/stack.py [--rounds 3] [--wait 900]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import cluster as rc  # noqa: E402
from harness import images, rayimage  # noqa: E402

PORTS = {"big": 18401, "side": 18402}
WHERE = {"big": "198.18.0.11", "side": "198.18.0.13"}
STACK = f"""\
name: trio
models:
  - {{recipe: big, on: [198.18.0.11, 198.18.0.12], gpu_mem: 0.5, port: {PORTS['big']}}}
  - {{recipe: side, on: [198.18.0.13], gpu_mem: 0.3, port: {PORTS['side']}}}
"""
RECIPES = {
    "big": "recipe_version: '1'\nname: Big\ncontainer: rr-bench-stack\ncluster_only: true\ndefaults: {port: 8000, tensor_parallel: 2}\n"
           "command: vllm serve org/big --port {port} --host 0.0.0.0 -tp {tensor_parallel}\n",
    "side": "recipe_version: '1'\nname: Side\ncontainer: rr-bench-stack\ncommand: vllm serve org/side --host 0.0.0.0\n",
}


def project(ray_tag: str) -> Path:
    root = Path(f"/tmp/rr-bench-stack-{os.getpid()}")
    shutil.rmtree(root, ignore_errors=True)
    images.cluster_standin_dir(root / "docker", ray_tag)
    for folder in ("recipes", "stacks"):
        (root / folder).mkdir()
    for name, body in RECIPES.items():
        (root / "recipes" / f"{name}.yaml").write_text(body)
    (root / "stacks" / "trio.yaml").write_text(STACK)
    (root / ".env").write_text("CLUSTER_NODES=198.18.0.11,198.18.0.12,198.18.0.13\nNON_PRIVILEGED=1\nETH_IF=eth0\n")
    return root


def tool(c: rc.TestCluster, root: Path, *args: str) -> float:
    env = {"PYTHONPATH": str(ROOT), "RUNRECIPE_HOME": str(root), "RUNRECIPE_DOCKER_DIR": str(root / "docker"),
           "DOCKER_BUILDKIT": "0", "HF_HUB_OFFLINE": "1"}
    t0 = time.time()
    res = c.head.run([sys.executable, "-m", "tasks", *args], env=env, cwd=str(root), timeout=900)
    if res.returncode:
        sys.exit(f"run-recipe {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return time.time() - t0


def first_answer(entry: str, found: dict[str, float], stop: threading.Event) -> None:
    url = f"http://{WHERE[entry]}:{PORTS[entry]}/v1/models"
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if json.loads(resp.read()).get("data"):
                    found[entry] = time.time()
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)


def started(c: rc.TestCluster, entry: str) -> float:
    """The earliest StartedAt of the entry's containers on any node."""
    times = []
    for node in c.nodes:
        ids = node.docker("ps", "-q", "--filter", f"label=runrecipe.recipe=trio//trio-{entry}").stdout.split()
        for cid in ids:
            text = node.docker("inspect", "-f", "{{.State.StartedAt}}", cid).stdout.strip()
            head, _, frac = text.rstrip("Z").partition(".")
            times.append(datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0")))
    return min(times)


def one_round(c: rc.TestCluster, root: Path) -> dict[str, float]:
    found: dict[str, float] = {}
    stop = threading.Event()
    pollers = [threading.Thread(target=first_answer, args=(e, found, stop)) for e in PORTS]
    for t in pollers:
        t.start()
    total = tool(c, root, "stack", "trio", "-d")
    stop.set()
    for t in pollers:
        t.join()
    own = {e: found[e] - started(c, e) for e in PORTS}
    tool(c, root, "stack", "trio", "stop")
    return {"total": total, **own, "overhead": total - sum(own.values())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--wait", type=float, default=900, help="seconds to wait for a busy test cluster")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/stack.py needs root (it builds a netns test cluster)")
    try:
        c = rc.up_when_free(3, "bench/stack.py", a.wait)
    except rc.ClusterBusy as e:
        sys.exit(str(e))
    root = None
    try:
        root = project(rayimage.ensure_ray_image(c.nodes, log=lambda m: print(f"[ray] {m}")))
        warm = tool(c, root, "stack", "trio", "-d", "--setup")
        tool(c, root, "stack", "trio", "stop")
        print(f"warm-up (build, copy the image to n2 and n3, start, stop): {warm:.1f} s")
        rows = [one_round(c, root) for _ in range(max(1, a.rounds))]
        print(f"{'round':<6} {'stack -d':>9} {'big own':>8} {'side own':>9} {'overhead':>9} {'overhead/entry':>15}")
        for i, r in enumerate(rows, 1):
            print(f"{i:<6} {r['total']:>8.2f}s {r['big']:>7.2f}s {r['side']:>8.2f}s {r['overhead']:>8.2f}s "
                  f"{r['overhead'] / len(PORTS):>14.2f}s")
        med = {k: statistics.median(r[k] for r in rows) for k in ("total", "big", "side", "overhead")}
        print(f"median: stack -d {med['total']:.2f} s = entries' own start {med['big'] + med['side']:.2f} s "
              f"+ the tool's overhead {med['overhead']:.2f} s (overhead / total = {med['overhead'] / med['total']:.2f})")
        return 0
    finally:
        if root:
            shutil.rmtree(root, ignore_errors=True)
        c.teardown()


if __name__ == "__main__":
    sys.exit(main())
