"""The run record (`.runrecipe/runs/<recipe>.json`): what a launch started where, and the stop mark.

A launch writes the record once its server answers; `status` shows it and the watcher reads it.
`run-recipe stop` marks the record before any container goes, so a watcher ends the run instead of
re-forming it. A stop can land while a launch is still starting the server (a watcher's re-form,
or a slow first start), and that launch must not undo it: it reads the mark as it begins
(`stop_mark`), and as it records its server (under the records' lock: `update`) it checks the
mark is still that one (`refuse_if_stopped`); if not, it removes what it started. The watcher's own
re-forms refuse to start at all over a mark (the user's next launch clears it with a fresh record).
"""
from __future__ import annotations

import fcntl
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .. import settings, state
from ..errors import RunError


class StoppedError(RunError):
    """`run-recipe stop` ran for this recipe while (or before) this launch started it."""


def path(recipe_id: str) -> Path:
    return state.record_file("runs", recipe_id)


def read(recipe_id: str) -> dict | None:
    return state.read_json(path(recipe_id))


def save(recipe_id: str, data: dict) -> None:
    state.write_json(path(recipe_id), data)


def update(recipe_id: str, change: Callable[[dict], dict | None]) -> None:
    """Read, change and write one record while no other process does (a stop and a launch's last
    write could otherwise each write over the other); `change` gets {} for a missing record and may
    return None to leave it as it is. Its exceptions leave the record untouched."""
    folder = settings.state_dir() / "runs"
    folder.mkdir(exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        new = change(read(recipe_id) or {})
        if new is not None:
            save(recipe_id, new)


def begin(recipe_id: str) -> dict:
    """The record as a launch begins ({} if none). A recipe without one gets {"recipe": id} on disk,
    so that a `stop --all` during its first launch marks it too."""
    seen: dict = {}

    def keep(record: dict) -> dict | None:
        seen.update(record)
        return None if record else {"recipe": recipe_id}

    update(recipe_id, keep)
    return seen


def stop_mark(record: dict) -> str | None:
    """The mark of the latest `run-recipe stop` still on a record (None: not stopped since its launch)."""
    return record.get("stop_id") or record.get("stopped")


def mark_stopped(recipe_id: str | None) -> None:
    """Mark one recipe's record stopped (made if the recipe has none yet: a first launch may be under
    way), or every record when no recipe is named (`stop --all`)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def mark(record: dict) -> dict | None:
        if not record and not recipe_id:
            return None  # stop --all: a record that went meanwhile is not made again
        return {**(record or {"recipe": recipe_id}), "stopped": now, "stop_id": uuid.uuid4().hex}

    for rid in [recipe_id] if recipe_id else recorded():
        update(rid, mark)


def recorded() -> list[str]:
    """The recipes that have a record: each record names its own (its file name only encodes it)."""
    records = (state.read_json(p) for p in sorted((settings.state_dir() / "runs").glob("*.json")))
    return [r["recipe"] for r in records if isinstance(r, dict) and isinstance(r.get("recipe"), str)]


def refuse_if_stopped(recipe_id: str, record: dict, seen: str | None, *, reform: bool) -> None:
    """Raise StoppedError when `record` holds a stop that landed since `seen` (the mark as this launch
    began), or, for the watcher's re-form, any stop mark at all."""
    mark = stop_mark(record)
    if mark and (mark != seen or reform):
        raise StoppedError(f"{recipe_id}: stopped with `run-recipe stop` at {record.get('stopped', '?')}"
                           + ("; the watcher does not start it again" if reform and mark == seen else
                              " while this run started it; what it started is removed"))

