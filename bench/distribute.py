"""Image and weights to 3 workers over shaped links: how close to size/bandwidth each strategy gets.

Goals (issue 4): ours to 3 workers <= 1.1 x a single copy to one worker; the single copy <= 1.2 x
(S/B + the receiver's own `docker load` time); weights re-copy after one of 50 files changed <= 1.1 x
changed/B. Compared with the origin's star copy: `docker save` to a temp file on the head, then one
`cat file | ssh w docker load` per worker, all workers IN PARALLEL from the head. "single copy" is the
plain `docker save | ssh w docker load` a user would type.

The weights re-copy is measured with S/50 shards (a few MB here: the fixed cost of the SSH round
trips, printed as "fixed cost", dominates), with 256 MB shards, and with --shard-mb shards (default
1 GiB; real checkpoints ship 4-5 GB shards): the goal line uses the latter, to 3 workers, "in a run"
(the head's connection to each worker already open, as preflight leaves it before any copy; the
"cold" row pays that handshake too). The 49 unchanged big shards are sparse files, placed on the
workers by the bench as if an earlier run had copied them. A plain TCP stream of the changed shard
over the same link is the floor: tbf counts Ethernet/IP/TCP headers, so payload moves ~4.5 % below B.

Needs root: brings up its own 4-node TestCluster (n1 = head, n2..n4 workers, every link tbf-shaped
to --rate in both directions) and runs every copy *on the head*, as the tool would. "In a run" means
what a run does before its copies: preflight has connected to every worker, and then the chain's
worker-to-worker hops were opened (tasks/cli/main.py); the single copy is the plain pipeline, handshake
included. All four nodes share this host's cores and disk, so the chain's three `docker load`s
(which start together when the stream ends) slow each other down as they would not on separate
machines; the row of 3 local loads at once shows what that costs. So the image cases run under two
CPU models, interleaved: shared cores, and each worker held to --worker-cpus of a core (a cgroup
quota; 3 x 0.6 leaves the head the rest of 2 cores), each model with its own receiver's load time
and the CPU seconds each worker spent per copy (cgroup cpuacct: what it takes of a machine of its own).
Weights run on shared cores. The image cases run --repeat times per model, interleaved, and count by
their median. A long weights chain (--wide workers: the cluster grows by nodes with sshd only, links
shaped alike) runs beside a copy to one worker, --repeat times interleaved; their ratio is what a
chain of that length costs over one copy, here with every node on this host's cores. Takes ~5 min.

    python bench/distribute.py [--mb 150] [--rate 400mbit] [--shard-mb 1024] [--worker-cpus 0.6] [--wide 16]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import cluster as rc  # noqa: E402
from harness import rayimage  # noqa: E402

T = TypeVar("T")
TAG = "rr-dist-bench:{mb}"
REPO = "bench/model"
REMOTE_CACHE = "~/.cache/huggingface/hub"

DRIVER = r"""
import dataclasses, json, sys, time
sys.path.insert(0, sys.argv[1])
from tasks.ops import weights_copy as d, image_copy
from tasks.connect import chain
from tasks.connect import SshLink
a = json.loads(sys.argv[2])
workers = [chain.Worker(w["name"], SshLink(tuple(w["ssh"]))) for w in a["workers"]]
if a.get("warm"):  # in a run, preflight has connected to every worker and then opened the chain's hops
    for w in workers:
        w.link.call(["true"], node=w.name, step="connect")
    chain.open_hops([workers])
t0 = time.monotonic()
if a["what"] == "image":
    r = image_copy.distribute_image(a["tag"], a["head_id"], workers, progress=None)
else:
    r = d.sync_weights(a["cache"], a["remote"], a["repo"], a["commit"], workers)
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


TCP_RECV = "import socket,sys\ns=socket.create_server(('0.0.0.0',int(sys.argv[1])))\nprint('up',flush=True)\n" \
           "c,_=s.accept()\nwhile c.recv(1<<20): pass\nc.sendall(b'k')"
TCP_SEND = "import socket,sys,time\nt=time.monotonic()\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])))\n" \
           "n=int(sys.argv[3]); b=bytes(1<<20)\nwhile n>0: n-=s.send(b[:min(n,len(b))])\n" \
           "s.shutdown(socket.SHUT_WR); s.recv(1); print(time.monotonic()-t)"


def raw_tcp(src: rc.Node, dst: rc.Node, size: int) -> float:
    """Seconds to push `size` bytes over one plain TCP connection: the link's own floor (tbf counts
    Ethernet, IP and TCP headers, so payload moves a few % below B)."""
    recv = dst.popen([sys.executable, "-c", TCP_RECV, "5099"], stdout=subprocess.PIPE, text=True)
    try:
        if not recv.stdout or recv.stdout.readline().strip() != "up":
            sys.exit(f"raw TCP floor: the listener on {dst.name} did not start (port 5099 taken?)")
        p = src.run([sys.executable, "-c", TCP_SEND, dst.ip, "5099", str(size)], check=True, timeout=600)
        return float(p.stdout.strip())
    finally:
        recv.kill()
        recv.wait()


def verdict(ratio: float, goal: float) -> str:
    return "met" if ratio <= goal else "MISSED"


def median_row(runs: list[tuple[float, str]]) -> tuple[float, str]:
    """The median run's time and note, plus the spread of all runs."""
    ordered = sorted(runs, key=lambda r: r[0])
    t, note = ordered[len(ordered) // 2]
    spread = f"median of {len(runs)}: {ordered[0][0]:.2f}-{ordered[-1][0]:.2f}s" if len(runs) > 1 else ""
    return t, "; ".join(x for x in (spread, note) if x)


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


def make_commit(cache: Path, files: dict[str, bytes | int], sparse: int = 0) -> str:
    """One commit in HF cache layout: blobs, relative snapshot links, refs/main, trees/<commit>.json.

    An int value is a sparse file of `sparse` bytes named by that int (no disk used; its hashes in
    the listing are made up, fine without --verify)."""
    def sha(d: bytes | int) -> str:
        return hashlib.sha256(d).hexdigest() if isinstance(d, bytes) else hashlib.sha256(b"sparse%d" % d).hexdigest()

    commit = hashlib.sha1(repr(sorted((p, sha(d)) for p, d in files.items())).encode()).hexdigest()
    folder = cache / ("models--" + REPO.replace("/", "--"))
    listing = {}
    for path, data in files.items():
        digest = sha(data)
        blob = folder / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            if isinstance(data, bytes):
                blob.write_bytes(data)
            else:
                with open(blob, "wb") as f:
                    f.truncate(sparse)
        size = len(data) if isinstance(data, bytes) else sparse
        link = folder / "snapshots" / commit / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
        listing[path] = {"size": size, "blob_id": git_sha1(data) if isinstance(data, bytes) else digest[:40],
                         "lfs_sha256": digest, "lfs_size": size}
    (folder / "trees").mkdir(exist_ok=True)
    (folder / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": listing}))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return commit


def clear(nodes: list[rc.Node]) -> None:
    """No copy of the bench model on these workers."""
    for w in nodes:
        w.run(["rm", "-rf", f"/root/.cache/huggingface/hub/models--{REPO.replace('/', '--')}"])


def wide_chain(c: rc.TestCluster, wargs: dict, wide: int, rate: str, sb: float,
               repeat: int) -> tuple[list[tuple[str, float, float, str]], str]:
    """The weights to `wide` workers by one chain and to one worker, side by side (interleaved, the
    median counts). The workers past the cluster's own have sshd only (no dockerd), links shaped alike."""
    extra = c.add_nodes(wide - (len(c.nodes) - 1), dockerd=False)
    runs: dict[int, list[tuple[float, str]]] = {1: [], wide: []}
    try:
        for n in extra:
            n.shape(rate)
        many = c.nodes[1:]
        ws = [{"name": w.name, "ssh": prefix(w)} for w in many]
        for _ in range(repeat):
            for k in runs:
                clear(many[:k])
                r = on_head(c, dict(wargs, workers=ws[:k], warm=True))
                runs[k].append((r["t"], f"{r['report']['strategy']}; "
                                        f"{r['report']['bytes_sent'] / 1e6:.1f} MB left the head"))
        clear(many)
    finally:
        c.remove_nodes(extra)
    one, chain = median_row(runs[1]), median_row(runs[wide])
    ratio = chain[0] / one[0]
    rows = [(f"weights, ours to 1 worker, in a run [beside the {wide}]", one[0], one[0] / sb, one[1]),
            (f"weights, ours (chain) to {wide} workers, in a run", chain[0], chain[0] / sb,
             f"{ratio:.2f} x one copy; {chain[1]}")]
    goal = (f"  weights, chain to {wide} workers / one copy = {ratio:.2f}; each hop past the first adds "
            f"{(chain[0] - one[0]) / (wide - 1):.3f} s (all {wide + 1} nodes share this host's cores and disk)")
    return rows, goal


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=150, help="image payload and weights size S in MiB")
    ap.add_argument("--rate", default="400mbit", help="tbf rate of every link (both directions)")
    ap.add_argument("--shard-mb", type=int, default=1024, help="shard size of the realistic weights re-copy")
    ap.add_argument("--worker-cpus", type=float, default=0.6,
                    help="each worker's CPU quota in the second CPU model of the image cases (0: shared cores only)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each image case compared by the goals (interleaved; the median counts)")
    ap.add_argument("--wide", type=int, default=16,
                    help="workers of the long weights chain, measured beside one copy (0: skip)")
    ap.add_argument("--wait", type=float, default=900, help="seconds to wait for a busy test cluster")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/distribute.py needs root (it builds a netns test cluster)")
    bw = float(a.rate.removesuffix("mbit")) * 1e6 / 8  # bytes/s
    try:
        c = rc.up_when_free(4, "bench/distribute.py", a.wait)
    except rc.ClusterBusy as e:
        sys.exit(str(e))
    try:
        return run(c, a.mb, a.rate, bw, a.shard_mb, a.worker_cpus, max(1, a.repeat), a.wide)
    finally:
        c.teardown()


def run(c: rc.TestCluster, mb: int, rate: str, bw: float, shard_mb: int, worker_cpus: float, repeat: int,
        wide: int) -> int:
    head, workers = c.head, c.nodes[1:]
    tag, hid = build_image(head, mb)
    for n in c.nodes:
        n.shape(rate)
    # CPU models the image cases run under, interleaved: every node on this host's shared cores, and
    # each worker held to its own share (a cgroup quota), as separate machines would be
    models = {"shared cores": 0.0} | ({f"own {worker_cpus:g} core each": worker_cpus} if worker_cpus else {})

    def cpu_model(name: str) -> None:
        for w in workers:
            w.limit_cpu(models[name])

    def with_cpu(what: Callable[[], T]) -> tuple[T, list[float]]:
        """what() and the CPU seconds each worker spent meanwhile (what it would take of a machine of its own)."""
        before = [w.cpu_seconds() for w in workers]
        out = what()
        return out, [w.cpu_seconds() - b for w, b in zip(workers, before)]

    w1 = workers[0]
    ssh1 = shlex.join(prefix(w1))
    tar = f"/tmp/rr-bench-{os.getpid()}.tar"
    rows: list[tuple[str, float, float, str]] = []  # name, seconds, ratio, note
    goals: list[str] = []
    try:
        # S: what `docker save` streams (the tar), measured once
        sh_on_head(c, f"docker save {shlex.quote(tag)} > {tar}")
        S = os.path.getsize(tar)
        sb = S / bw
        load: dict[str, float] = {}
        load_cpu: dict[str, float] = {}
        for name in models:  # the receiver's own load time, no network: same spool-then-load path as a stream
            cpu_model(name)
            rmi([w1], tag)
            p, spent = with_cpu(lambda: w1.run(["sh", "-c", f"t0=$(date +%s.%N); docker load -q < {tar} >/dev/null; "
                                                            "echo $(date +%s.%N) $t0"], check=True, timeout=600))
            t_load = p.stdout.split()
            load[name], load_cpu[name] = float(t_load[0]) - float(t_load[1]), spent[0]
        # the same load on every worker at once, as the chain's loads run after its stream: on shared
        # cores they slow each other down (separate machines would not), and this is what that costs
        cpu_model("shared cores")
        rmi(workers, tag)
        t = time.monotonic()
        procs = [w.popen(["sh", "-c", f"docker load -q < {tar}"], stdout=subprocess.DEVNULL) for w in workers]
        if any(p.wait(600) for p in procs):
            sys.exit("local docker load failed on a worker")
        loads_at_once = time.monotonic() - t
        # origin-style star: save to a temp file, then one stream per worker, in parallel
        rmi(workers, tag)
        star = f"docker save -o {tar}.star {shlex.quote(tag)} || exit 1; pids=; " + " ".join(
            f"{{ cat {tar}.star | {shlex.join(prefix(w))} 'docker load -q'; }} & pids=\"$pids $!\";"
            for w in workers) + " for p in $pids; do wait $p || exit 1; done; rm -f " + f"{tar}.star"
        t = sh_on_head(c, star)
        bad = [w.name for w in workers if rayimage.has_image(w, tag) != hid]
        if bad:
            sys.exit(f"star copy did not land on {bad}")
        star_row = (f"image, origin star to {len(workers)} (temp file + parallel streams)", t, t / sb, "shared cores")
        # the three cases the goals compare, interleaved `repeat` times per CPU model (this host is noisy):
        # the single copy (one stream head -> one worker, as a user types it) and ours, in a run (preflight
        # has opened the connections; includes the ID checks before and after), to one worker and to all
        args = {"what": "image", "tag": tag, "head_id": hid, "warm": True}
        runs: dict[tuple[str, str], list[tuple[float, str]]] = {(m, k): [] for m in models for k in ("single", "one", "all")}
        cpu: dict[tuple[str, str], list[list[float]]] = {key: [] for key in runs}  # per run, per worker
        for _ in range(repeat):
            for m in models:
                cpu_model(m)
                rmi([w1], tag)
                t, spent = with_cpu(lambda: sh_on_head(c, f"docker save {shlex.quote(tag)} | {ssh1} 'docker load -q'"))
                runs[m, "single"].append((t, ""))
                cpu[m, "single"].append(spent)
                rmi([w1], tag)
                r, spent = with_cpu(lambda: on_head(c, dict(args, workers=[{"name": w1.name, "ssh": prefix(w1)}])))
                runs[m, "one"].append((r["t"], f"last byte out at {r['report']['stream_seconds']:.2f}s"))
                cpu[m, "one"].append(spent)
                rmi(workers, tag)
                r, spent = with_cpu(lambda: on_head(c, dict(args, workers=[{"name": w.name, "ssh": prefix(w)}
                                                                           for w in workers])))
                runs[m, "all"].append((r["t"], f"last byte out at {r['report']['stream_seconds']:.2f}s; "
                                               f"{r['report']['bytes_sent'] / 1e6:.0f} MB left the head"))
                cpu[m, "all"].append(spent)
        cpu_model("shared cores")
        for m in models:
            single, one, ours = (median_row(runs[m, k]) for k in ("single", "one", "all"))
            rows.append((f"image, single copy to 1 worker [{m}]", single[0], single[0] / sb, single[1]))
            if m == "shared cores":
                rows.append(star_row)
            rows.append((f"image, ours to 1 worker, in a run [{m}]", one[0], one[0] / sb, one[1]))
            rows.append((f"image, ours (chain) to {len(workers)} workers, in a run [{m}]", ours[0], ours[0] / sb, ours[1]))
            single, one, ours = single[0], one[0], ours[0]
            goals.append(f"  [{m}] receiver's own `docker load < tar`: {load[m]:.2f} s, so S/B + load = {sb + load[m]:.2f} s")
            goals.append(f"  [{m}] ours to {len(workers)} / single copy = {ours / single:.2f}  (goal <= 1.1: "
                         f"{verdict(ours / single, 1.1)}); ours to {len(workers)} / ours to 1 = {ours / one:.2f}")
            goals.append(f"  [{m}] single / (S/B + load)    = {single / (sb + load[m]):.2f}  (goal <= 1.2: "
                         f"{verdict(single / (sb + load[m]), 1.2)})")
            med = {k: [statistics.median(run[i] for run in cpu[m, k]) for i in range(len(workers))] for k in ("single", "one", "all")}
            goals.append(f"  [{m}] CPU seconds per worker (median): its own load alone {load_cpu[m]:.2f}; single copy "
                         f"{med['single'][0]:.2f}; ours to 1 {med['one'][0]:.2f}; ours to {len(workers)} "
                         + " / ".join(f"{x:.2f}" for x in med["all"]) + f" ({' / '.join(w.name for w in workers)})")
            if m == "shared cores":
                goals.append(f"  [{m}] ours to {len(workers)} - single copy = {ours - single:.2f} s; {len(workers)} local "
                             f"loads at once - one = {loads_at_once - load[m]:.2f} s (what sharing the cores costs the loads)")
        r = on_head(c, dict(args, workers=[{"name": w.name, "ssh": prefix(w)} for w in workers]))
        rows.append(("image, ours again (no-op)", r["t"], 0.0, f"bytes sent {r['report']['bytes_sent']}"))
    finally:
        head.run(["rm", "-f", tar, tar + ".star"])

    # weights: 50 random files of S/50 each in a head-side HF cache
    cache = head.home / "bench-hub"
    folder = f"models--{REPO.replace('/', '--')}"
    per = S // 50
    files = {f"model-{i:05d}-of-00050.safetensors": os.urandom(per) for i in range(50)}
    c1 = make_commit(cache, files)

    def note(r: dict, changed: int) -> str:
        rep = r["report"]
        return (f"{rep['strategy']}; {rep['bytes_sent'] / 1e6:.1f} MB left the head"
                + (f"; fixed cost {r['t'] - changed / bw:.2f}s" if changed else ""))

    wargs = {"what": "weights", "cache": "/root/bench-hub", "remote": REMOTE_CACHE, "repo": REPO}
    ws = [{"name": w.name, "ssh": prefix(w)} for w in workers]
    clear(workers)
    r = on_head(c, dict(wargs, commit=c1, workers=ws[:1]))
    rows.append(("weights, ours to 1 worker", r["t"], r["t"] / sb, note(r, 0)))
    clear(workers)
    r = on_head(c, dict(wargs, commit=c1, workers=ws))
    rows.append((f"weights, ours to {len(workers)} workers", r["t"], r["t"] / sb, note(r, 0)))
    r = on_head(c, dict(wargs, commit=c1, workers=ws))
    rows.append(("weights, ours again (no-op)", r["t"], 0.0, f"files sent {sum(n['files'] for n in r['report']['nodes'])}"))
    files2 = dict(files)
    files2["model-00007-of-00050.safetensors"] = os.urandom(per)
    c2 = make_commit(cache, files2)
    r = on_head(c, dict(wargs, commit=c2, workers=ws))
    rows.append((f"weights re-copy, 1 of 50 changed (S/50 shards), {len(workers)} workers", r["t"],
                 r["t"] / (per / bw), note(r, per)))
    if wide > len(workers):  # after the re-copy: it ends by clearing every worker, the re-copy's too
        wide_rows, wide_goal = wide_chain(c, dict(wargs, commit=c1), wide, rate, sb, repeat)
        rows += wide_rows
        goals.append(wide_goal)
    head.run(["rm", "-rf", "/root/bench-hub"])

    # re-copy with shards of a realistic order (real ones are 4-5 GB): 50 x shard, of which the 49
    # unchanged are sparse on the head and placed on the workers by the bench itself (cp --sparse, as
    # if an earlier run had copied them); the changed one is random bytes and crosses the link.
    # "in a run": preflight has already opened the head's connection to each worker, as the tool does
    # before any copy; "cold": the copy pays that handshake itself.
    def recopies(mb: int, cases: list[tuple[int, bool]]) -> list[tuple[str, float, float, str]]:
        shard = mb << 20
        head.run(["rm", "-rf", "/root/bench-hub"])
        names = [f"model-{i:05d}-of-00050.safetensors" for i in range(50)]
        files: dict[str, bytes | int] = {n: i for i, n in enumerate(names)}
        make_commit(cache, files, sparse=shard)
        clear(workers)
        for w in workers:
            w.run(["mkdir", "-p", "/root/.cache/huggingface/hub"])
            w.run(["cp", "-a", "--sparse=always", f"{cache}/{folder}", "/root/.cache/huggingface/hub/"], check=True)
        out = []
        for k, (n, warm) in enumerate(cases):
            files[names[11 + 12 * k]] = os.urandom(shard)
            commit = make_commit(cache, files, sparse=shard)
            r = on_head(c, dict(wargs, commit=commit, workers=ws[:n], warm=warm))
            out.append((f"weights re-copy, 1 of 50 changed ({mb} MB shards), {n} worker{'s' * (n > 1)}, "
                        + ("in a run" if warm else "cold"), r["t"], r["t"] / (shard / bw), note(r, shard)))
        files.clear()
        return out

    n = len(workers)
    if shard_mb != 256:
        rows.extend(recopies(256, [(n, False), (n, True)]))
    big = recopies(shard_mb, [(n, True), (1, True)] if shard_mb != 256 else [(n, False), (n, True), (1, True)])
    rows.extend(big)
    goal_row = next(r for r in big if r[0].endswith(f"{n} workers, in a run"))
    floor = raw_tcp(head, w1, shard_mb << 20)
    rows.append((f"floor: raw TCP head -> 1 worker, {shard_mb} MB, no ssh", floor, floor / ((shard_mb << 20) / bw),
                 "what the shaped link itself allows"))
    head.run(["rm", "-rf", "/root/bench-hub"])
    clear(workers)

    print(f"\nS = {S / 1e6:.0f} MB (docker save tar; weights: 50 x {per / 1e6:.1f} MB), "
          f"B = {rate} = {bw / 1e6:.0f} MB/s, S/B = {sb:.2f} s, changed/B = {per / bw:.2f} s (S/50) and "
          f"{(shard_mb << 20) / bw:.2f} s ({shard_mb} MB shard)")
    print(f"{len(workers)} local `docker load < tar` at once (one per worker, no network, shared cores): "
          f"{loads_at_once:.2f} s")
    print(f"{'case':<70} {'time':>7} {'ratio':>7}")
    for name, t, ratio, note in rows:
        print(f"{name:<70} {t:6.2f}s {ratio:6.2f}x  {note}")
    print("\ngoals:")
    print("\n".join(goals))
    print(f"  weights re-copy / (changed/B) = {goal_row[2]:.3f}  (goal <= 1.1: {verdict(goal_row[2], 1.1)}; {len(workers)} workers, "
          f"{shard_mb} MB shard, in a run; the link's own floor is {floor / ((shard_mb << 20) / bw):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
