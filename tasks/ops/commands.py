"""What runs: a Command is data (argv, which node, what it reads on stdin, what it proves afterwards).

Steps answer with Commands (answers.py); one executor runs them (execute.py); `run-recipe plan` prints
them with `shown`, the same text the executor records, so what the plan shows is what then runs.
Nothing here touches a machine.
"""
from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from typing import Callable

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
class Stream:
    """What a copy reads on stdin: the output of `source`, run on this machine (the head), after the
    bytes of `ahead` (a chain's header: `what` says what it holds); `feed` is what `source` reads on its
    own stdin (a tar's file list). `size` and `label` feed the progress line; `take_timeout` bounds the
    node's work once the last byte left, `stall_timeout` a stream that stopped moving."""

    source: tuple[str, ...]
    what: str = ""
    ahead: Callable[[], bytes] = field(compare=False, repr=False, default=lambda: b"")
    feed: Callable[[], bytes] | None = field(compare=False, repr=False, default=None)
    size: int | None = None
    label: str = ""
    stall_timeout: float = 60.0
    take_timeout: float = 1800.0
    reaches: tuple[str, ...] = ()  # every node the stream lands on (a chain's workers), not only the first


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
    the caller (a container ID). `check` False: a failure is returned, for the caller to explain.
    `sends`: it runs here and sends to `node` (rsync, its last word `NODE:path`); the node's connector
    adds the transport, so the argv is the same in every process. `named`: words a person sees by name,
    because their value is made when the command runs (a build's time), so plan and record agree."""

    argv: tuple[str, ...]
    node: str = LOCAL
    stdin: Input | Stream | None = None
    proves: Proof | None = None
    output: str = "capture"
    check: bool = True
    timeout: float | None = None
    sends: bool = False
    named: tuple[tuple[int, str], ...] = ()  # (argv index, name): words shown by name (a value made at run time)

    def shown(self) -> str:
        """The command as `plan` prints it and the executor records it: quoted argv, secrets masked."""
        return shown(self)


def shown(command: Command) -> str:
    """One quoting function for every command a person sees: shlex-joined words, each scrubbed of secrets
    (a script word by its hash), its node when not this machine, and what it reads on stdin: a pipe from
    the head's command (`source | [node] argv`), or `< what`."""
    argv = list(command.argv)
    for at, name in command.named:
        argv[at] = name
    text = ("" if command.node == LOCAL or command.sends else f"[{command.node}] ") + _joined(tuple(argv))
    stdin = command.stdin
    if isinstance(stdin, Stream):
        return f"{_joined(stdin.source)} | {text}" + (f" (ahead of it: {stdin.what})" if stdin.what else "")
    return text + (f" < {stdin.what}" if stdin else "")


def _joined(argv: tuple[str, ...]) -> str:
    """Words as a person sees them, quoted for a shell (a script's name is not a word to quote)."""
    return " ".join(_word(w) if "\n" in w else shlex.quote(_word(w)) for w in argv)


def _word(word: str) -> str:
    """A word as a person sees it: a script by its name and hash, any other word scrubbed of secrets."""
    return _script(word) if "\n" in word else scrub(word)


def _script(text: str) -> str:
    """A script word in a plan: its first comment line names it, its hash tells versions apart (the
    plan and the executor's record show the same text)."""
    first = next((ln.strip("# ") for ln in text.splitlines() if ln.startswith("#")), "script")
    return f"<{first}: sha256 {hashlib.sha256(text.encode()).hexdigest()[:12]}>"


def as_json(command: Command) -> dict:
    """A command for --json: its text as `plan` prints it, argv words (scrubbed), node, stdin, proof."""
    return {"text": shown(command), "argv": [_word(word) for word in command.argv], "node": command.node,
            **_stdin_json(command.stdin),
            **({"proves": command.proves.text()} if command.proves else {})}


def _stdin_json(stdin: Input | Stream | None) -> dict:
    if isinstance(stdin, Stream):
        return {"stdin": {"from": _joined(stdin.source), **({"ahead": stdin.what} if stdin.what else {})}}
    return {"stdin": stdin.what} if stdin else {}
