"""No-op re-run cost: `run-recipe X -d` when everything is already up to date.

Two recipes are converged on the real test dockerd, one whose HF cache is tiny and one whose
cache is 100x larger (sparse blobs), then their no-op re-runs are timed alternately in the same
run, so machine noise hits both alike. Goal: <= 0.3 s and a large/tiny ratio <= 1.1.
The children run with bytecode caching on, as an installed runrecipe does: with
PYTHONDONTWRITEBYTECODE set (some CI images set it) every run compiles our modules again (~75 ms).

    python3 bench/noop.py [--rounds 25] [--against CHECKOUT]

`--against` times another checkout's code the same way in the same rounds (its own project, recipes
and containers), so "before vs after" is measured side by side rather than on two different days.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import engine, project  # noqa: E402

RECIPE = """\
recipe_version: "1"
name: bench {tag}
container: rr-bench-standin
model: org/model
defaults:
  port: {port}
  host: 127.0.0.1
command: |
  vllm serve org/model --port {{port}} --host {{host}}
"""


def fill_cache(hf_home: Path, files: int, file_bytes: int) -> None:
    """A complete HF cache snapshot of org/model (refs, tree listing, snapshot links, sparse blobs):
    size on disk ~0, apparent size files*file_bytes. The launch's weights check stats every file."""
    commit = "0" * 40
    repo = hf_home / "hub" / "models--org--model"
    snap = repo / "snapshots" / commit
    for sub in (repo / "blobs", repo / "refs", repo / "trees", snap):
        sub.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    listing = {}
    for i in range(files):
        sha = f"{i:064x}"
        with open(repo / "blobs" / sha, "wb") as fh:
            fh.truncate(file_bytes)
        name = f"model-{i:05d}.safetensors"
        if not (snap / name).exists():
            (snap / name).symlink_to(os.path.relpath(repo / "blobs" / sha, snap))
        listing[name] = {"size": file_bytes, "blob_id": f"{i:040x}", "lfs_sha256": sha, "lfs_size": file_bytes}
    (repo / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": listing}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def converge(code: Path, base: Path, tags: dict[str, tuple[int, int]], host: str, who: str) -> dict[str, dict[str, str]]:
    """A project in `base` with one recipe `<who>-<tag>` per tag (one engine holds every checkout's
    containers: names must differ), converged by the runrecipe checkout `code`; the environment of
    each tag's no-op re-run (children keep bytecode caching, as an installed tool has)."""
    dockdir = project.standin_project(base)
    parent = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env_of = {}
    for tag, (files, size) in tags.items():
        (base / "recipes" / f"{who}-{tag}.yaml").write_text(RECIPE.format(tag=tag, port=free_port()))
        fill_cache(base / f"hf-{tag}", files, size)
        env_of[tag] = {**parent, "DOCKER_HOST": host, "RUNRECIPE_HOME": str(base),
                       "RUNRECIPE_DOCKER_DIR": str(dockdir), "DOCKER_BUILDKIT": "0",
                       "HF_HOME": str(base / f"hf-{tag}"), "PYTHONPATH": str(code),
                       "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # never the internet
        first = _child(_run(who, tag) + ["--setup"], env_of[tag])
        if first.returncode:
            raise SystemExit(f"{code}: converging {who}-{tag} failed:\n{first.stdout}{first.stderr}")
    return env_of


def _child(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run from the project folder: `python -m` puts the working directory first on sys.path, so
    started from a checkout it would import that checkout's code whatever PYTHONPATH says."""
    return subprocess.run(argv, env=env, cwd=env["RUNRECIPE_HOME"], capture_output=True, text=True)


def _run(who: str, tag: str) -> list[str]:
    return [sys.executable, "-m", "tasks", f"{who}-{tag}", "-d"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--against", type=Path, metavar="CHECKOUT",
                    help="also time another runrecipe checkout (e.g. a `git worktree` of older code), side by side")
    args = ap.parse_args()
    host = engine.docker_host()
    sizes = {"tiny": (10, 1 << 20), "large": (10, 100 << 20)}   # 10 MB vs 1 GB apparent: 100x
    codes = {"ours": ROOT, **({"against": args.against.resolve()} if args.against else {})}
    with tempfile.TemporaryDirectory(prefix="rr-bench-") as tmp:
        envs = {(who, tag): env for who, code in codes.items()
                for tag, env in converge(code, Path(tmp) / who, sizes, host, who).items()}
        times: dict[object, list[float]] = {key: [] for key in [*envs, "python"]}
        for round_ in range(args.rounds):
            start = time.perf_counter()
            _child([sys.executable, "-c", "pass"], envs["ours", "tiny"])
            times["python"].append(time.perf_counter() - start)
            for who, tag in (sorted if round_ % 2 else reversed)(list(envs)):  # alternate who goes first
                start = time.perf_counter()
                res = _child(_run(who, tag), envs[who, tag])
                times[who, tag].append(time.perf_counter() - start)
                if res.returncode or ".  launch" in res.stdout:  # doit's mark of a task it ran
                    print(f"{who}: not a no-op:", res.stdout, res.stderr, file=sys.stderr)
                    return 1
        for who, tag in envs:
            _child([sys.executable, "-m", "tasks", "stop", f"{who}-{tag}"], envs[who, tag])
    med = {key: statistics.median(v) for key, v in times.items()}
    print(f"python -c pass (this interpreter and its site-packages, not runrecipe): median {med['python']:.3f} s")
    for who, code in codes.items():
        for tag, (files, size) in sizes.items():
            print(f"{who} ({code}): no-op re-run, HF cache {files} files x {size >> 20} MiB ({tag}): "
                  f"median {med[who, tag]:.3f} s, min {min(times[who, tag]):.3f} s over {args.rounds} runs")
    # each round's runs are back to back: the median of per-round ratios cancels slow spells of the machine
    ratio = statistics.median(big / small for big, small in zip(times["ours", "large"], times["ours", "tiny"]))
    print(f"ratio large/tiny (median of {args.rounds} back-to-back pairs): {ratio:.2f} "
          f"(goal <= 1.1: {'ok' if ratio <= 1.1 else 'MISSED'})")
    if args.against:
        vs = statistics.median(o / a for o, a in zip(times["ours", "tiny"], times["against", "tiny"]))
        print(f"ours/against, tiny (median of {args.rounds} back-to-back pairs): {vs:.2f}")
    print(f"no-op time: {med['ours', 'tiny']:.3f} s (goal <= 0.3 s: {'ok' if med['ours', 'tiny'] <= 0.3 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
