"""What runs: a Command is data (argv, which node, what it reads on stdin, what it proves afterwards).

Steps answer with Commands (steps.py); one executor runs them (execute.py); `run-recipe plan` prints
them with `shown`, the same text the executor records, so what the plan shows is what then runs.
Nothing here touches a machine.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Callable, Union

from ..masking import scrub

LOCAL = "local"


@dataclass(frozen=True)
class Input:
    """What a command reads on stdin: rendered text (a script, a build context) or a secret env file.

    `what` is all a person sees (a plan never prints the bytes, so a secret input stays out of sight);
    `data` makes the bytes when the command runs (a build context is staged only then)."""

    what: str
    data: Callable[[], bytes] = field(compare=False, repr=False, default=lambda: b"")
    secret: bool = False


@dataclass(frozen=True)
class Proof:
    """What holds on the node after the command: image `image` exists (with label `label`=`value` when given)."""

    image: str
    label: str = ""
    value: str = ""

    def text(self) -> str:
        return f"{self.image} exists" + (f" labelled {self.label}={self.value}" if self.label else "")


@dataclass(frozen=True)
class Command:
    """One command on one node. `output`: "stream" shows it to the user as it comes, "capture" keeps it for
    the caller (a container ID). `check` False: a failure is returned, for the caller to explain."""

    argv: tuple[str, ...]
    node: str = LOCAL
    stdin: Input | None = None
    proves: Proof | None = None
    output: str = "capture"
    check: bool = True
    timeout: float | None = None

    def shown(self) -> str:
        """The command as `plan` prints it and the executor records it: quoted argv, secrets masked."""
        return shown(self)


# steps.image_copy/weights_copy still answer with bare argv tuples (illustrative: the connector runs them)
Step = Union[Command, tuple[str, ...]]


def shown(command: Step) -> str:
    """One quoting function for every command a person sees: shlex-joined words, each scrubbed of secrets,
    its node when not this machine, and what it reads on stdin."""
    if not isinstance(command, Command):
        return shlex.join(scrub(word) for word in command)
    text = shlex.join(scrub(word) for word in command.argv)
    where = "" if command.node == LOCAL else f"[{command.node}] "
    return where + text + (f" < {command.stdin.what}" if command.stdin else "")


def as_json(command: Step) -> dict:
    """A command for --json: its text as `plan` prints it, argv words (scrubbed), node, stdin, proof."""
    if not isinstance(command, Command):
        return {"text": shown(command), "argv": [scrub(word) for word in command]}
    return {"text": shown(command), "argv": [scrub(word) for word in command.argv], "node": command.node,
            **({"stdin": command.stdin.what} if command.stdin else {}),
            **({"proves": command.proves.text()} if command.proves else {})}

