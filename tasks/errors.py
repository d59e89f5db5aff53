"""One root for every error a person should read instead of a traceback.

Each leaf also inherits the built-in it resembles, so callers that only know
Python's exceptions still catch it sensibly.
"""
from __future__ import annotations


class RunRecipeError(Exception):
    """Root: something the user can fix; the message says what and how."""

    exit_code = 1


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
        self.node, self.command, self.exit_status, self.tail = node, command, exit_code, tail
        parts = [message]
        if command:
            parts.append(f"  node: {node}\n  command: {command}")
        if exit_code is not None:
            parts.append(f"  exit code: {exit_code}")
        if tail.strip():
            parts.append("  last output:\n" + "\n".join("    " + ln for ln in tail.rstrip().splitlines()))
        super().__init__("\n".join(parts))


class NotReadyError(RunError):
    """The server did not become ready (exited early or timed out)."""


class LockBusyError(RunRecipeError, BlockingIOError):
    """Another run holds the state lock and the caller asked not to wait."""
