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
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .. import masking, render, settings, state
from ..errors import ConfigError
from ..flagtypes import run_words
from ..vllm_args import is_flag

SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")  # systemd ends a line at \r as at \n
UNIT_MODE = 0o644      # systemd reads units as any user; they hold no secret, so everyone may read them


@dataclass(frozen=True)
class Unit:
    name: str     # runrecipe-<recipe>.service
    path: Path
    text: str
    user: bool


def unit_name(recipe_id: str) -> str:
    """`runrecipe-<id>.service`, a different name for every id (`4x/a` and `4x-a` are two recipes): each
    byte outside [A-Za-z0-9_.-] as systemd's \\xNN (`/` as \\x2f), a long id (unit names stop at 255) as a
    prefix and its hash after `:`."""
    return "runrecipe-" + state.escaped_name(recipe_id, escape="\\x{:02x}", mark=":") + ".service"


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
    `$` doubled on Exec lines only (Environment= expands no variables), quoted (`\\` and `"` escaped) when
    it holds anything but safe characters; render_unit refuses control characters first."""
    word = word.replace("%", "%%")
    if exec_line:
        word = word.replace("$", "$$")
    if SAFE.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_line(words: Sequence[str], *, exec_line: bool = True) -> str:
    return " ".join(systemd_word(w, exec_line=exec_line) for w in words)


def systemd_path(path: Path) -> str:
    """A path setting (WorkingDirectory=, EnvironmentFile=): systemd takes the rest of the line as the
    path, unquoted, so only `%` is doubled; what it would trim or split cannot be written."""
    text = str(path)
    if CONTROL.search(text) or text != text.strip():
        raise ConfigError(f"install-service: the path {masking.printable(text)!r} has a control character (a line "
                          "break, say) or surrounding spaces, which a unit file cannot carry; use a project folder "
                          "without them")
    return text.replace("%", "%%")


def systemd_text(value: str) -> str:
    """Free text on a unit line (Description=): one line, `%` doubled (systemd's specifiers)."""
    return " ".join(CONTROL.sub(" ", value).split()).replace("%", "%%")


@dataclass(frozen=True)
class Secret:
    """A value no unit may hold, what it is, and the variable that carries it through the env file instead."""

    value: str
    what: str       # "the value of -e HF_TOKEN", "the server's API key"
    var: str = ""   # HF_TOKEN, VLLM_API_KEY; "" when the program's own variable is not known here


def refuse_secrets(words: Sequence[str], secrets: Sequence[Secret]) -> None:
    """Unit files are world-readable: no word of one may carry a secret, whatever flag brought it.

    Besides the run's own `secrets`, the value of any secret-named flag (`--hf-token X`, `--api-key=X`)
    and every secret of the environment and .env count. The refusal shows the word with the value
    masked and says where the value belongs."""
    known = [s for s in secrets if s.value]
    known += [Secret(value, f"the value of {flag}") for flag, value in _flag_values(words)]
    known += [Secret(value, "a secret of the environment or .env") for value in masking.values()]
    for word in words:
        for secret in known:
            if _carries(word, secret.value):
                var = secret.var or "VAR"
                raise ConfigError(
                    f"install-service: `{word.replace(secret.value, masking.MASK)}` carries {secret.what}, which "
                    f"would be stored in the unit file (readable by every user); put {var}=... in {env_file()} "
                    f"(mode 0600), which the unit reads, and write `-e {var}` (no value) instead",
                    fix=f"move the value to {env_file()} (chmod 600) and pass `-e {var}` without a value")


def _carries(word: str, value: str) -> bool:
    """A short value (`-e MY_KEY=ab`) counts only as a whole word or after `=`: inside others it is chance."""
    if len(value) >= masking.MIN_LEN:
        return value in word
    return word == value or word.endswith("=" + value)


def _flag_values(words: Sequence[str]) -> list[tuple[str, str]]:
    """(flag, value) of every secret-named flag: `--hf-token=X`, or `--api-key X`."""
    found = []
    for i, word in enumerate(words):
        name = word.split("=", 1)[0]
        if is_flag(word) and masking.is_secret_key(name):
            value = word.split("=", 1)[1] if "=" in word else (words[i + 1] if i + 1 < len(words) else "")
            found += [(name, value)] if value else []
    return found


def check_env_file() -> None:
    """The env file holds secrets: when it exists, no one but its owner may read it."""
    path = env_file()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise ConfigError(f"install-service: {path} is not a regular file; the unit reads its secrets from there")
    if mode & 0o077:
        raise ConfigError(f"install-service: {path} holds the service's secrets but is mode "
                          f"{stat.S_IMODE(mode):04o} (readable or writable by others); make it yours alone: "
                          f"chmod 600 {path}", file=str(path), fix=f"chmod 600 {path}")


def render_unit(recipe_id: str, run_args: Sequence[str], *, user: bool, directory: Path | None = None,
                secrets: Sequence[Secret] = ()) -> Unit:
    """The unit for `run-recipe <run_args>`: converge with -d, then watch with the same words; no word may
    carry one of `secrets` (the run's: secret `-e` values, the server's key) or another known secret."""
    entry = str(settings.CODE_ROOT / "run-recipe.sh")
    words = run_words(run_args)
    home = settings.project_root()
    env = {"RUNRECIPE_HOME": str(home), **{k: os.environ[k] for k in ("DOCKER_HOST", "HF_HOME", "HF_HUB_CACHE", "RUNRECIPE_DOCKER_DIR")
                                           if os.environ.get(k)}}
    unit_words = [*run_args, *(f"{k}={v}" for k, v in env.items())]
    if any(CONTROL.search(w) for w in unit_words):
        raise ConfigError("install-service: an argument or variable holds a control character (a line break or "
                          "carriage return, say), which would split or end a line of the unit file; pass it "
                          "without one")
    refuse_secrets(unit_words, secrets)
    name = unit_name(recipe_id)
    text = render.render_template(
        "runrecipe.service.j2", recipe=recipe_id, description=systemd_text(recipe_id), home=systemd_path(home),
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
    """Renamed into place whole, mode 0644 whatever the umask: readable by systemd, writable by its owner."""
    unit.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unit.path.with_suffix(".tmp")
    tmp.write_text(unit.text)
    tmp.chmod(UNIT_MODE)
    tmp.replace(unit.path)


def systemctl(unit: Unit, *args: str) -> list[str]:
    return ["systemctl", *(["--user"] if unit.user else []), *args]

