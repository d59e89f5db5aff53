"""What a failed launch leaves for a person: every node's whole container log, and an error that names
the root cause and where those logs are.

A launch that fails removes every container it started, and their logs went with them; the cause was
then lost (issue #24: a two-node group died of a missing C++ compiler, and only vLLM's generic last
line was left). So before that removal each node's log is read whole and kept in the state folder:

    <state>/logs/<recipe>/<UTC time>/<node>-<container>.log      (the newest KEEP launches per recipe)

Secrets are scrubbed before a byte is written: vLLM logs its non-default arguments, --api-key among them.
"""
from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

from .. import masking, settings, state
from ..facts import docker
from ..connect import Connector, tail
from ..errors import ConfigError, NotReadyError, RunError
from ..plan import Plan

FOLDER = "logs"
KEEP = 20  # failed launches kept per recipe: a watcher's crash loop must not fill the disk


def failure(plan: Plan, containers: Sequence[tuple[Connector, str]], failing: int, what: str, *,
            command: str = "", code: int | None = None) -> NotReadyError:
    """The error of a launch whose server cannot become ready, made once every node's log is kept.

    `containers` are the run's (node, container id), `failing` the index of the one that failed. With
    `command` (the server died: its container exited or its engine is dead) the error names the root
    cause read from that container's whole log; a server that is only slow gets none."""
    from . import crash_causes

    logs, where = keep(plan, containers)
    runner = containers[failing][0]
    log = logs[failing] or ""
    cause = f"\n  {crash_causes.one_line(log, code)}" if command else ""
    return NotReadyError(f"{what}{cause}\n  {where}", node=runner.node, command=command, exit_code=code,
                         tail=tail(log, docker.LOG_TAIL))


def keep(plan: Plan, containers: Sequence[tuple[Connector, str]]) -> tuple[list[str | None], str]:
    """Each container's whole log, scrubbed of secrets (None when its node could not give it), and a line
    saying where they are kept, or why they could not be."""
    # masking knows the run's secrets (HF_TOKEN, .env, -e, --api-key); a recipe's own env adds its own
    secrets = [value for key, value in plan.recipe.env.items() if masking.is_secret_key(key)]
    logs: list[str | None] = []
    unread = []
    for runner, cid in containers:
        try:
            logs.append(masking.scrub(docker.logs(runner, cid), secrets))
        except RunError as exc:
            logs.append(None)
            unread.append(f"{runner.node}: {str(exc).splitlines()[0]}")
    try:
        folder = save(plan.recipe.id, [(runner.node, plan.container_name, log)
                                       for (runner, _), log in zip(containers, logs) if log is not None])
    except (OSError, ConfigError) as exc:
        return logs, f"the containers' logs could not be kept: {exc}"
    return logs, f"every node's full log is kept in {folder}" + (f" (not read: {'; '.join(unread)})" if unread else "")


def save(recipe_id: str, logs: Iterable[tuple[str, str, str]]) -> Path:
    """Write each (node, container, log) into a new folder of the recipe's logs; the oldest folders
    beyond KEEP go."""
    base = settings.state_dir() / FOLDER / state.file_name(recipe_id)
    folder = base / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    folder.mkdir(parents=True)
    for node, container, log in logs:
        (folder / f"{state.file_name(node)}-{state.file_name(container)}.log").write_text(log, encoding="utf-8")
    for old in sorted(p for p in base.iterdir() if p.is_dir())[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return folder

