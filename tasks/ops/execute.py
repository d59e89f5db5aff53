"""The one executor: runs a step's Commands in order on their nodes, checks what each proves, records them.

Steps decide (steps.py answers Noop or Commands); this module only carries the Commands out through the
node's runner (`run` streams to the user, `feed` writes the command's stdin) and then asks the node
whether the command's proof holds. The node's facts go stale with each command: the connector announces
run and feed, and the facts cache forgets that node (connect/changes.py), here as for every other caller.
Every command run is
recorded (`ran`, and RUNRECIPE_EXEC_LOG when set) in the very text `run-recipe plan` prints.
"""
from __future__ import annotations

import json
import threading
from typing import Iterable, Mapping

from .. import settings
from ..facts import docker
from .commands import Command, shown
from ..connect import Connector, Result
from ..errors import RunError

ran: list[tuple[str, str]] = []  # (node, shown text) of every command run by this process, in order
_LOCK = threading.Lock()


def run(runner: Connector, command: Command) -> Result:
    """Run one Command on `runner` (its node must be the command's), then check its proof; a failed command
    raises RunError unless the command says the caller explains failures (check False)."""
    _record(command)
    argv = list(command.argv)
    if command.stdin is not None:
        result = runner.feed(argv, command.stdin.data(), check=command.check,
                             **({"timeout": command.timeout} if command.timeout else {}))
    else:
        result = runner.run(argv, stream=command.output == "stream", timeout=command.timeout, check=command.check)
    if result.ok and command.proves is not None:
        _prove(runner, command)
    return result


def run_all(runners: Mapping[str, Connector], commands: Iterable[Command]) -> list[Result]:
    """Every command in order, each on its node's runner; stops at the first failure (it raises)."""
    return [run(runners[c.node], c) for c in commands]


def run_each(runner: Connector, commands: Iterable[Command]) -> list[Result]:
    """Every command in order on this one runner (commands built for its node); stops at the first failure."""
    return [run(runner, c) for c in commands]


def _prove(runner: Connector, command: Command) -> None:
    """The command reported success; the node must now show what it promised."""
    proof = command.proves
    assert proof is not None
    info = docker.image_info(runner, proof.image)
    if not info or (proof.label and info["labels"].get(proof.label) != proof.value):
        raise RunError(f"{command.argv[0]} {command.argv[1]} reported success but {proof.image} does not carry "
                       f"the new build ({proof.text()} does not hold)", node=runner.node, command=shown(command))


def _record(command: Command) -> None:
    text = shown(command)
    with _LOCK:
        ran.append((command.node, text))
        path = settings.exec_log()
        if path:
            with open(path, "a", encoding="utf-8") as log:
                log.write(json.dumps({"node": command.node, "command": text}) + "\n")

