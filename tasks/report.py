"""Events and the reporter in force: library code says what happened; the front decides how it looks.

A step never prints. It calls `emit(SomeEvent(...))`; the reporter the front installed renders the
event as text (exactly the line the tool has always written, on the same stream) or as one JSON object
(tasks/cli/events.py). Each event carries its text plus the fields `--json` shows.

The reporter in force is a ContextVar (`using(reporter)` for a block, e.g. a test) over a process-wide
one (`install(reporter)`, what the entry points call: worker threads do not inherit a ContextVar, and
steps emit from thread pools). With neither, a plain writer puts the text on the event's stream, so a
script or test that imports tasks and calls a step directly still sees what it always saw.
"""
from __future__ import annotations

import contextlib
import contextvars
import sys
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Iterator, Protocol, TextIO


@dataclass(frozen=True)
class Event:
    """What every event has: a kind (its JSON name), its text (its template over its fields), and
    whether that text belongs on stdout (results a person reads) rather than stderr (progress)."""

    kind: ClassVar[str] = "note"
    template: ClassVar[str] = "{line}"
    on_stdout: ClassVar[bool] = False

    @property
    def text(self) -> str:
        return self.template.format(**asdict(self))

    @property
    def stdout(self) -> bool:
        return self.on_stdout

    def fields(self) -> dict[str, Any]:
        """The event as JSON shows it: its kind, its text, and its own structured fields (the `line`
        an event was given is its text, and where it is written is the text renderer's concern)."""
        own = {k: v for k, v in asdict(self).items() if k not in ("line", "to_stdout")}
        return {"event": self.kind, "text": self.text, **own}


@dataclass(frozen=True)
class Note(Event):
    """A progress line with no structure worth a field (a step's status, a table before a run)."""

    line: str
    to_stdout: bool = False

    @property
    def stdout(self) -> bool:
        return self.to_stdout


@dataclass(frozen=True)
class Warn(Event):
    """Something the user should know that does not stop the run."""

    kind: ClassVar[str] = "warning"
    template: ClassVar[str] = "Warning: {message}"
    message: str


@dataclass(frozen=True)
class Failed(Event):
    """A step failed with a message the user reads instead of a traceback."""

    kind: ClassVar[str] = "error"
    template: ClassVar[str] = "Error: {message}"
    message: str


@dataclass(frozen=True)
class LockWait(Event):
    """Another run holds the state lock; this one waits for it."""

    kind: ClassVar[str] = "lock_wait"
    template: ClassVar[str] = "waiting for another run to finish ({holder}) ..."
    holder: str


@dataclass(frozen=True)
class LockAcquired(Event):
    """The lock came free after `seconds` of waiting."""

    kind: ClassVar[str] = "lock_acquired"
    template: ClassVar[str] = "lock acquired after {seconds:.1f} s"
    seconds: float


# The events below carry the line their emitter has always built, plus the fields JSON shows.
@dataclass(frozen=True)
class BytesMoved(Event):
    """A copy to other nodes finished (an image or weights): who got it and how many bytes went."""

    kind: ClassVar[str] = "bytes_moved"
    on_stdout: ClassVar[bool] = True
    line: str
    what: str
    sent_to: tuple[str, ...] = ()
    bytes: int = 0


@dataclass(frozen=True)
class Downloaded(Event):
    """A snapshot is complete in the HF cache: what was fetched for it (0 files when it already was)."""

    kind: ClassVar[str] = "downloaded"
    line: str
    repo: str
    commit: str
    files: int
    bytes: int
    seconds: float


@dataclass(frozen=True)
class StepStarted(Event):
    """A server's containers started; the run now waits for its endpoint."""

    kind: ClassVar[str] = "started"
    line: str
    container: str
    endpoint: str
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ready(Event):
    """A server (or gateway) answers at its endpoint."""

    kind: ClassVar[str] = "ready"
    line: str
    endpoint: str
    model: str = ""


class Reporter(Protocol):
    """Whatever renders events: a terminal, a JSON stream, a test's list. It may also have `live()`,
    the stream a progress bar may draw on (None: no bars), which live_stream() asks."""

    def emit(self, event: Event) -> None: ...


class Plain:
    """The text of each event on its stream: stdout for results a person reads (copy reports), stderr
    for progress. The streams default to the sys ones looked up at write time, so capture and
    redirection keep working. It is today's bytes, and what runs when no front installed a reporter."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out, self.err = out, err

    def emit(self, event: Event) -> None:
        stream = (self.out or sys.stdout) if event.stdout else (self.err or sys.stderr)
        stream.write(event.text + "\n")
        stream.flush()

    def live(self) -> TextIO | None:
        return self.err or sys.stderr


class Collect:
    """Keeps the events (tests, and a front that wants them after the call)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def live(self) -> TextIO | None:
        return None


_installed: Reporter = Plain()
_current: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("runrecipe_reporter", default=None)


def install(reporter: Reporter) -> Reporter:
    """The process-wide reporter (what the entry points call); returns the one it replaced."""
    global _installed
    before, _installed = _installed, reporter
    return before


@contextlib.contextmanager
def using(reporter: Reporter) -> Iterator[Reporter]:
    """`reporter` receives this context's events (in this thread) until the block ends."""
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)


def current() -> Reporter:
    """The reporter in force here."""
    return _current.get() or _installed


def emit(event: Event) -> None:
    """Hand `event` to the reporter in force."""
    current().emit(event)


def say(line: str) -> None:
    """A plain progress line on stderr (a Note): the short form for a step's status lines."""
    emit(Note(line))


def live_stream() -> TextIO | None:
    """Where a live progress display (a bar, a byte counter) may draw, or None when the reporter has
    no terminal (JSON, a test's collector): drawing is the reporter's business, not the step's."""
    live = getattr(current(), "live", None)
    return live() if live else None

