"""The copy chain: one stream from the head runs through a chain of workers, each taking it and
forwarding it to the next, so every link carries it once and N workers take about the time of one.

Each hop runs HOP_SCRIPT; its status lines (RRSTAT) flow back up the chain, so a failure names the
node it happened on, and a worker the previous one could not reach is reported as such (the caller
then gives it a stream of its own from the head). The chain's description travels ahead of the
stream (chain_header), so a hop's command line is the same size whatever the chain's length. Every
node command comes from the worker's link (link.py: one `shlex.join`-ed word behind ssh), so no
value reaches a remote shell unquoted.
"""
from __future__ import annotations

import base64
import contextlib
import shlex
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from ..errors import RunError
from ..fanout import each
from .link import SshLink
from .local import tail
from .streams import Pumped

STATUS = "RRSTAT"


@dataclass(frozen=True)
class Worker:
    """A node to copy to.

    `link` reaches it from the head; `peer` reaches it from another worker (the previous hop of
    the chain), e.g. the same options with a key and known_hosts valid on the workers. Giving the
    link *to* a node (not "to the next") keeps the chain correct when up-to-date nodes drop out.
    """

    name: str
    link: SshLink
    peer: SshLink | None = None

    @property
    def hop(self) -> SshLink:
        return self.peer if self.peer is not None else self.link

    @property
    def first(self) -> SshLink:
        """The link from the head, named as the node is (the executor's record, the facts it forgets)."""
        return SshLink(self.link.argv, self.name)


# The script each chain hop runs under `sh -c` (POSIX sh + GNU coreutils). Its argv is the same for
# every hop of any chain; the chain itself comes ahead of the stream, as data (chain_header):
# "RRCHAIN <bytes>\n", then one line per hop from this one on: base64 of its name, of the shell
# command that takes the stream there (docker load, tar -x), and of the command that reaches it from
# the previous hop ("-" on the first line). A hop reads its header (`read` and `head -c` take no byte
# more), keeps its own line and passes the rest on as the next hop's header, so each hop reads and
# sends only the chain after it, and every hop's command line stays the same size.
# A forwarding node copies the stream to the next hop (a fifo) and to its taker (stdout), and keeps
# feeding one when the other dies; the status lines say which. With python3 it reads and writes 1 MiB
# at a time through 1 MiB pipes, so the ssh and the taker downstream read large chunks too: measured
# ~0.3-0.5 CPU seconds less per 159 MB on each forwarding worker than `tee -p` (8 KiB), the fallback.
# Each writer opens the fifo itself (an open meets the reader's, so it never waits on a reader gone):
# python3 writes the next header first; with tee, the next hop's side puts the header ahead.
HOP_SCRIPT = r"""# runrecipe copy-chain hop
set -u
name=?
fail() { echo "RRSTAT take $name 97 $(printf %s "$1" | base64 | tr -d '\n')"; exit 97; }
d=$(mktemp -d) || fail 'mktemp failed'
trap 'rm -rf "$d"' EXIT
IFS=' ' read -r magic size || fail 'no chain header'
case "$magic:$size" in RRCHAIN:*[!0-9]*|RRCHAIN:) fail 'bad chain header' ;; RRCHAIN:*) ;; *) fail 'bad chain header' ;; esac
head -c "$size" >"$d/chain"
[ "$(wc -c <"$d/chain")" -eq "$size" ] || fail 'chain header cut short'
IFS=' ' read -r name take x <"$d/chain" || fail 'empty chain header'
name=$(printf %s "$name" | base64 -d) && take=$(printf %s "$take" | base64 -d) || fail 'bad chain header'
sed 1d "$d/chain" >"$d/rest"
next=
if [ -s "$d/rest" ]; then
  IFS=' ' read -r next x fwd <"$d/rest"
  next=$(printf %s "$next" | base64 -d) && fwd=$(printf %s "$fwd" | base64 -d) || fail 'bad chain header'
  { echo "RRCHAIN $(wc -c <"$d/rest")" && cat "$d/rest"; } >"$d/h" && mkfifo "$d/f" || fail 'no room for the next hop'
fi
dup_py='import fcntl, os, sys
def put(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
outs = [1, os.open(sys.argv[1], os.O_WRONLY)]
for fd in [0] + outs:
    try:
        fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ
    except OSError:
        pass
try:
    put(outs[1], open(sys.argv[2], "rb").read())
except OSError:
    outs.pop()
try:
    while outs:
        data = os.read(0, 1 << 20)
        if not data:
            break
        for fd in list(outs):
            try:
                put(fd, data)
            except OSError:
                outs.remove(fd)
except OSError as e:
    sys.exit("forwarding: %s" % e)'
if [ -z "$next" ]; then
  sh -c "$take" >"$d/out" 2>"$d/err"
  rc=$?
elif command -v python3 >/dev/null 2>&1; then
  sh -c "$fwd" <"$d/f" &
  fp=$!
  python3 -c "$dup_py" "$d/f" "$d/h" | sh -c "$take" >"$d/out" 2>"$d/err"
  rc=$?
else
  { cat "$d/h"; cat "$d/f"; } | sh -c "$fwd" &
  fp=$!
  tee -p "$d/f" | sh -c "$take" >"$d/out" 2>"$d/err"
  rc=$?
fi
echo "RRSTAT take $name $rc $(tail -c 600 "$d/err" | base64 | tr -d '\n')"
if [ -n "$next" ]; then
  wait "$fp"
  echo "RRSTAT fwd $next $? -"
fi
exit "$rc"
"""
HOP = ["sh", "-c", HOP_SCRIPT, "hop"]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def hop_argv(w: Worker, first: bool) -> list[str]:
    """argv that reaches `w` (from the head, or from the previous worker) and runs its hop. Its size
    does not depend on the chain's length: the chain travels in the stream (chain_header)."""
    return w.link.argv_for(HOP) if first else w.hop.argv_for(HOP, from_head=False)


def chain_header(chain: Sequence[Worker], take: Callable[[Worker], str]) -> bytes:
    """What the head sends ahead of the stream: each hop's name, taker and how the previous hop
    reaches it (see HOP_SCRIPT), one line per hop, all base64."""
    lines = [" ".join((_b64(w.name), _b64(take(w)), _b64(shlex.join(hop_argv(w, first=False))) if i else "-"))
             for i, w in enumerate(chain)]
    body = "".join(line + "\n" for line in lines).encode()
    return b"RRCHAIN %d\n%s" % (len(body), body)


def open_hops(chains: Iterable[Sequence[Worker]]) -> None:
    """Open the worker-to-worker connections of these chains, each pair once, all at once.

    Before a stream, each hop's handshake (~0.25 s) would otherwise hold the whole stream up in turn;
    a run opens them right after preflight, so its copies find them up. A hop that cannot connect
    fails later, in the stream, where its error is reported (and the head takes over that worker)."""
    pairs = {(a.name, b.name): (a, b) for chain in chains for a, b in zip(chain, chain[1:])}

    def one(pair: tuple[Worker, Worker]) -> None:
        a, b = pair
        with contextlib.suppress(RunError):
            a.link.call(b.hop.argv_for(["true"], from_head=False), node=a.name, step="ssh to the next worker")
    each(one, list(pairs.values()))


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
class Chain:
    """What one chained stream did: bytes out of the head, and per node what went wrong (step, why)."""

    sent: int
    problems: dict[str, tuple[str, str]]
    stream_seconds: float
    command: str
    source_error: str


def read_chain(pumped: Pumped, stale: Sequence[Worker], step: str, stall_timeout: float, command: str,
               started: float) -> Chain:
    """What a stream through the chain of `stale` workers did, from the hops' status lines: per node,
    the first problem in chain order (a broken hop into it, else its taker, else a missing status)."""
    takes, fwds = _parse_status(pumped.stdout)
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
            why = "stalled: no byte moved for %.0f s" % stall_timeout if pumped.stalled else "the stream ended early"
            err = pumped.stderr
            problems[w.name] = ("stream", why + (f"; ssh to {stale[0].name}: {tail(err)}" if err.strip() else ""))
    return Chain(pumped.sent, problems, pumped.streamed - started, command, pumped.source_error)


def raise_first(what: str, stale: Sequence[Worker], problems: dict[str, tuple[str, str]], command: str,
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


def unreached(stale: Sequence[Worker], chain: Chain) -> list[Worker]:
    """Workers the stream did not reach through the previous worker (its link, sshd, or no SSH between
    workers at all): the head may still reach them directly."""
    return [w for i, w in enumerate(stale) if i and chain.problems.get(w.name, ("",))[0] == "stream"]

