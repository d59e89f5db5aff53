"""Answers kept between runs, filed under the hash of everything they depend on.

A no-op re-run renders the same launch script from the same template and values, and checks the
same text with `bash -n`, every time: ~20 ms of Jinja import and compile plus a bash process, a
tenth of the whole run. Kept here, keyed by content, they cost one file read. A key names every
input, so a changed template, filter code or value is a different key, never a stale answer; an
entry is written to a temporary file and renamed into place, so a reader sees all of it or none.

The store is a folder in the project's state dir (the same trust as doit's records beside it).
Where it cannot be used (a read-only checkout) every answer is worked out again: a memo is never
an error.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from . import settings
from .errors import ConfigError

KEEP = 256  # entries; the oldest go when a new one would pass this


def key(*parts: str | bytes) -> str:
    """One hash over the parts, each length-prefixed so that ("ab", "c") and ("a", "bc") differ."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(b"%d:" % len(data))
        h.update(data)
    return h.hexdigest()


def get(digest: str) -> str | None:
    """The text filed under `digest`, byte for byte (no newline translation: a `\r` stays one), or None."""
    folder = _folder()
    try:
        return (folder / digest).read_bytes().decode("utf-8", "surrogatepass") if folder else None
    except (OSError, UnicodeDecodeError):
        return None


def put(digest: str, text: str) -> None:
    """File `text` under `digest` (atomically); silently skipped where the store cannot be written."""
    folder = _folder()
    if folder is None:
        return
    try:
        with tempfile.NamedTemporaryFile("wb", dir=folder, prefix=".new-", delete=False) as tmp:
            tmp.write(text.encode("utf-8", "surrogatepass"))
        os.replace(tmp.name, folder / digest)
        _prune(folder)
    except OSError:
        return


def _prune(folder: Path) -> None:
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) <= KEEP:
        return
    entries.sort(key=lambda p: p.stat().st_mtime)
    for old in entries[:len(entries) - KEEP]:
        old.unlink(missing_ok=True)


def _folder() -> Path | None:
    try:
        folder = settings.state_dir() / "memo"
        folder.mkdir(exist_ok=True)
        return folder
    except (ConfigError, OSError):
        return None

