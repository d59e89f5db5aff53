"""Image and weights to cluster workers: only what a node lacks, proven on that node afterwards.

Plain data in, plain data out; every side effect is a command (docker, ssh, rsync). A node is reached
through an ssh argv prefix the caller gives (tasks/remote.py builds it); remote commands are always
one `shlex.join`-ed word list, so no value reaches a remote shell unquoted.

Why it looks like this:

- Image: one `docker save` stream leaves the head and runs through a *chain* of workers; each worker
  forwards the stream to the next (into a fifo read by the next `ssh`; see HOP_SCRIPT) while its
  own `docker load` reads it. Every link carries the image once, so N workers take about the time of
  one (a star from the head would push N copies through the head's link). `docker load` from stdin
  spools the whole tar before loading, so all loads then run at the same time, each on its node.
  No temp file of ours (Docker's save and load spool on their own: image_room). Each hop prints a status line (load rc, forward rc) that flows back up the
  chain, so a failure names the node it happened on; each worker then counts as done only after its
  image ID equals the head's. A worker the previous one could not reach gets its own stream from
  the head afterwards.
- Weights: what a node lacks (missing or wrong-size files of this commit: blobs, relative snapshot
  links, trees/<commit>.json; refs written by content afterwards), found by one `find -printf` per
  worker. One worker gets `rsync -a --partial --size-only`; several get the union of what they lack
  once, as a tar stream through the same chain (each extracts with --skip-old-files after removing
  its wrong-size files). A worker the chain did not complete gets rsync from the head. The no-op
  path is one ssh call per worker and reads no bytes; `verify=True` adds one remote `sha256sum` per
  worker to catch same-size corruption.
- Every ssh from the head shares one connection per node (tasks/remote.py); the hops between
  workers are connected in parallel right after preflight (open_hops), so their handshakes neither
  add up nor hold a stream up.
"""
from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import errno
import hashlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TextIO

from .errors import RunError
from .remote import shared_connection_options
from .runner import tail
from .units import human_bytes
from .weights import read_tree_listing, repo_folder, snapshot_state

CHUNK = 1 << 20
QUERY_TIMEOUT = 30.0  # an image inspect / manifest / hash listing over ssh
KEEPALIVE = ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
STATUS = "RRSTAT"


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Worker:
    """A node to copy to.

    `ssh` reaches it from the head; `peer_ssh` reaches it from another worker (the previous hop of
    the chain), e.g. the same options with a key and known_hosts valid on the workers. Giving the
    prefix *to* a node (not "to the next") keeps the chain correct when up-to-date nodes drop out.
    """

    name: str
    ssh: list[str]
    peer_ssh: list[str] | None = None

    @property
    def hop(self) -> list[str]:
        return list(self.peer_ssh if self.peer_ssh is not None else self.ssh)


@dataclass
class NodeReport:
    name: str
    action: str  # "up-to-date" | "sent"
    bytes: int = 0  # payload bytes that reached this node
    files: int = 0  # weights: regular files rsync transferred
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Report:
    """What a distribution did, per node; returned only when every node is proven up to date."""

    what: str
    strategy: str
    nodes: list[NodeReport] = field(default_factory=list)
    bytes_sent: int = 0  # bytes that left the head
    stream_seconds: float = 0.0  # image: until the last byte left the head (the rest is loading/verifying)
    seconds: float = 0.0

    @property
    def sent_to(self) -> list[str]:
        return [n.name for n in self.nodes if n.action == "sent"]

    @property
    def up_to_date(self) -> list[str]:
        return [n.name for n in self.nodes if n.action == "up-to-date"]

    @property
    def rate(self) -> float:
        return self.bytes_sent / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------- helpers
def remote_argv(prefix: Sequence[str] | None, argv: Sequence[str], from_head: bool = True) -> list[str]:
    """argv run through `prefix` (an ssh argv ending in the destination) as ONE quoted word, or locally."""
    if prefix is None:
        return list(argv)
    return [*ssh_prefix(prefix, from_head), shlex.join(list(argv))]


def ssh_prefix(prefix: Sequence[str], from_head: bool = True) -> list[str]:
    """An ssh argv made fit for many calls: keepalives unless given (a dead link ends an ssh in bounded
    time, not at TCP's), and a shared connection (remote.py: ~0.01 s a call, not ~0.2 s). Run on a
    worker (`from_head=False`: a chain hop), that connection's socket lives in the worker's ~/.ssh,
    named per run, so no other run ever rides on it; `open_hops` opens it."""
    p = list(prefix)
    if not p or os.path.basename(p[0]) != "ssh":
        return p
    if not any("serveralive" in a.lower() for a in p):
        p[1:1] = KEEPALIVE
    if not any("controlpath" in a.lower() for a in p):
        p[1:1] = shared_connection_options(p[1:-1], on_worker=not from_head)
    return p


def _node(prefix: Sequence[str] | None) -> str:
    return "local" if prefix is None else prefix[-1]


def _call(prefix: Sequence[str] | None, argv: Sequence[str], *, node: str, step: str,
          timeout: float = QUERY_TIMEOUT, input: bytes | None = None, ok: Sequence[int] = (0,)
          ) -> subprocess.CompletedProcess:
    """One command on a node with a timeout; RunError naming node, step, command and stderr tail."""
    cmd = remote_argv(prefix, argv)
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RunError(f"{step} on {node} timed out after {timeout:.0f} s", node=node,
                       command=shlex.join(cmd)) from None
    except FileNotFoundError:
        raise RunError(f"{step} on {node}: '{cmd[0]}' is not installed", node=node,
                       command=shlex.join(cmd)) from None
    if proc.returncode not in ok:
        raise RunError(f"{step} failed on {node}", node=node, command=shlex.join(cmd),
                       exit_code=proc.returncode, tail=tail(proc.stderr.decode(errors="replace")))
    return proc


def _qpath(path: str) -> str:
    """Quote a path for a remote shell; a leading ~/ becomes "$HOME"/ (quoting would stop the expansion)."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _parallel(fn: Callable, items: Sequence, workers: int = 8) -> list:
    """fn over items on threads, results in order; the first exception (in item order) is raised."""
    if not items:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futs = [pool.submit(fn, it) for it in items]
        concurrent.futures.wait(futs)
    for f in futs:
        if f.exception() is not None:
            raise f.exception()  # type: ignore[misc]
    return [f.result() for f in futs]


# ----------------------------------------------------------------------------- image
def image_id_on(ssh_prefix: Sequence[str] | None, ref: str, timeout: float = QUERY_TIMEOUT,
                name: str | None = None) -> str | None:
    """The image ID `ref` has on a node (None prefix = this machine), or None when it has no such image.

    `name` is how errors call the node (default: the ssh destination)."""
    node = name or _node(ssh_prefix)
    proc = _call(ssh_prefix, ["docker", "image", "inspect", "--format", "{{.Id}}", ref], node=node,
                 step="image inspect", timeout=timeout, ok=(0, 1))
    if proc.returncode == 0:
        return proc.stdout.decode().strip().splitlines()[-1]
    err = proc.stderr.decode(errors="replace")
    if "No such image" in err or "No such object" in err:
        return None
    raise RunError(f"image inspect failed on {node}", node=node,
                   command=shlex.join(remote_argv(ssh_prefix, ["docker", "image", "inspect", ref])),
                   exit_code=1, tail=tail(err))


# The script each chain hop runs under `sh -c` (POSIX sh + GNU coreutils): $1 = this node's name,
# $2 = next node's name ("" when last), $3 = base64 of the command that reaches the next hop,
# $4 = base64 of the shell command that takes the stream on this node (docker load, tar -x).
# A forwarding node copies the stream to the next hop (a fifo) and to its taker (stdout), and keeps
# feeding one when the other dies; the status lines say which. With python3 it reads and writes 1 MiB
# at a time through 1 MiB pipes, so the ssh and the taker downstream read large chunks too: measured
# ~0.3-0.5 CPU seconds less per 159 MB on each forwarding worker than `tee -p` (8 KiB), the fallback.
HOP_SCRIPT = r"""
set -u
name=$1; next=$2
d=$(mktemp -d) || { echo "RRSTAT take $name 97 $(printf 'mktemp failed' | base64 | tr -d '\n')"; exit 97; }
trap 'rm -rf "$d"' EXIT
take=$(printf %s "$4" | base64 -d)
dup_py='import fcntl, os, sys
outs = [1, os.open(sys.argv[1], os.O_WRONLY)]
for fd in [0] + outs:
    try:
        fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ
    except OSError:
        pass
try:
    while outs:
        data = os.read(0, 1 << 20)
        if not data:
            break
        for fd in list(outs):
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                outs.remove(fd)
except OSError as e:
    sys.exit("forwarding: %s" % e)'
dup() { if command -v python3 >/dev/null 2>&1; then python3 -c "$dup_py" "$1"; else tee -p "$1"; fi; }
if [ -n "$next" ]; then
  mkfifo "$d/f" || exit 97
  fwd=$(printf %s "$3" | base64 -d)
  sh -c "$fwd" <"$d/f" &
  fp=$!
  dup "$d/f" | sh -c "$take" >"$d/out" 2>"$d/err"
  rc=$?
else
  sh -c "$take" >"$d/out" 2>"$d/err"
  rc=$?
fi
echo "RRSTAT take $name $rc $(tail -c 600 "$d/err" | base64 | tr -d '\n')"
if [ -n "$next" ]; then
  wait "$fp"
  echo "RRSTAT fwd $next $? -"
fi
exit "$rc"
"""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()  # nesting via base64: no quote blow-up per level


def _hop_command(chain: Sequence[Worker], take: Callable[[Worker], str], first: bool) -> list[str]:
    """argv that reaches chain[0] (from the head, or from the previous worker) and runs its hop."""
    w, rest = chain[0], chain[1:]
    nxt = shlex.join(_hop_command(rest, take, first=False)) if rest else ""
    return remote_argv(w.ssh if first else _peer_prefix(w),
                       ["sh", "-c", HOP_SCRIPT, "hop", w.name, rest[0].name if rest else "", _b64(nxt), _b64(take(w))],
                       from_head=first)


def _peer_prefix(w: Worker) -> list[str]:
    """How the previous worker reaches `w` (over its own shared connection, see ssh_prefix)."""
    return ssh_prefix(w.hop, from_head=False)


def open_hops(chains: Iterable[Sequence[Worker]]) -> None:
    """Open the worker-to-worker connections of these chains, each pair once, all at once.

    Before a stream, each hop's handshake (~0.25 s) would otherwise hold the whole stream up in turn;
    a run opens them right after preflight, so its copies find them up. A hop that cannot connect
    fails later, in the stream, where its error is reported (and the head takes over that worker)."""
    pairs = {(a.name, b.name): (a, b) for chain in chains for a, b in zip(chain, chain[1:])}

    def one(pair: tuple[Worker, Worker]) -> None:
        a, b = pair
        with contextlib.suppress(RunError):
            _call(a.ssh, [*_peer_prefix(b), "true"], node=a.name, step="ssh to the next worker")
    _parallel(one, list(pairs.values()))


class _Progress:
    """A periodic `bytes, rate` line on a TTY; silent otherwise (logs and CI stay clean)."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None) -> None:
        self.label, self.total = label, total
        self.stream = stream if stream is not None and stream.isatty() else None
        self.t0 = time.monotonic()
        self.last = 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if self.stream is None or (not final and now - self.last < 0.5):
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-6)
        pct = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        self.stream.write(f"\r  {self.label}: {human_bytes(done)}{pct} at {human_bytes(rate)}/s   "
                          + ("\n" if final else ""))
        self.stream.flush()


def _parse_status(text: str) -> tuple[dict[str, tuple[int, str]], dict[str, int]]:
    """The hops' status lines: per node (taker rc, its stderr tail), and per node the rc of the hop into it."""
    takes: dict[str, tuple[int, str]] = {}
    fwds: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) < 4 or parts[0] != STATUS:
            continue
        kind, name, rc = parts[1], parts[2], parts[3]
        if not rc.lstrip("-").isdigit():
            continue
        if kind == "take":
            msg = ""
            if len(parts) > 4 and parts[4] not in ("", "-"):
                try:
                    msg = base64.b64decode(parts[4]).decode(errors="replace")
                except ValueError:
                    msg = ""
            takes[name] = (int(rc), msg)
        elif kind == "fwd":
            fwds[name] = int(rc)
    return takes, fwds


@dataclass
class _Chain:
    """What one chained stream did: bytes out of the head, and per node what went wrong (step, why)."""

    sent: int
    problems: dict[str, tuple[str, str]]
    stream_seconds: float
    command: str
    source_error: str


def _run_chain(source: list[str], stale: Sequence[Worker], take: Callable[[Worker], str], step: str, label: str,
               size: int | None, progress: TextIO | None, timeout: float | None, stall_timeout: float,
               take_timeout: float) -> _Chain:
    """Stream `source`'s stdout through the chain of `stale` workers, each running `take` on it."""
    open_hops([stale])
    cmd = _hop_command(stale, take, first=True)
    prog = _Progress(f"{label} -> {', '.join(w.name for w in stale)}", size, progress)
    t_stream = time.monotonic()
    sent, err_src, out, err_ssh, stalled, streamed = _stream(source, cmd, prog, timeout, stall_timeout, take_timeout)
    takes, fwds = _parse_status(out)
    # first problem in chain order: a broken hop into a node, else its taker, else a missing status
    problems: dict[str, tuple[str, str]] = {}
    for i, w in enumerate(stale):
        into_rc = fwds.get(w.name) if i else None
        if w.name in takes and takes[w.name][0] == 0:
            continue
        if w.name in takes:
            problems[w.name] = (step, takes[w.name][1] or f"{step} rc={takes[w.name][0]}")
        elif into_rc not in (None, 0):
            problems[w.name] = ("stream", f"ssh from {stale[i - 1].name} to {w.name} exited rc={into_rc} "
                                          "(link or sshd down?)")
        else:
            why = "stalled: no byte moved for %.0f s" % stall_timeout if stalled else "the stream ended early"
            problems[w.name] = ("stream", why + (f"; ssh to {stale[0].name}: {tail(err_ssh)}" if err_ssh.strip() else ""))
    return _Chain(sent, problems, streamed - t_stream, shlex.join(cmd[:-1] + ["<chain script>"]), err_src)


def _raise_first(what: str, stale: Sequence[Worker], problems: dict[str, tuple[str, str]], command: str,
                 extra: str = "") -> None:
    """RunError for the first failed node in chain order, naming the others too."""
    if not problems:
        return
    bad = next(w for w in stale if w.name in problems)
    step, why = problems[bad.name]
    others = [n for n in problems if n != bad.name]
    raise RunError(f"{what} to {bad.name} failed at step '{step}'"
                   + (f" (also failed: {', '.join(others)})" if others else ""),
                   node=bad.name, command=command, tail=why + ("\n" + tail(extra) if extra else ""))


def _unreached(stale: Sequence[Worker], chain: _Chain) -> list[Worker]:
    """Workers the stream did not reach through the previous worker (its link, sshd, or no SSH between
    workers at all): the head may still reach them directly."""
    return [w for i, w in enumerate(stale) if i and chain.problems.get(w.name, ("",))[0] == "stream"]


def distribute_image(tag: str, head_id: str, workers: Sequence[Worker], *,
                     timeout: float | None = None, stall_timeout: float = 60.0,
                     load_timeout: float = 1800.0, progress: TextIO | None = sys.stderr,
                     before_send: Callable[[list[Worker], int | None], None] | None = None) -> Report:
    """Make `tag` on every worker the image `head_id`: skip workers that have it, chain-stream the rest.

    A worker the chain could not reach from the previous worker (no worker-to-worker SSH) gets a
    direct stream from the head afterwards. Raises RunError naming the first node (in chain order)
    whose load, forward or final ID check failed; workers that did load stay loaded, so a re-run
    sends only to the rest. `timeout` bounds the whole stream (default: none, the stall watchdog and
    ssh keepalives bound a dead link); `stall_timeout` ends a stream that moved no byte for that long;
    `load_timeout` bounds the loads after the last byte went out. `before_send(stale workers, image
    size)` runs before any byte moves (the caller's disk check); what it raises stops the copy.
    """
    t0 = time.monotonic()
    ids = _parallel(lambda w: image_id_on(w.ssh, tag, name=w.name), list(workers))
    report = Report("image", "chain")
    stale = [w for w, i in zip(workers, ids) if i != head_id]
    for w, i in zip(workers, ids):
        if i == head_id:
            report.nodes.append(NodeReport(w.name, "up-to-date", detail=head_id[:19]))
    if not stale:
        report.seconds = time.monotonic() - t0
        return report

    local_id = image_id_on(None, tag)
    if local_id != head_id:
        raise RunError(f"the head's {tag} is {local_id or 'absent'}, not {head_id}: rebuild or re-pull it first",
                       node="local", command=f"docker image inspect {tag}")
    size = _image_size(tag)
    if before_send is not None:
        before_send(stale, size)
    go = dict(size=size, progress=progress, timeout=timeout, stall_timeout=stall_timeout, take_timeout=load_timeout)
    chain = _run_chain(["docker", "save", tag], stale, _docker_load, "docker load", "image", **go)
    if chain.source_error and not chain.problems and chain.sent == 0:
        raise RunError(f"docker save {tag} failed on the head", node="local", command=f"docker save {tag}",
                       tail=tail(chain.source_error))
    problems, sent = chain.problems, chain.sent
    received = {w.name: chain.sent for w in stale}  # what reached each node
    direct = _unreached(stale, chain)
    if direct:  # the head's own link for these, one stream each (a star), in parallel
        def one(w: Worker) -> _Chain:
            return _run_chain(["docker", "save", tag], [Worker(w.name, w.ssh)], _docker_load, "docker load",
                              "image", **go)

        for w, again in zip(direct, _parallel(one, direct)):
            sent += again.sent
            received[w.name] = again.sent
            problems.pop(w.name)
            problems.update(again.problems)
        report.strategy = f"chain, then direct to {', '.join(w.name for w in direct)}"
    check = [w for w in stale if w.name not in problems]
    now_ids = dict(zip([w.name for w in check], _parallel(lambda w: _id_or_error(w, tag), check)))
    for w in stale:
        if w.name not in problems and now_ids.get(w.name) != head_id:
            problems[w.name] = ("verify", f"image ID after load is {now_ids.get(w.name) or 'absent'}, "
                                          f"not {head_id}")
    _raise_first(f"image {tag}", stale, problems, chain.command, chain.source_error)
    elapsed = time.monotonic() - t0
    for w in stale:
        report.nodes.append(NodeReport(w.name, "sent", bytes=received[w.name], seconds=elapsed, detail=head_id[:19]))
    report.bytes_sent = sent
    report.stream_seconds = chain.stream_seconds
    report.seconds = elapsed
    return report


def _docker_load(_: Worker) -> str:
    return "docker load -q"


def _id_or_error(w: Worker, tag: str) -> str | None:
    try:
        return image_id_on(w.ssh, tag, name=w.name)
    except RunError:
        return None


def image_room(size: int) -> tuple[int, int]:
    """Bytes an image copy needs free on the Docker root at its peak: (on the head, on a receiving worker).

    `docker save` writes the whole image out under the head's Docker root before it streams a byte,
    and `docker load` unpacks the whole tar under the worker's before it registers any layer (Docker
    20.10 here: a 210 MB image took 210 MB more on the sender, and peaked at 420 MB more on the
    receiver, of which 210 MB stayed)."""
    return size, 2 * size


def _image_size(tag: str) -> int | None:
    try:
        p = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", tag],
                           capture_output=True, text=True, timeout=QUERY_TIMEOUT)
        return int(p.stdout.strip()) if p.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None


def _move(fd_in: int, fd_out: int) -> int:
    """Up to CHUNK bytes from one pipe to the other; 0 at the end. splice(2) moves them inside the
    kernel (the head's CPU is the chain's first hop: no copy through Python); read/write elsewhere."""
    if hasattr(os, "splice"):
        try:
            return os.splice(fd_in, fd_out, CHUNK)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
    buf = os.read(fd_in, CHUNK)
    view = memoryview(buf)
    while view:
        view = view[os.write(fd_out, view):]
    return len(buf)


def _stream(src: list[str], dst: list[str], prog: _Progress, timeout: float | None,
            stall_timeout: float, load_timeout: float) -> tuple[int, str, str, str, bool, float]:
    """Pump src's stdout into dst's stdin, counting bytes; a watchdog kills both on stall/timeout.

    Returns (bytes, src stderr, dst stdout, dst stderr, stalled, monotonic time of the last byte)."""
    save = subprocess.Popen(src, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    sink = subprocess.Popen(dst, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outs: dict[str, bytes] = {}

    def drain(name: str, f) -> None:
        outs[name] = f.read()

    readers = [threading.Thread(target=drain, args=(n, f), daemon=True)
               for n, f in (("save_err", save.stderr), ("out", sink.stdout), ("err", sink.stderr))]
    for t in readers:
        t.start()
    sent = 0
    last_move = time.monotonic()
    start = last_move
    stop = threading.Event()
    stalled = False

    def watchdog() -> None:
        nonlocal stalled
        while not stop.wait(0.5):
            now = time.monotonic()
            if now - last_move > stall_timeout or (timeout is not None and now - start > timeout):
                stalled = True
                for p in (save, sink):
                    if p.poll() is None:
                        p.kill()
                return

    dog = threading.Thread(target=watchdog, daemon=True)
    dog.start()
    assert save.stdout and sink.stdin
    fd_in, fd_out = save.stdout.fileno(), sink.stdin.fileno()
    try:
        while True:
            n = _move(fd_in, fd_out)
            if not n:
                break
            sent += n
            last_move = time.monotonic()
            prog.update(sent)
    except (BrokenPipeError, OSError):
        if save.poll() is None:
            save.kill()
    finally:
        with contextlib.suppress(OSError):
            sink.stdin.close()
        save.stdout.close()
        streamed = time.monotonic()
        stop.set()  # the watchdog guards the stream only
    try:
        # the stream is in; the loads run now (docker load spools first), bounded by load_timeout
        try:
            sink.wait(load_timeout)
        except subprocess.TimeoutExpired:
            stalled = True
            sink.kill()
    finally:
        stop.set()
        save.wait()
        sink.wait()
        for t in readers:
            t.join(5)
    prog.update(sent, final=True)
    dec = lambda k: outs.get(k, b"").decode(errors="replace")  # noqa: E731
    return sent, dec("save_err") if save.returncode else "", dec("out"), dec("err"), stalled, streamed


# ----------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class RemoteState:
    manifest: dict[str, int]  # path under the repo folder -> size (snapshot files followed to blobs)
    refs: dict[str, str]  # ref name -> commit
    blobs: dict[str, int] = field(default_factory=dict)  # blobs/<name> -> size, every commit's


# $1 repo folder, $2 commit, $3... refs to point at the commit first (after a sync; saves a round trip)
MANIFEST_SCRIPT = r"""
cd "$1" 2>/dev/null || { printf 'END\0'; exit 0; }
c=$2; shift 2
for r; do
  mkdir -p "refs/$(dirname "$r")" && printf %s "$c" > "refs/$r.rr-tmp" && mv -f "refs/$r.rr-tmp" "refs/$r" || exit 4
done
find -L "snapshots/$c" "trees/$c.json" -type f -printf 'F\t%s\t%p\0' 2>/dev/null
[ -d blobs ] && find blobs -maxdepth 1 -type f -printf 'B\t%s\t%p\0' 2>/dev/null
[ -d refs ] && find refs -type f -exec sh -c 'for f; do printf "R\t%s\t%s\0" "${f#refs/}" "$(cat "$f")"; done' x {} + 2>/dev/null
printf 'END\0'
"""


def _remote_script(prefix: Sequence[str] | None, script: str, args: Sequence[str]) -> list[str]:
    """A script and its arguments; a remote `~/` path argument expands on the node via the shell."""
    if prefix is None:
        return ["sh", "-c", script, "rr", *[os.path.expanduser(a) for a in args]]
    words = [shlex.quote(w) for w in ("sh", "-c", script, "rr")] + [_qpath(a) for a in args]
    return [*ssh_prefix(prefix), " ".join(words)]


def remote_state(ssh_prefix: Sequence[str] | None, cache_dir: str | Path, repo: str, commit: str,
                 name: str | None = None, write_refs: Sequence[str] = ()) -> RemoteState:
    """Sizes of every file of `commit` on a node plus its refs, in ONE remote call (stat only).

    `write_refs` first points those refs at `commit` in the same call (used right after a sync)."""
    node = name or _node(ssh_prefix)
    cache_dir = str(cache_dir)
    folder = str(Path(cache_dir) / ("models--" + repo.replace("/", "--")))
    if cache_dir.startswith("~"):
        folder = cache_dir.rstrip("/") + "/models--" + repo.replace("/", "--")
    cmd = _remote_script(ssh_prefix, MANIFEST_SCRIPT, [folder, commit, *write_refs])
    proc = _call(None, cmd, node=node, step="weights manifest")
    manifest: dict[str, int] = {}
    refs: dict[str, str] = {}
    blobs: dict[str, int] = {}
    complete = False
    for rec in proc.stdout.decode(errors="surrogateescape").split("\0"):
        f = rec.split("\t")
        if f[0] in ("F", "B") and len(f) == 3 and f[1].isdigit():
            (manifest if f[0] == "F" else blobs)[f[2]] = int(f[1])
        elif f[0] == "R" and len(f) == 3:
            refs[f[1]] = f[2].strip()
        elif f[0] == "END":
            complete = True
    if not complete:
        raise RunError(f"weights manifest on {node} ended early", node=node, command=shlex.join(cmd),
                       exit_code=proc.returncode, tail=tail(proc.stderr.decode(errors="replace")))
    return RemoteState(manifest, refs, blobs)


def remote_manifest(ssh_prefix: Sequence[str] | None, cache_dir: str, repo: str, commit: str,
                    name: str | None = None) -> dict[str, int]:
    """path (under the repo's cache folder) -> size for every file of `commit` present on the node."""
    return remote_state(ssh_prefix, cache_dir, repo, commit, name).manifest


@dataclass(frozen=True)
class _Want:
    manifest: dict[str, int]  # what a complete node has
    refs: dict[str, str]  # refs that name this commit on the head
    files: list[str]  # what rsync may send: blobs, snapshot links, tree json, refs
    hashes: dict[str, str]  # snapshot path -> sha256 expected
    blob_of: dict[str, str]  # snapshot path -> blobs/<name>


def _wanted(cache_dir: Path, repo: str, commit: str) -> _Want:
    """The head's truth for this commit, from its tree listing; refuses an incomplete head snapshot."""
    state = snapshot_state(cache_dir, repo, commit)
    if not state.complete:
        raise RunError(f"weights {repo}@{commit[:12]} are not complete on the head: {state.reason}",
                       node="local", command=f"snapshot_state {repo}@{commit}")
    listing = read_tree_listing(cache_dir, repo, commit) or {}
    folder = repo_folder(cache_dir, repo)
    manifest: dict[str, int] = {}
    files: list[str] = []
    hashes: dict[str, str] = {}
    blob_of: dict[str, str] = {}
    for path, e in sorted(listing.items()):
        snap = f"snapshots/{commit}/{path}"
        manifest[snap] = e.size
        blob = f"blobs/{e.blob_name}"
        if os.path.lexists(folder / blob):
            files.append(blob)
            blob_of[snap] = blob
        files.append(snap)
        if e.lfs_sha256:
            hashes[snap] = e.lfs_sha256
    tree = f"trees/{commit}.json"
    manifest[tree] = (folder / tree).stat().st_size
    files.append(tree)
    refs: dict[str, str] = {}
    refs_dir = folder / "refs"
    if refs_dir.is_dir():
        for p in refs_dir.rglob("*"):
            if p.is_file() and p.read_text().strip() == commit:
                refs[p.relative_to(refs_dir).as_posix()] = commit  # written by content, not rsync
    return _Want(manifest, refs, sorted(set(files)), hashes, blob_of)


def _diff(want: _Want, have: RemoteState) -> list[str]:
    """Paths whose size differs or that are missing, plus refs not naming the commit."""
    return [p for p, s in want.manifest.items() if have.manifest.get(p) != s]


def _stale_refs(want: _Want, have: RemoteState) -> list[str]:
    """Refs are 40 bytes whatever they name, so they are compared by content, never by size."""
    return [r for r, c in want.refs.items() if have.refs.get(r) != c]




HASH_SCRIPT = r"""
cd "$1" || exit 3
shift
sha256sum -- "$@"
"""


def _remote_hashes(prefix: Sequence[str], folder: str, paths: Sequence[str], node: str,
                   timeout: float) -> dict[str, str]:
    """sha256 of each path on the node (following snapshot links): reads every byte, hence opt-in."""
    cmd = _remote_script(prefix, HASH_SCRIPT, [folder, *paths])
    proc = _call(None, cmd, node=node, step="weights verify (sha256sum)", timeout=timeout, ok=(0, 1))
    out: dict[str, str] = {}
    for line in proc.stdout.decode(errors="surrogateescape").splitlines():
        m = re.match(r"^\\?([0-9a-f]{64}) [ *](.*)$", line)
        if m:
            out[m.group(2)] = m.group(1)
    return out


_STATS = {"files": re.compile(r"Number of regular files transferred: ([\d,.]+)"),
          "literal": re.compile(r"Literal data: ([\d,.]+)"),
          "sent": re.compile(r"Total bytes sent: ([\d,.]+)")}


def _num(text: str, key: str) -> int:
    m = _STATS[key].search(text)
    return int(re.sub(r"[,.]", "", m.group(1))) if m else 0


@dataclass
class _NodeNeed:
    have: RemoteState
    need: list[str]  # manifest paths missing or of the wrong size
    corrupt: list[str]  # with verify: present, right size, wrong sha256 (their blobs already removed)


def sync_weights(cache_dir_local: str | Path, cache_dir_remote: str | Path, repo: str, commit: str,
                 workers: Sequence[str], ssh_prefixes: Mapping[str, Sequence[str]],
                 rsync_ssh: str | Mapping[str, str] | None = None, *, peer_ssh: Mapping[str, Sequence[str]] | None = None,
                 verify: bool = False, io_timeout: int = 120, timeout: float | None = None, parallel: int = 8,
                 progress: TextIO | None = sys.stderr) -> Report:
    """Make `repo@commit` in every worker's HF cache match the head's; send only what is missing.

    `ssh_prefixes[w]` is the ssh argv to a worker (its last word is the destination, which rsync
    uses too); `peer_ssh[w]` how the previous worker reaches it (default: the same argv);
    `rsync_ssh` is the `-e` value (one string for all, per worker, or None = the prefix without
    its destination). When two or more workers lack files, the union of what they lack leaves the
    head once as a tar stream chained through them (each extracts what it lacks, see
    distribute_image); a worker the chain did not complete, or a lone one, gets `rsync --partial`.
    Every worker's manifest is checked afterwards. Raises RunError (node, step, command, stderr
    tail) on the first failure.
    """
    t0 = time.monotonic()
    local = Path(cache_dir_local)
    want = _wanted(local, repo, commit)
    folder_local = repo_folder(local, repo)
    cache_dir_remote = str(cache_dir_remote)
    folder_remote = cache_dir_remote.rstrip("/") + "/models--" + repo.replace("/", "--")
    total = sum(want.manifest.values())
    expect = dict(want.hashes)
    if verify:  # non-LFS files are named by git sha1; compare them by sha256 with the head's copy
        for snap in want.manifest:
            if snap.startswith("snapshots/") and snap not in want.hashes:
                expect[snap] = hashlib.sha256((folder_local / snap).read_bytes()).hexdigest()

    def inspect(name: str) -> _NodeNeed:
        prefix = list(ssh_prefixes[name])
        have = remote_state(prefix, cache_dir_remote, repo, commit, name)
        need = _diff(want, have)
        corrupt: list[str] = []
        if verify:
            present = [p for p in expect if p not in need]
            got = _remote_hashes(prefix, folder_remote, present, name, timeout or max(120, total / 50e6))
            corrupt = [p for p in present if got.get(p) != expect[p]]
            if corrupt:  # same size, wrong bytes: remove the blob so it counts as missing
                blobs = sorted({want.blob_of.get(p, p) for p in corrupt})
                _call(None, _remote_script(prefix, 'cd "$1" && shift && rm -f -- "$@"', [folder_remote, *blobs]),
                      node=name, step="weights remove corrupt blobs")
        return _NodeNeed(have, need, corrupt)

    def inspect_or_error(name: str) -> _NodeNeed | RunError:
        try:
            return inspect(name)
        except RunError as exc:  # the others still get their copy; this error is raised at the end
            return exc

    crew = {w: Worker(w, list(ssh_prefixes[w]), list(peer_ssh[w]) if peer_ssh and w in peer_ssh else None)
            for w in workers}
    looked = dict(zip(workers, _parallel(inspect_or_error, list(workers), workers=parallel)))
    failed = [r for r in looked.values() if isinstance(r, RunError)]
    needs = {w: r for w, r in looked.items() if isinstance(r, _NodeNeed)}
    workers = list(needs)
    senders = [w for w in workers if needs[w].need or needs[w].corrupt]
    chained: dict[str, NodeReport] = {}
    strategy = "rsync per worker, in parallel"
    sent = 0
    if len(senders) >= 2:
        chain, chained = _chain_weights(folder_local, folder_remote, want, [crew[w] for w in senders], needs,
                                        progress, timeout)
        sent += chain.sent
        strategy = "chain (tar stream)" + (f", then rsync to {', '.join(chain.problems)}" if chain.problems else "")

    def finish(name: str) -> NodeReport:
        w0 = time.monotonic()
        prefix = list(ssh_prefixes[name])
        node_need = needs[name]
        refs = _stale_refs(want, node_need.have)
        if name not in senders:
            if not refs:
                return NodeReport(name, "up-to-date", seconds=time.monotonic() - w0)
            if _stale_refs(want, remote_state(prefix, cache_dir_remote, repo, commit, name, refs)):
                raise RunError(f"refs on {name} still differ after writing them", node=name,
                               command="write refs " + " ".join(refs))
            return NodeReport(name, "sent", seconds=time.monotonic() - w0, detail="refs " + " ".join(refs))
        report = chained.get(name)
        command = "tar stream (chain)"
        if report is None:
            e = rsync_ssh.get(name) if isinstance(rsync_ssh, Mapping) else rsync_ssh
            report, command = _rsync(folder_local, folder_remote, want.files, name, prefix, e, io_timeout,
                                     timeout or max(600, 60 + total / 10e6))
        # refs after the files, so a ref never names a commit the node does not have yet
        after = remote_state(prefix, cache_dir_remote, repo, commit, name, refs)
        left = _diff(want, after) + [f"refs/{r}" for r in _stale_refs(want, after)]
        if left:
            raise RunError(f"weights on {name} still differ after the copy: {', '.join(left[:5])}", node=name,
                           command=command, tail=report.detail[-2000:])
        if node_need.corrupt:
            again = _remote_hashes(prefix, folder_remote, node_need.corrupt, name, timeout or 600)
            still = [p for p in node_need.corrupt if again.get(p) != expect[p]]
            if still:
                raise RunError(f"weights on {name} still corrupt after re-send: {', '.join(still[:5])}",
                               node=name, command=command)
        report.seconds = time.monotonic() - w0
        return report

    nodes = _parallel(finish, list(workers), workers=parallel)
    if failed:
        raise failed[0]
    return Report("weights", strategy, nodes, bytes_sent=sent + sum(n.bytes for n in nodes if n.name not in chained),
                  seconds=time.monotonic() - t0)


def _rsync(folder_local: Path, folder_remote: str, files: Sequence[str], name: str, prefix: list[str],
           rsync_e: str | None, io_timeout: int, timeout: float) -> tuple[NodeReport, str]:
    """rsync exactly `files` (size-only, resumable) to one node; what it sent, and the command."""
    e = rsync_e or shlex.join(ssh_prefix(prefix)[:-1])  # the destination goes in rsync's own argument
    rpath = folder_remote[2:] if folder_remote.startswith("~/") else folder_remote
    argv = ["rsync", "-a", "--partial", "--size-only", "--from0", "--files-from=-", "--itemize-changes",
            "--stats", f"--timeout={io_timeout}", "-e", e,
            f"--rsync-path=mkdir -p {_qpath(folder_remote)} && rsync",
            f"{folder_local}/", f"{prefix[-1]}:{rpath}/"]
    proc = _call(None, argv, node=name, step="weights rsync", input="\0".join(files).encode(), timeout=timeout)
    text = proc.stdout.decode(errors="replace")
    # itemized: "<f..." a file sent to the node, "cL..." a link (re)made there
    changed = [ln.split(" ", 1)[1].split(" -> ")[0] for ln in text.splitlines()
               if ln[:2] in ("<f", ">f", "cL") and " " in ln]
    return NodeReport(name, "sent", bytes=_num(text, "literal"), files=_num(text, "files"),
                      detail=" ".join(changed)), shlex.join(argv)


def _chain_weights(folder_local: Path, folder_remote: str, want: _Want, chain_workers: list[Worker],
                   needs: Mapping[str, _NodeNeed], progress: TextIO | None,
                   timeout: float | None) -> tuple[_Chain, dict[str, NodeReport]]:
    """The union of what the workers lack, as one tar stream chained through them; reports of the
    nodes whose extraction succeeded (the caller still checks their manifests)."""
    senders = [w.name for w in chain_workers]

    def files_for(node: _NodeNeed) -> list[str]:
        out = []
        for p in node.need + node.corrupt:  # the snapshot link, and its blob unless the node has it whole
            blob = want.blob_of.get(p)
            if blob and (p in node.corrupt or node.have.blobs.get(blob) != want.manifest[p]):
                out.append(blob)
            out.append(p)
        return out

    wanted = {w: files_for(needs[w]) for w in senders}
    union = sorted({f for fs in wanted.values() for f in fs})
    sizes = {f: (folder_local / f).lstat().st_size for f in union if not (folder_local / f).is_symlink()}

    def take(w: Worker) -> str:
        # files of the wrong size would be kept by --skip-old-files: remove them first
        node = needs[w.name]
        wrong = sorted({f for f in wanted[w.name] if f in node.have.blobs}
                       | {p for p in node.need if p in node.have.manifest and p not in want.blob_of})
        rm = f"rm -f -- {' '.join(shlex.quote(f) for f in wrong)} && " if wrong else ""
        q = _qpath(folder_remote)
        return f"mkdir -p {q} && cd {q} && {rm}tar -x --skip-old-files --no-same-owner -f -"

    with tempfile.NamedTemporaryFile("wb", prefix="rr-weights-", suffix=".list") as listing:
        listing.write("\0".join(union).encode())
        listing.flush()
        source = ["tar", "-c", "-C", str(folder_local), "--null", "-T", listing.name, "-f", "-"]
        chain = _run_chain(source, chain_workers, take, "tar extract", "weights", sum(sizes.values()), progress,
                           timeout, 60.0, max(600.0, sum(sizes.values()) / 50e6))
    done = {}
    for w in senders:
        if w not in chain.problems:
            regular = [f for f in wanted[w] if f in sizes]
            done[w] = NodeReport(w, "sent", bytes=sum(sizes[f] for f in regular), files=len(regular),
                                 detail=" ".join(wanted[w]))
    return chain, done


def weights_current(cache_dir_local: str | Path, cache_dir_remote: str | Path, repo: str, commit: str,
                    ssh_prefix: Sequence[str] | None, name: str | None = None) -> bool:
    """The no-op check alone (a doit `uptodate`): one manifest call, True when sizes and refs match."""
    want = _wanted(Path(cache_dir_local), repo, commit)
    have = remote_state(ssh_prefix, cache_dir_remote, repo, commit, name)
    return not _diff(want, have) and not _stale_refs(want, have)
