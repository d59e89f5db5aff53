"""The vLLM check's cost: a re-run with the image and argvs unchanged vs a changed argv, and lint --vllm.

On the test dockerd (RR_TEST_DOCKERD / DOCKER_HOST) with the real vLLM 0.33.0 image of
tests/harness/vllmsite.py: the CLI's graph runs only `check:<recipe>` once to warm, then alternately the same argv
(up to date: no container, should cost doit's start only) and a changed `--max-model-len` (a new
container: vLLM's import dominates). Then the whole `run-recipe lint --vllm IMAGE` over the catalogue
prints its own time. Goal: up-to-date re-run under 1 s.

    python3 bench/vllm_check.py [--rounds 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import rayimage, vllmsite  # noqa: E402

RECIPE = """\
recipe_version: "1"
name: bench check
container: {image}
command: |
  vllm serve org/model --port 18555 --max-model-len {{max_model_len}}
defaults:
  max_model_len: 4096
"""


CHECK_ONLY = """
import sys
from tasks import settings
from tasks.graph import doit_run
from tasks.graph.doit_tasks import namespace
from tasks.plan import Options, make_plan
from tasks.recipe import load_named
plan = make_plan(load_named("bc", settings.recipes_dir()), Options(solo=True, overrides={"max_model_len": sys.argv[1]}))
ns = namespace([plan], setup=False, default=["launch:bc"])
sys.exit(doit_run.run(ns, ["list"] if sys.argv[2:] == ["list"] else ["run", "check:bc"]))
"""


class Local:
    """The test dockerd as rayimage's DockerNode."""

    name = "local"

    def run(self, cmd, **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.get("timeout"))

    def docker(self, *args: str, **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
        return self.run(["docker", *args], **kw)


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)
    took = time.monotonic() - start
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    ns = p.parse_args()
    if "DOCKER_HOST" not in os.environ:
        sys.exit("set DOCKER_HOST (eval \"$(bash tests/harness/dockerd.sh env)\")")
    image = vllmsite.ensure_image(vllmsite.local_docker(os.environ["DOCKER_HOST"]),
                                  rayimage.ensure_base_image(Local()))
    with tempfile.TemporaryDirectory(prefix="rr-bench-check-") as tmp:
        root = Path(tmp)
        (root / "recipes").mkdir()
        (root / "recipes" / "bc.yaml").write_text(RECIPE.format(image=image))
        env = {**os.environ, "RUNRECIPE_HOME": str(root), "PYTHONPATH": str(ROOT)}
        def check(length: int, *rest: str) -> list[str]:  # the CLI's graph, only its check task (no build, launch)
            return [sys.executable, "-c", CHECK_ONLY, str(length), *rest]

        timed(check(4096), env, root)  # warm: the verdict for 4096 is recorded
        same, changed, listed = [], [], []
        for i in range(ns.rounds):
            listed.append(timed(check(4096, "list"), env, root))  # the same process and graph, nothing run
            same.append(timed(check(4096), env, root))
            changed.append(timed(check(8192 + i), env, root))
            timed(check(4096), env, root)  # back to 4096: recorded again (one more container)
        b, s, c = statistics.median(listed), statistics.median(same), statistics.median(changed)
        print(f"same process, graph listed, nothing run:           {b:6.2f} s")
        print(f"check:<recipe> up to date (same image, same argv): {s:6.2f} s  (no container; +{s - b:.2f} s)")
        print(f"check:<recipe> changed argv (new container):       {c:6.2f} s  (vLLM's import dominates)")
        print(f"up-to-date/listed: {s / b:.2f}; changed/up-to-date: {c / s:.0f}x")
        lint = [sys.executable, "-m", "tasks", "lint", "--vllm", image, str(ROOT / "recipes")]
        start = time.monotonic()
        out = subprocess.run(lint, env=env, cwd=root, capture_output=True, text=True, timeout=1800)
        print(f"lint --vllm over the catalogue: {time.monotonic() - start:.1f} s wall; it says: "
              f"{out.stdout.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
