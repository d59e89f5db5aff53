"""One root for every error a person should read instead of a traceback.

Each leaf also inherits the built-in it resembles, so callers that only know
Python's exceptions still catch it sensibly.
"""
from __future__ import annotations

from .masking import printable


class RunRecipeError(Exception):
    """Root: something the user can fix; the message says what and how.

    Besides the message, an error may carry where it is and what to do, as data: `file`, `field`
    (a path into the recipe, e.g. ("defaults", "port")), `line` (1-based), `fix`, and `reason` (the
    message without the where). lint and the CLI read these fields; nobody parses the message."""

    exit_code = 1

    def __init__(self, message: str = "", *, file: str | None = None, field: tuple[object, ...] = (),
                 line: int | None = None, fix: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.file, self.field, self.line, self.fix = file, tuple(field), line, fix
        self.reason = reason or message


class RecipeError(RunRecipeError, ValueError):
    """A recipe file is missing, unreadable or does not match the format."""


class RenderError(RunRecipeError, ValueError):
    """The recipe's command or a launch template could not be rendered."""


class ModeError(RunRecipeError, ValueError):
    """The recipe cannot run in the chosen mode (solo vs cluster)."""


class ConfigError(RunRecipeError, ValueError):
    """A flag, an override, a node list or the .env file is not usable."""


class RunError(RunRecipeError, RuntimeError):
    """A command on a node failed; carries node, command, exit code and output tail."""

    def __init__(self, message: str, *, node: str = "local", command: str = "",
                 exit_code: int | None = None, tail: str = "") -> None:
        parts = [message]
        if command:
            parts.append(f"  node: {node}\n  command: {command}")
        if exit_code is not None:
            parts.append(f"  exit code: {exit_code}")
        tail = printable(tail)  # a node's or a container's output: never a terminal's instructions
        if tail.strip():
            parts.append("  last output:\n" + "\n".join("    " + ln for ln in tail.rstrip().splitlines()))
        super().__init__("\n".join(parts))
        self.node, self.command, self.exit_status, self.tail = node, command, exit_code, tail


class NotReadyError(RunError):
    """The server did not become ready (exited early or timed out)."""


class LockBusyError(RunRecipeError, BlockingIOError):
    """Another run holds the state lock and the caller asked not to wait."""

