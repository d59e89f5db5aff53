"""The one executor: runs a step's Commands in order on their nodes, checks what each proves, records them.

Steps decide (answers.py: Noop or Commands); this module only carries the Commands out through the
node's connector (`run` streams to the user, `feed` writes the command's stdin, `send` rsyncs to the node,
`pump` streams a head command's output into it) and then asks the node whether the command's proof holds.
The node's facts go stale with each command: the executor tells the facts cache to forget them (every
node a stream reached, too), whether the command succeeded or not. Every command that changes a node
comes through here, so that hook is the only one. Every command run is recorded (RUNRECIPE_EXEC_LOG,
when set) in the very text `run-recipe plan` prints.
"""
from __future__ import annotations

import json
import threading
from typing import Iterable, TextIO

from .. import settings
from ..facts import cache as facts, docker
from .commands import Command, Input, Stream, shown
from ..connect import Carrier, Connector, Pumped, Result
from ..errors import RunError

_LOCK = threading.Lock()


def run(runner: Connector, command: Command) -> Result:
    """Run one Command on `runner` (its node must be the command's), then check its proof; a failed command
    raises RunError unless the command says the caller explains failures (check False)."""
    _record(command)
    argv = list(command.argv)
    assert not isinstance(command.stdin, Stream), "a stream runs through execute.stream"
    try:
        result = _carry_out(runner, command, argv)
    finally:
        facts.forget(runner.node)  # the facts are kept under the connector's name for the node
    if result.ok and command.proves is not None:
        _prove(runner, command)
    return result


def _carry_out(runner: Connector, command: Command, argv: list[str]) -> Result:
    """The connector call the command asks for: rsync to a node, stdin fed, or a plain run."""
    if command.sends:
        assert isinstance(runner, Carrier) and isinstance(command.stdin, Input)
        return runner.send(argv, command.stdin.data(), timeout=command.timeout, check=command.check)
    if isinstance(command.stdin, Input):
        return runner.feed(argv, command.stdin.data(), check=command.check,
                           **({"timeout": command.timeout} if command.timeout else {}))
    return runner.run(argv, stream=command.output == "stream", timeout=command.timeout, check=command.check)


def stream(link: Carrier, command: Command, progress: TextIO | None = None) -> Pumped:
    """Run a copy Command: its Stream's source here, piped into argv on the node `link` reaches. What
    reached each node is the caller's to read (a chain's status lines) and prove (image IDs, sizes)."""
    source = command.stdin
    assert isinstance(source, Stream) and link.node == command.node
    _record(command)
    try:
        return link.pump(list(source.source), list(command.argv), ahead=source.ahead(),
                         feed=source.feed() if source.feed else None, label=source.label, size=source.size,
                         progress=progress, timeout=command.timeout, stall_timeout=source.stall_timeout,
                         take_timeout=source.take_timeout)
    finally:
        for node in {link.node, *source.reaches}:
            facts.forget(node)


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
    path = settings.exec_log()
    if not path:
        return
    line = json.dumps({"node": command.node, "command": shown(command)}) + "\n"
    with _LOCK, open(path, "a", encoding="utf-8") as log:
        log.write(line)

