"""Image and weights to 3 workers over shaped links: how close to size/bandwidth each strategy gets.

Goals (issue 4): ours to 3 workers <= 1.1 x a single copy to one worker; the single copy <= 1.2 x
(S/B + the receiver's own `docker load` time); weights re-copy after one of 50 files changed <= 1.1 x
changed/B. Compared with the origin's star copy: `docker save` to a temp file on the head, then one
`cat file | ssh w docker load` per worker, all workers IN PARALLEL from the head.

Needs root: brings up its own 4-node TestCluster (n1 = head, n2..n4 workers, every link tbf-shaped
to --rate in both directions) and runs every copy *on the head*, as the tool would. Takes ~2-3 min.

    python bench/distribute.py [--mb 150] [--rate 400mbit]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import cluster as rc  # noqa: E402
from harness import rayimage  # noqa: E402

TAG = "rr-dist-bench:{mb}"
REPO = "bench/model"
REMOTE_CACHE = "~/.cache/huggingface/hub"

DRIVER = r"""
import dataclasses, json, sys, time
sys.path.insert(0, sys.argv[1])
from tasks import distribute as d
a = json.loads(sys.argv[2])
t0 = time.monotonic()
if a["what"] == "image":
    r = d.distribute_image(a["tag"], a["head_id"], [d.Worker(**w) for w in a["workers"]], progress=None)
else:
    r = d.sync_weights(a["cache"], a["remote"], a["repo"], a["commit"], [w["name"] for w in a["workers"]],
                       {w["name"]: w["ssh"] for w in a["workers"]})
print(json.dumps({"t": time.monotonic() - t0, "report": dataclasses.asdict(r)}))
"""


def prefix(n: rc.Node) -> list[str]:
    return ["ssh", *n.ssh_args, n.target]


def on_head(c: rc.TestCluster, args: dict) -> dict:
    p = c.head.run([sys.executable, "-c", DRIVER, str(ROOT), json.dumps(args)], timeout=600)
    if p.returncode != 0:
        sys.exit(f"driver failed: {p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def sh_on_head(c: rc.TestCluster, script: str) -> float:
    """Run a shell pipeline on the head; its wall time."""
    t0 = time.monotonic()
    c.head.run(["bash", "-o", "pipefail", "-c", script], check=True, timeout=900)
    return time.monotonic() - t0


def rmi(nodes: list[rc.Node], tag: str) -> None:
    for n in nodes:
        n.docker("rmi", "-f", tag, timeout=120)


def build_image(head: rc.Node, mb: int) -> tuple[str, str]:
    tag = TAG.format(mb=mb)
    hid = rayimage.has_image(head, tag)
    if not hid:
        tiny = rayimage.build_tiny_image(head)
        ctx = head.home / "bench-ctx"
        ctx.mkdir(exist_ok=True)
        with open(ctx / "blob", "wb") as f:  # random: nothing on the path may compress it away
            for _ in range(mb):
                f.write(os.urandom(1 << 20))
        (ctx / "Dockerfile").write_text(f"FROM {tiny}\nCOPY blob /blob\n")
        head.docker("build", "-q", "-t", tag, "/root/bench-ctx", env={"DOCKER_BUILDKIT": "0"}, check=True,
                    timeout=600)
        (ctx / "blob").unlink()
        hid = rayimage.has_image(head, tag)
    return tag, hid


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def make_commit(cache: Path, files: dict[str, bytes]) -> str:
    """One commit in HF cache layout: blobs, relative snapshot links, refs/main, trees/<commit>.json."""
    commit = hashlib.sha1(repr(sorted((p, hashlib.sha256(d).hexdigest()) for p, d in files.items()))
                          .encode()).hexdigest()
    folder = cache / ("models--" + REPO.replace("/", "--"))
    listing = {}
    for path, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        (folder / "blobs").mkdir(parents=True, exist_ok=True)
        if not (folder / "blobs" / sha).exists():
            (folder / "blobs" / sha).write_bytes(data)
        link = folder / "snapshots" / commit / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(folder / "blobs" / sha, link.parent))
        listing[path] = {"size": len(data), "blob_id": git_sha1(data), "lfs_sha256": sha, "lfs_size": len(data)}
    (folder / "trees").mkdir(exist_ok=True)
    (folder / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": listing}))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return commit


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=150, help="image payload and weights size S in MiB")
    ap.add_argument("--rate", default="400mbit", help="tbf rate of every link (both directions)")
    ap.add_argument("--wait", type=float, default=900, help="seconds to wait for a busy test cluster")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/distribute.py needs root (it builds a netns test cluster)")
    bw = float(a.rate.removesuffix("mbit")) * 1e6 / 8  # bytes/s
    deadline = time.monotonic() + a.wait
    while True:
        try:
            c = rc.TestCluster(4, owner="bench/distribute.py").__enter__()
            break
        except rc.ClusterBusy as e:
            if time.monotonic() > deadline:
                sys.exit(str(e))
            time.sleep(3)
    try:
        return run(c, a.mb, a.rate, bw)
    finally:
        c.teardown()


def run(c: rc.TestCluster, mb: int, rate: str, bw: float) -> int:
    head, workers = c.head, c.nodes[1:]
    tag, hid = build_image(head, mb)
    for n in c.nodes:
        n.shape(rate)
    w1 = workers[0]
    ssh1 = shlex.join(prefix(w1))
    tar = f"/tmp/rr-bench-{os.getpid()}.tar"
    rows: list[tuple[str, float, float, str]] = []  # name, seconds, ratio, note
    try:
        # S: what `docker save` streams (the tar), measured once
        sh_on_head(c, f"docker save {shlex.quote(tag)} > {tar}")
        S = os.path.getsize(tar)
        sb = S / bw
        # the receiver's own load time, no network: same spool-then-load path as a stream
        rmi([w1], tag)
        t_load = w1.run(["sh", "-c", f"t0=$(date +%s.%N); docker load -q < {tar} >/dev/null; "
                                     "echo $(date +%s.%N) $t0"], check=True, timeout=600).stdout.split()
        load = float(t_load[0]) - float(t_load[1])
        # single copy: one stream head -> one worker
        rmi([w1], tag)
        t = sh_on_head(c, f"docker save {shlex.quote(tag)} | {ssh1} 'docker load -q'")
        rows.append(("image, single copy to 1 worker", t, t / sb, ""))
        single = t
        # origin-style star: save to a temp file, then one stream per worker, in parallel
        rmi(workers, tag)
        star = f"docker save -o {tar}.star {shlex.quote(tag)} || exit 1; pids=; " + " ".join(
            f"{{ cat {tar}.star | {shlex.join(prefix(w))} 'docker load -q'; }} & pids=\"$pids $!\";"
            for w in workers) + " for p in $pids; do wait $p || exit 1; done; rm -f " + f"{tar}.star"
        t = sh_on_head(c, star)
        bad = [w.name for w in workers if rayimage.has_image(w, tag) != hid]
        if bad:
            sys.exit(f"star copy did not land on {bad}")
        rows.append((f"image, origin star to {len(workers)} (temp file + {len(workers)} parallel streams)",
                     t, t / sb, ""))
        # ours: chain, to one worker and to all three (includes ID checks before and after)
        args = {"what": "image", "tag": tag, "head_id": hid}
        rmi([w1], tag)
        r = on_head(c, dict(args, workers=[{"name": w1.name, "ssh": prefix(w1)}]))
        rows.append(("image, ours to 1 worker", r["t"], r["t"] / sb, f"last byte out at {r['report']['stream_seconds']:.2f}s"))
        rmi(workers, tag)
        r = on_head(c, dict(args, workers=[{"name": w.name, "ssh": prefix(w)} for w in workers]))
        ours = r["t"]
        rows.append((f"image, ours (chain) to {len(workers)} workers", ours, ours / sb,
                     f"{r['report']['bytes_sent'] / 1e6:.0f} MB left the head; last byte out at "
                     f"{r['report']['stream_seconds']:.2f}s"))
        r = on_head(c, dict(args, workers=[{"name": w.name, "ssh": prefix(w)} for w in workers]))
        rows.append(("image, ours again (no-op)", r["t"], 0.0, f"bytes sent {r['report']['bytes_sent']}"))
    finally:
        head.run(["rm", "-f", tar, tar + ".star"])

    # weights: 50 random files of S/50 each in a head-side HF cache
    cache = head.home / "bench-hub"
    per = S // 50
    files = {f"model-{i:05d}-of-00050.safetensors": os.urandom(per) for i in range(50)}
    c1 = make_commit(cache, files)
    for w in workers:
        w.run(["rm", "-rf", f"/root/.cache/huggingface/hub/models--{REPO.replace('/', '--')}"])
    wargs = {"what": "weights", "cache": "/root/bench-hub", "remote": REMOTE_CACHE, "repo": REPO}
    ws = [{"name": w.name, "ssh": prefix(w)} for w in workers]
    r = on_head(c, dict(wargs, commit=c1, workers=ws[:1]))
    rows.append(("weights, ours to 1 worker (rsync)", r["t"], r["t"] / sb, ""))
    r = on_head(c, dict(wargs, commit=c1, workers=ws))
    rows.append((f"weights, ours to {len(workers)} workers (1 already had it)", r["t"], r["t"] / sb,
                 "parallel rsync from the head: a star"))
    r = on_head(c, dict(wargs, commit=c1, workers=ws))
    rows.append(("weights, ours again (no-op)", r["t"], 0.0, f"files sent {sum(n['files'] for n in r['report']['nodes'])}"))
    files2 = dict(files)
    files2["model-00007-of-00050.safetensors"] = os.urandom(per)
    c2 = make_commit(cache, files2)
    changed = per
    r = on_head(c, dict(wargs, commit=c2, workers=ws[:1]))
    rows.append(("weights re-copy, 1 of 50 changed, 1 worker", r["t"], r["t"] / (changed / bw),
                 f"{r['report']['nodes'][0]['files']} files, {r['report']['bytes_sent'] / 1e6:.1f} MB"))
    on_head(c, dict(wargs, commit=c2, workers=ws[1:]))  # every worker at c2: each then lacks one file
    files3 = dict(files2)
    files3["model-00011-of-00050.safetensors"] = os.urandom(per)
    c3 = make_commit(cache, files3)
    r = on_head(c, dict(wargs, commit=c3, workers=ws))
    rows.append((f"weights re-copy, 1 of 50 changed, {len(workers)} workers", r["t"], r["t"] / (changed / bw),
                 f"{r['report']['bytes_sent'] / 1e6:.1f} MB in total"))
    head.run(["rm", "-rf", "/root/bench-hub"])

    print(f"\nS = {S / 1e6:.0f} MB (docker save tar; weights: 50 x {per / 1e6:.1f} MB), "
          f"B = {rate} = {bw / 1e6:.0f} MB/s, S/B = {sb:.2f} s, changed/B = {changed / bw:.2f} s")
    print(f"receiver's local `docker load < tar`: {load:.2f} s  -> S/B + load = {sb + load:.2f} s")
    print(f"{'case':<62} {'time':>7} {'ratio':>7}")
    for name, t, ratio, note in rows:
        print(f"{name:<62} {t:6.2f}s {ratio:6.2f}x  {note}")
    print("\ngoals:")
    print(f"  ours to {len(workers)} / single copy            = {ours / single:.2f}  (goal <= 1.1)")
    print(f"  single / (S/B + load)             = {single / (sb + load):.2f}  (goal <= 1.2)")
    rc_row = rows[-1]
    print(f"  weights re-copy / (changed/B)     = {rc_row[2]:.2f}  (goal <= 1.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
