"""How the front renders the library's events: as today's text lines, or as one JSON object per line.

Part of the command line (it writes). Every entry point (`run-recipe`, `python -m tasks`, dodo.py)
calls `install_for_environment()` once; RUNRECIPE_EVENTS=json turns the progress lines into JSON lines
on stderr, so a command's own stdout (`status --json`, `plan --json`) is never mixed with them.
"""
from __future__ import annotations

import json
import os
import sys
from typing import TextIO

from .. import report
from ..masking import scrub

ENV = "RUNRECIPE_EVENTS"


class TextReporter(report.Plain):
    """The terminal's rendering: each event's text, byte for byte what the tool always wrote, on the
    stream it always used (report.Plain does exactly that; the front names it as its choice)."""


class JsonReporter:
    """One JSON object per event and line (`{"event": kind, "text": ..., fields...}`), on stderr by
    default; secrets are scrubbed from every string as they are from the text lines."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def emit(self, event: report.Event) -> None:
        fields = {k: scrub(v) if isinstance(v, str) else v for k, v in event.fields().items()}
        stream = self.stream or sys.stderr
        stream.write(json.dumps(fields, default=str) + "\n")
        stream.flush()

    def live(self) -> TextIO | None:
        return None  # no bars between JSON lines


def for_environment(environ: dict[str, str] | None = None) -> report.Reporter:
    """The reporter RUNRECIPE_EVENTS asks for: `json`, else text (unset or `text`)."""
    choice = (os.environ if environ is None else environ).get(ENV, "text").strip().lower()
    if choice == "json":
        return JsonReporter()
    if choice in ("", "text"):
        return TextReporter()
    from ..errors import ConfigError

    raise ConfigError(f"{ENV}={choice!r}: use `text` (the default) or `json`")


def install_for_environment() -> report.Reporter:
    """Install the reporter the environment asks for, process-wide; returns it."""
    reporter = for_environment()
    report.install(reporter)
    return reporter

