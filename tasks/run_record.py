"""The run record (`.runrecipe/runs/<recipe>.json`): what a launch started where, and the stop mark.

A launch writes the record once its server answers; `status` shows it and the watcher reads it.
`run-recipe stop` marks the record before any container goes, so a watcher ends the run instead of
re-forming it. A stop can land while a launch is still starting the server (a watcher's re-form,
or a slow first start), and that launch must not undo it: it reads the mark as it begins
(`stop_mark`), and before it records its server it checks the mark is still that one
(`refuse_if_stopped`); if not, it removes what it started. The watcher's own re-forms refuse to
start at all over a mark (the user's next launch clears it by writing a fresh record).
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

from . import settings, state
from .errors import RunError


class StoppedError(RunError):
    """`run-recipe stop` ran for this recipe while (or before) this launch started it."""


def path(recipe_id: str) -> Path:
    return state.record_file("runs", recipe_id)


def read(recipe_id: str) -> dict | None:
    return state.read_json(path(recipe_id))


def save(recipe_id: str, data: dict) -> None:
    state.write_json(path(recipe_id), data)


def stop_mark(recipe_id: str) -> str | None:
    """The mark of the latest `run-recipe stop` still on the record (None: not stopped since its launch)."""
    record = read(recipe_id) or {}
    return record.get("stop_id") or record.get("stopped")


def mark_stopped(recipe_id: str | None) -> None:
    """Mark one recipe's record stopped (made if the recipe has none yet: a first launch may be under
    way), or every record when no recipe is named (`stop --all`)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    ids = [recipe_id] if recipe_id else [p.stem for p in sorted((settings.state_dir() / "runs").glob("*.json"))]
    for rid in ids:
        record = read(rid) or ({"recipe": rid} if recipe_id else None)
        if record is not None:
            save(rid, {**record, "stopped": now, "stop_id": uuid.uuid4().hex})


def refuse_if_stopped(recipe_id: str, seen: str | None, *, reform: bool) -> None:
    """Raise StoppedError when a stop landed since `seen` (the mark as this launch began), or, for the
    watcher's re-form, when the run is marked stopped at all."""
    mark = stop_mark(recipe_id)
    if mark and (mark != seen or reform):
        stopped = (read(recipe_id) or {}).get("stopped", "?")
        raise StoppedError(f"{recipe_id}: stopped with `run-recipe stop` at {stopped}"
                           + ("; the watcher does not start it again" if reform and mark == seen else
                              " while this run started it; what it started is removed"))
