"""Large recipes in linear time: `run-recipe lint` of N repeated flags, `--solo --dry-run` of N placeholders.

Each case is timed at N and at 2N in the same run, as a fresh `python3 -m tasks` each time (so no cache
of an earlier round helps; the time includes Python's start, about 0.3 s), best of a few rounds so load
from other work on the machine hits both alike; linear work doubles, quadratic work quadruples.
Goal: the full size under 2 s and a 2N/N ratio <= 2.5.

    python3 bench/large_recipes.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness.large_recipes import FLAGS, PLACEHOLDERS, placeholders, repeated_flags  # noqa: E402

def lint_case(folder: Path, flags: int) -> list[str]:
    path = folder / "recipes" / f"flags-{flags}.yaml"
    path.write_text(repeated_flags(flags))
    return ["lint", str(path)]


def dry_run_case(folder: Path, count: int) -> list[str]:
    path = folder / "recipes" / f"placeholders-{count}.yaml"
    path.write_text(placeholders(count))
    return [str(path), "--solo", "--dry-run"]


def best_time(args: list[str], home: Path, rounds: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest of `rounds` runs of `run-recipe ARGS` (a fresh process each).

    CPU time (user + system of the process and its `bash -n`) hardly moves when others load the machine."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RUNRECIPE_HOME": str(home),
           "DOCKER_HOST": "unix:///nonexistent.sock"}  # a dry run asks no engine
    best = (float("inf"), float("inf"))
    for _ in range(rounds):
        before, start = _children_cpu(), time.perf_counter()
        subprocess.run([sys.executable, "-m", "tasks", *args], cwd=home, env=env, capture_output=True, check=False)
        best = min(best, (time.perf_counter() - start, _children_cpu() - before))
    return best


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    home = Path(tempfile.mkdtemp(prefix="rr-bench-large-"))
    (home / "recipes").mkdir()
    print(f"{'case':<32} {'N':>7} {'wall N':>7} {'cpu N':>6} {'2N':>7} {'wall 2N':>7} {'cpu 2N':>6} "
          f"{'2N/N wall':>9} {'cpu':>5}")
    for name, case, full in (("lint, repeated flags", lint_case, FLAGS),
                             ("--solo --dry-run, placeholders", dry_run_case, PLACEHOLDERS)):
        half = best_time(case(home, full // 2), home, rounds)
        whole = best_time(case(home, full), home, rounds)
        print(f"{name:<32} {full // 2:>7} {half[0]:>6.2f}s {half[1]:>5.2f}s {full:>7} {whole[0]:>6.2f}s "
              f"{whole[1]:>5.2f}s {whole[0] / half[0]:>9.2f} {whole[1] / half[1]:>5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
