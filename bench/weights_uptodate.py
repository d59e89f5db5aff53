"""How the weights up-to-date check (`tasks.ops.weights.snapshot_state`) scales: files vs bytes.

Goal (issue 3): flat in bytes (100 GB / 1 GB time ratio <= 1.1) and linear in files. The check must
stat, never read: doit's md5 `file_dep` would read every weight byte on each run after a touch.

It builds HF cache layouts by hand in a temp dir (blobs as sparse files made with truncate, snapshot
symlinks, refs/main, the client's trees/<commit>.json), then times the four cases interleaved in one
run and prints the ratios. Nothing touches the network. Runs in a few seconds.

    python bench/weights_uptodate.py
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.facts.hub_cache import snapshot_state  # noqa: E402

GB = 1000**3


def build(cache: Path, repo: str, n_files: int, total_bytes: int) -> str:
    """A cache entry for `repo` with `n_files` sparse LFS blobs summing to `total_bytes`; return the commit."""
    commit = hashlib.sha1(repo.encode()).hexdigest()
    folder = cache / ("models--" + repo.replace("/", "--"))
    blobs, snap = folder / "blobs", folder / "snapshots" / commit
    blobs.mkdir(parents=True)
    (snap / "shards").mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    size = total_bytes // n_files
    files = {}
    for i in range(n_files):
        path = f"shards/model-{i:05d}-of-{n_files:05d}.safetensors"
        sha256 = hashlib.sha256(f"{repo}/{path}".encode()).hexdigest()
        with open(blobs / sha256, "wb") as f:
            f.truncate(size)  # sparse: no data blocks written
        os.symlink(f"../../../blobs/{sha256}", snap / path)
        files[path] = {"size": size, "blob_id": hashlib.sha1(sha256.encode()).hexdigest(), "lfs_sha256": sha256, "lfs_size": size}
    (folder / "trees").mkdir()
    (folder / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": files}, indent=1))
    return commit


def main() -> None:
    cases = {  # name: (files, bytes)
        "10 files (10 GB)": (10, 10 * GB),
        "1,000 files (10 GB)": (1000, 10 * GB),
        "1 GB (10 files)": (10, 1 * GB),
        "100 GB (10 files)": (10, 100 * GB),
    }
    with tempfile.TemporaryDirectory(prefix="weights-bench-") as tmp:
        cache = Path(tmp)
        built = {}
        for i, (name, (n, b)) in enumerate(cases.items()):
            repo = f"bench/case{i}"
            built[name] = (repo, build(cache, repo, n, b))
        apparent = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file() and not p.is_symlink())
        on_disk = sum(p.stat().st_blocks * 512 for p in cache.rglob("*") if p.is_file() and not p.is_symlink())

        for repo, commit in built.values():  # warm-up, and a correctness check
            st = snapshot_state(cache, repo, commit, revision="main")
            assert st.complete, st.reason

        # interleaved rounds; per case keep the best per-call time of each round (least noise)
        best = {name: float("inf") for name in cases}
        deadline = time.monotonic() + 20
        rounds = 0
        while rounds < 30 and time.monotonic() < deadline:
            rounds += 1
            for name, (repo, commit) in built.items():
                k = 200 if cases[name][0] <= 10 else 5
                t0 = time.perf_counter()
                for _ in range(k):
                    snapshot_state(cache, repo, commit, revision="main")
                best[name] = min(best[name], (time.perf_counter() - t0) / k)

    print(f"snapshot_state, warm dentry cache, best of {rounds} interleaved rounds "
          f"(cache: {apparent / GB:.0f} GB apparent, {on_disk / 1e6:.1f} MB on disk)")
    for name, t in best.items():
        n = cases[name][0]
        print(f"  {name:<22} {t * 1e3:9.3f} ms   {t / n * 1e6:7.2f} us/file")
    files_ratio = best["1,000 files (10 GB)"] / best["10 files (10 GB)"]
    bytes_ratio = best["100 GB (10 files)"] / best["1 GB (10 files)"]
    per_file = (best["1,000 files (10 GB)"] / 1000) / (best["10 files (10 GB)"] / 10)
    print(f"files: 1,000 / 10  = {files_ratio:6.1f}x time for 100x files "
          f"(per-file cost ratio {per_file:.2f}; linear = 100x minus fixed cost)")
    print(f"bytes: 100 GB / 1 GB = {bytes_ratio:6.2f}x time for 100x bytes "
          f"(goal <= 1.1: {'ok' if bytes_ratio <= 1.1 else 'MISSED'})")


if __name__ == "__main__":
    main()
