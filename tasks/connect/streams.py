"""Bulk bytes from a local command into another one (an ssh link or chain), counted, with a stall watchdog.

The head's CPU is the first hop of every copy: bytes move inside the kernel (splice) where it can,
and a stream that moves no byte for a while is ended, so a dead link never hangs a run.
"""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TextIO

from ..sizes import human_bytes

CHUNK = 1 << 20


class Progress:
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
    _write_all(fd_out, buf)
    return len(buf)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Watchdog:
    """Kills both ends when no byte moved for `stall_timeout`, or the stream outlived `timeout`."""

    def __init__(self, procs: tuple[subprocess.Popen, ...], stall_timeout: float, timeout: float | None) -> None:
        self.procs, self.stall_timeout, self.timeout = procs, stall_timeout, timeout
        self.start = self.last_move = time.monotonic()
        self.stop = threading.Event()
        self.stalled = False
        threading.Thread(target=self._watch, daemon=True).start()

    def moved(self) -> None:
        self.last_move = time.monotonic()

    def _watch(self) -> None:
        while not self.stop.wait(0.5):
            now = time.monotonic()
            late = self.timeout is not None and now - self.start > self.timeout
            if now - self.last_move > self.stall_timeout or late:
                self.stalled = True
                for p in self.procs:
                    if p.poll() is None:
                        p.kill()
                return


def _copy(save: subprocess.Popen, sink: subprocess.Popen, ahead: bytes, prog: Progress,
          dog: _Watchdog) -> tuple[int, float]:
    """`ahead`, then save's stdout into sink's stdin; (bytes of save, monotonic time of the last byte)."""
    assert save.stdout and sink.stdin
    fd_in, fd_out = save.stdout.fileno(), sink.stdin.fileno()
    sent = 0
    try:
        _write_all(fd_out, ahead)
        while True:
            n = _move(fd_in, fd_out)
            if not n:
                break
            sent += n
            dog.moved()
            prog.update(sent)
    except (BrokenPipeError, OSError):
        if save.poll() is None:
            save.kill()
    finally:
        with contextlib.suppress(OSError):
            sink.stdin.close()
        save.stdout.close()
        streamed = time.monotonic()
        dog.stop.set()  # the watchdog guards the stream only
    return sent, streamed


@dataclass(frozen=True)
class Pumped:
    """What one pumped stream did: bytes out of the source, the source's stderr when it failed, the
    sink's output, whether the watchdog ended it, and when its last byte went out (monotonic)."""

    sent: int
    source_error: str
    stdout: str
    stderr: str
    stalled: bool
    streamed: float


def pump(src: list[str], dst: list[str], prog: Progress, timeout: float | None,
         stall_timeout: float, load_timeout: float, ahead: bytes = b"", feed: bytes | None = None) -> Pumped:
    """Pump src's stdout into dst's stdin, after `ahead` (e.g. a chain's header); a watchdog kills both
    on stall/timeout. `feed`: what src reads on its stdin (a file list), else nothing."""
    save = subprocess.Popen(src, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL if feed is None else subprocess.PIPE)
    sink = subprocess.Popen(dst, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outs: dict[str, bytes] = {}

    def drain(name: str, f) -> None:
        outs[name] = f.read()

    def fill() -> None:
        assert save.stdin is not None
        with contextlib.suppress(OSError):
            save.stdin.write(feed or b"")
        with contextlib.suppress(OSError):
            save.stdin.close()

    threads = [threading.Thread(target=drain, args=(n, f), daemon=True)
               for n, f in (("save_err", save.stderr), ("out", sink.stdout), ("err", sink.stderr))]
    threads += [threading.Thread(target=fill, daemon=True)] if feed is not None else []
    for t in threads:
        t.start()
    dog = _Watchdog((save, sink), stall_timeout, timeout)
    sent, streamed = _copy(save, sink, ahead, prog, dog)
    try:
        # the stream is in; the loads run now (docker load spools first), bounded by load_timeout
        try:
            sink.wait(load_timeout)
        except subprocess.TimeoutExpired:
            dog.stalled = True
            sink.kill()
    finally:
        dog.stop.set()
        save.wait()
        sink.wait()
        for t in threads:
            t.join(5)
    prog.update(sent, final=True)
    dec = lambda k: outs.get(k, b"").decode(errors="replace")  # noqa: E731
    return Pumped(sent, dec("save_err") if save.returncode else "", dec("out"), dec("err"), dog.stalled, streamed)
