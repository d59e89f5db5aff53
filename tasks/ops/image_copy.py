"""The image to cluster workers: one `docker save` stream through a chain of the workers that lack it.

Every link carries the image once, so N workers take about the time of one (a star from the head
would push N copies through the head's link); the chain itself is tasks/connect/chain.py. `docker load` from
stdin spools the whole tar before loading, so all loads then run at the same time, each on its node.
No temp file of ours (Docker's save and load spool on their own: image_room). Each worker counts as
done only after its image ID equals the head's. A worker the previous one could not reach gets its
own stream from the head afterwards. The stream is a Command (send_command, via copy_chain.py): `answer`
names it for `run-recipe plan`, and the executor runs that same command.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from typing import Callable, Mapping, Sequence, TextIO

from ..connect.chain import Chain, Worker, raise_first, unreached
from ..connect import HERE, QUERY_TIMEOUT, Link, tail
from . import answers as steps
from .answers import Answer
from .commands import Command
from .copy_chain import NodeReport, Report, chain_command, run_chain
from ..errors import RunError
from ..fanout import each

LOAD = "docker load -q"


# ----------------------------------------------------------------------------- image
def image_id_on(link: Link, ref: str, timeout: float = QUERY_TIMEOUT, name: str | None = None) -> str | None:
    """The image ID `ref` has on a node (HERE = this machine), or None when it has no such image.

    `name` is how errors call the node (default: the link's label)."""
    node = name or link.label
    proc = link.call(["docker", "image", "inspect", "--format", "{{.Id}}", ref], node=node,
                     step="image inspect", timeout=timeout, ok=(0, 1))
    if proc.returncode == 0:
        return proc.stdout.decode().strip().splitlines()[-1]
    err = proc.stderr.decode(errors="replace")
    if "No such image" in err or "No such object" in err:
        return None
    raise RunError(f"image inspect failed on {node}", node=node,
                   command=shlex.join(link.argv_for(["docker", "image", "inspect", ref])),
                   exit_code=1, tail=tail(err))


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
    ids = each(lambda w: image_id_on(w.link, tag, name=w.name), list(workers))
    report = Report("image", "chain")
    stale = [w for w, i in zip(workers, ids) if i != head_id]
    report.nodes = [NodeReport(w.name, "up-to-date", detail=head_id[:19]) for w, i in zip(workers, ids) if i == head_id]
    if not stale:
        report.seconds = time.monotonic() - t0
        return report
    size = _head_ready(tag, head_id)
    if before_send is not None:
        before_send(stale, size)
    go = dict(size=size, timeout=timeout, stall_timeout=stall_timeout, take_timeout=load_timeout)
    chain = run_chain(send_command(tag, stale, **go), stale, "docker load", progress)
    if chain.source_error and not chain.problems and chain.sent == 0:
        raise RunError(f"docker save {tag} failed on the head", node="local", command=f"docker save {tag}",
                       tail=tail(chain.source_error))
    received = {w.name: chain.sent for w in stale}  # what reached each node
    sent = chain.sent + _direct(tag, stale, chain, received, report, go, progress)
    _verify_ids(tag, head_id, stale, chain.problems)
    raise_first(f"image {tag}", stale, chain.problems, chain.command, chain.source_error)
    elapsed = time.monotonic() - t0
    for w in stale:
        report.nodes.append(NodeReport(w.name, "sent", bytes=received[w.name], seconds=elapsed, detail=head_id[:19]))
    report.bytes_sent = sent
    report.stream_seconds = chain.stream_seconds
    report.seconds = elapsed
    return report


def _head_ready(tag: str, head_id: str) -> int | None:
    """The image's size, after checking the head holds `head_id` under `tag` (what is sent)."""
    local_id = image_id_on(HERE, tag)
    if local_id != head_id:
        raise RunError(f"the head's {tag} is {local_id or 'absent'}, not {head_id}: rebuild or re-pull it first",
                       node="local", command=f"docker image inspect {tag}")
    return _image_size(tag)


def answer(tag: str, node: str, head_id: str | None, size: int, chain: Sequence[Worker],
           ids: Mapping[str, str | None]) -> Answer:
    """The image step's answer for `node` from the image IDs on the head and on each copy worker (`chain`,
    in order; `ids` by name): Noop when its ID is the head's; else the stream that brings the image to it
    and the stale workers after it, or none when an earlier stale worker's stream carries it on."""
    there = ids.get(node)
    stale = [w for w in chain if ids.get(w.name) != head_id]
    if not head_id or there == head_id or node not in [w.name for w in stale]:
        return steps.image_copy(tag, node, head_id, there, size)
    if stale[0].name != node:
        return steps.image_copy(tag, node, head_id, there, size, carried_by=stale[0].name)
    return steps.image_copy(tag, node, head_id, there, size, commands=(send_command(tag, stale),))


def send_command(tag: str, stale: Sequence[Worker], **bounds) -> Command:
    """`docker save` on the head, streamed once through the stale workers, each loading it (`bounds`:
    size, timeout, stall_timeout, take_timeout as chain_command takes them)."""
    return chain_command(("docker", "save", tag), stale, lambda _: LOAD, "image", **bounds)


def _direct(tag: str, stale: Sequence[Worker], chain: Chain, received: dict[str, int], report: Report,
            go: dict, progress: TextIO | None) -> int:
    """Streams of their own from the head (a star, in parallel) to the workers the chain did not reach
    through the previous worker; their problems replace the chain's. Returns the bytes sent."""
    direct = unreached(stale, chain)
    if not direct:
        return 0

    def one(w: Worker) -> Chain:
        return run_chain(send_command(tag, [Worker(w.name, w.link)], **go), [Worker(w.name, w.link)], "docker load",
                         progress)

    sent = 0
    for w, again in zip(direct, each(one, direct)):
        sent += again.sent
        received[w.name] = again.sent
        chain.problems.pop(w.name)
        chain.problems.update(again.problems)
    report.strategy = f"chain, then direct to {', '.join(w.name for w in direct)}"
    return sent


def _verify_ids(tag: str, head_id: str, stale: Sequence[Worker], problems: dict[str, tuple[str, str]]) -> None:
    """A worker counts as done only when its image ID is the head's: a problem otherwise."""
    check = [w for w in stale if w.name not in problems]
    now_ids = dict(zip([w.name for w in check], each(lambda w: _id_or_error(w, tag), check)))
    for w in stale:
        if w.name not in problems and now_ids.get(w.name) != head_id:
            problems[w.name] = ("verify", f"image ID after load is {now_ids.get(w.name) or 'absent'}, "
                                          f"not {head_id}")


def _id_or_error(w: Worker, tag: str) -> str | None:
    try:
        return image_id_on(w.link, tag, name=w.name)
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

