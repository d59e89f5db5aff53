"""Run state: doit's dependency file (sqlite3) and the lock that guards it.

Every doit backend loads its state at start and writes it at the end, so two
runs at once would lose each other's records. One lock per state dir serialises
runs: the second waits (saying who holds the lock) or refuses when asked not to wait.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from . import settings
from .errors import LockBusyError

_held: IO[str] | None = None


def doit_config() -> dict[str, Any]:
    """doit settings shared by dodo.py and the run-recipe CLI."""
    return {"backend": "sqlite3", "dep_file": str(settings.state_dir() / "doit.sqlite3"),
            "verbosity": 2, "action_string_formatting": "new", "subtasks": True}


def lock(what: str, *, wait: bool = True) -> None:
    """Take the state lock for the rest of this process (released when it exits)."""
    global _held
    if _held is not None:
        return
    path = settings.state_dir() / "lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(path)
        if not wait:
            handle.close()
            raise LockBusyError(f"another run holds {path} ({holder}); try again when it ends") from None
        print(f"waiting for another run to finish ({holder}) ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        fcntl.flock(handle, fcntl.LOCK_EX)
        print(f"lock acquired after {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "what": what}))
    handle.flush()
    _held = handle


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        return f"pid {info.get('pid')}: {info.get('what')}"
    except (OSError, ValueError):
        return "unknown holder"
