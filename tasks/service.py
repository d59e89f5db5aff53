"""Start at boot: a systemd unit that converges a recipe (`-d`, a no-op when it serves) and then
watches it, rendered from templates/runrecipe.service.j2; and its removal.

The unit runs this checkout's run-recipe.sh with the run's own words, so the service serves the
same plan (the same inputs hash) the user started by hand.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import render, settings
from .errors import ConfigError
from .flagtypes import run_words

SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


@dataclass(frozen=True)
class Unit:
    name: str     # runrecipe-<recipe>.service
    path: Path
    text: str
    user: bool


def unit_name(recipe_id: str) -> str:
    return "runrecipe-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", recipe_id).strip("-") + ".service"


def unit_dir(user: bool) -> Path:
    if user:
        config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return config / "systemd" / "user"
    return Path("/etc/systemd/system")


def env_file() -> Path:
    """Variables the service's runs need that must not stand in the unit (HF_TOKEN, secret `-e` values)."""
    return settings.state_dir() / "service.env"


def systemd_word(word: str, *, exec_line: bool = True) -> str:
    """One word of an Exec or Environment= line, literal to systemd: `%` doubled (its specifiers),
    `$` doubled on Exec lines only (Environment= expands no variables), quoted with C escapes when it
    holds anything but safe characters."""
    word = word.replace("%", "%%")
    if exec_line:
        word = word.replace("$", "$$")
    if SAFE.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def systemd_line(words: Sequence[str], *, exec_line: bool = True) -> str:
    return " ".join(systemd_word(w, exec_line=exec_line) for w in words)


def systemd_path(path: Path) -> str:
    """A path setting (WorkingDirectory=, EnvironmentFile=): systemd takes the rest of the line as the
    path, unquoted, so only `%` is doubled; what it would trim or split cannot be written."""
    text = str(path)
    if "\n" in text or text != text.strip():
        raise ConfigError(f"install-service: the path {text!r} has a line break or surrounding spaces, "
                          "which a unit file cannot carry; use a project folder without them")
    return text.replace("%", "%%")


def render_unit(recipe_id: str, run_args: Sequence[str], *, user: bool, directory: Path | None = None) -> Unit:
    """The unit for `run-recipe <run_args>`: converge with -d, then watch with the same words."""
    if any("\n" in a for a in run_args):
        raise ConfigError("install-service: an argument holds a line break, which a unit file cannot carry")
    entry = str(settings.CODE_ROOT / "run-recipe.sh")
    words = run_words(run_args)
    home = settings.project_root()
    env = {"RUNRECIPE_HOME": str(home), **{k: os.environ[k] for k in ("DOCKER_HOST", "HF_HOME", "HF_HUB_CACHE", "RUNRECIPE_DOCKER_DIR")
                                           if os.environ.get(k)}}
    name = unit_name(recipe_id)
    text = render.render_template(
        "runrecipe.service.j2", recipe=recipe_id, home=systemd_path(home),
        environment=systemd_line([f"{k}={v}" for k, v in env.items()], exec_line=False),
        env_file=systemd_path(env_file()),
        converge=systemd_line([entry, *run_words(words, "-d")]), watch=systemd_line([entry, "watch", *words]),
        wanted_by="default.target" if user else "multi-user.target")
    return Unit(name, (directory or unit_dir(user)) / name, text, user)


def verify(unit: Unit) -> str | None:
    """`systemd-analyze verify` of the written unit: None when it passes or the tool is absent, else its complaint."""
    tool = shutil.which("systemd-analyze")
    if not tool:
        return None
    proc = subprocess.run([tool, *(["--user"] if unit.user else []), "verify", str(unit.path)],
                          capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (proc.stdout + proc.stderr).splitlines() if unit.name in ln or str(unit.path) in ln]
    return "\n".join(problems) if proc.returncode or problems else None


def write(unit: Unit) -> None:
    unit.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unit.path.with_suffix(".tmp")
    tmp.write_text(unit.text)
    tmp.replace(unit.path)


def systemctl(unit: Unit, *args: str) -> list[str]:
    return ["systemctl", *(["--user"] if unit.user else []), *args]
