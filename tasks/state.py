"""Run state: doit's dependency file (sqlite3) and the lock that guards it.

Every doit backend loads its state at start and writes it at the end, so two
runs at once would lose each other's records. One lock per state dir serialises
runs: the second waits (saying who holds the lock) or refuses when asked not to wait.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import IO, Any

from . import report, settings
from .errors import ConfigError, LockBusyError

_held: IO[str] | None = None


def doit_config() -> dict[str, Any]:
    """doit settings shared by dodo.py and the run-recipe CLI."""
    return {"backend": "sqlite3", "dep_file": str(dep_file()),
            "verbosity": 2, "action_string_formatting": "new", "subtasks": True}


def lock(what: str, *, wait: bool = True) -> None:
    """Take the state lock for the rest of this process (released when it exits)."""
    global _held
    if _held is not None:
        return
    path = settings.state_dir() / "lock"
    try:
        handle = open(path, "a+")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open the lock file ({exc.strerror}): it must be a plain file "
                          "that this user can write; remove it and run again") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(path)
        if not wait:
            handle.close()
            raise LockBusyError(f"another run holds {path} ({holder}); try again when it ends") from None
        report.emit(report.LockWait(holder))
        start = time.monotonic()
        fcntl.flock(handle, fcntl.LOCK_EX)
        report.emit(report.LockAcquired(time.monotonic() - start))
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "what": what}))
    handle.flush()
    _held = handle


def dep_file() -> Path:
    return settings.state_dir() / "doit.sqlite3"


def repair_dep_file() -> str:
    """Move an unreadable dependency file aside so doit builds a new one; return a note for the user ("" if fine).

    Call it holding the lock. doit's records only save re-checks: every task's "up to date" asks the Docker
    engines and the HF cache, so a fresh file costs checks, not a wrong result. Without this, doit stops
    every run with exit 3 until someone deletes the file by hand."""
    path = dep_file()
    if not os.path.lexists(path):
        return ""
    if not path.is_file():
        raise ConfigError(f"{path}: doit's dependency file is not a plain file: remove it and run again")
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            if db.execute("PRAGMA quick_check").fetchone() != ("ok",):
                raise sqlite3.DatabaseError("quick_check failed")
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        return (f"{path} could not be read ({exc}); it was moved to {aside.name} and a new one is built: "
                "every step is checked again against the Docker engine and the HF cache")
    return ""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        return f"pid {info.get('pid')}: {info.get('what')}"
    except (OSError, ValueError):
        return "unknown holder"


def record_file(folder: str, recipe_id: str) -> Path:
    """A recipe's record in a folder of the state dir (runs/, checks/), one file per id."""
    return settings.state_dir() / folder / (file_name(recipe_id) + ".json")


def file_name(recipe_id: str) -> str:
    """An id as one file name, a different one for every id (`4x/a` and `4x-a` stay apart): each byte outside
    [A-Za-z0-9_.-] as %XX, a long id (names stop at 255) as a prefix and its hash after `~`."""
    return escaped_name(recipe_id, escape="%{:02X}", mark="~")


def escaped_name(text: str, *, escape: str, mark: str, longest: int = 200) -> str:
    """`text` as a name different for every text: each byte outside [A-Za-z0-9_.-] (and a leading `.`)
    written as `escape` of it; past `longest` characters a prefix, `mark` (a character no escaped name
    holds) and the text's sha256."""
    data = text.encode("utf-8", "surrogatepass")
    escaped = "".join(chr(b) if chr(b) in _SAFE and not (i == 0 and b == ord(".")) else escape.format(b)
                      for i, b in enumerate(data))
    if len(escaped) <= longest:
        return escaped
    return escaped[:longest - 41] + mark + hashlib.sha256(data).hexdigest()[:40]


_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def read_json(path: Path) -> Any:
    """A record written by write_json, or None when it is missing or unreadable (then it is made anew)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: Any) -> None:
    """Write a record whole or not at all: a reader (or a concurrent run) never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)

