"""Commands on this machine, and the Result and verdicts both connectors share.

`read` gathers facts (image IDs, container labels): captured, quick, never
changes anything, so it uses a plain subprocess to stay off the hot path of a
no-op re-run. `run` makes changes: through invoke locally (fabric's Connection
offers the same `run` for remote nodes), with output streamed to the user and a
typed RunError naming node, command, exit code and the output's tail on failure.
"""
from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass

from ..errors import RunError

TAIL_LINES = 20


@dataclass(frozen=True)
class Result:
    stdout: str
    stderr: str
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class Local:
    """Commands on the machine running the tool (solo mode's node)."""

    node = "local"

    def argv_for(self, argv: list[str]) -> list[str]:
        """The command line that runs `argv` here, for a pipeline: argv itself."""
        return list(argv)

    def read(self, argv: list[str], *, check: bool = True, timeout: float = 60) -> Result:
        """Run a query and capture its output."""
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise _missing(argv[0], self.node) from None
        except subprocess.TimeoutExpired:
            raise RunError(f"command timed out after {timeout:.0f} s", node=self.node,
                           command=shlex.join(argv)) from None
        result = Result(proc.stdout, proc.stderr, proc.returncode)
        if check and not result.ok:
            raise RunError("command failed", node=self.node, command=shlex.join(argv),
                           exit_code=result.exit_code, tail=tail(result.stderr or result.stdout))
        return result

    def feed(self, argv: list[str], data: bytes, *, timeout: float | None = 600, check: bool = True) -> Result:
        """Run a command with `data` on its stdin (a tar for `docker cp -` or `docker build -`)."""
        try:
            proc = subprocess.run(argv, input=data, capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise _missing(argv[0], self.node) from None
        except subprocess.TimeoutExpired:
            raise RunError(f"command timed out after {timeout} s", node=self.node, command=shlex.join(argv)) from None
        return checked(self.node, argv, proc, check)

    def run(self, argv: list[str], *, stream: bool = True, timeout: float | None = None,
            check: bool = True) -> Result:
        """Run a command that changes something; its output goes to the user as it comes."""
        import invoke

        command = shlex.join(argv)
        try:
            res = invoke.Context().run(command, hide=not stream, warn=True, timeout=timeout,
                                       in_stream=False, echo=False)
        except invoke.CommandTimedOut:
            raise RunError(f"command timed out after {timeout} s", node=self.node, command=command) from None
        return finished(self.node, argv, Result(res.stdout, res.stderr, res.exited), check)


def finished(node: str, argv: list[str], result: Result, check: bool) -> Result:
    """The one verdict on a finished command, local or remote: missing program, failure, or the result."""
    if result.exit_code == 127 and "not found" in result.stderr:
        raise _missing(argv[0], node)
    if check and not result.ok:
        raise RunError("command failed", node=node, command=shlex.join(argv),
                       exit_code=result.exit_code, tail=tail(result.stderr or result.stdout))
    return result


def checked(node: str, argv: list[str], proc: "subprocess.CompletedProcess[bytes]", check: bool) -> Result:
    """A finished byte-pipeline command as a Result, or (with check) its RunError."""
    out, err = (b.decode(errors="replace") for b in (proc.stdout, proc.stderr))
    if proc.returncode and check:
        raise RunError("command failed", node=node, command=shlex.join(argv), exit_code=proc.returncode,
                       tail=tail(f"{out}\n{err}".strip()))
    return Result(out, err, proc.returncode)


def _missing(program: str, node: str) -> RunError:
    hint = ("install Docker Engine (Debian/Ubuntu: apt-get install docker.io) and start it"
            if program == "docker" else f"install {program}")
    return RunError(f"'{program}' is not installed on {node}: {hint}")

