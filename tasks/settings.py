"""Where things live: the project folder, its recipes, the state dir, the Docker folder.

One place reads the environment so tests and users can point the tool elsewhere:
RUNRECIPE_HOME (project folder: recipes/, mods/, .env, .runrecipe/),
RUNRECIPE_DOCKER_DIR (the folder of Dockerfiles that builds use),
RUNRECIPE_EXEC_LOG (a file that gets one JSON line per command the executor runs).
It is read once per process (`places`): a run resolves its folders once, not at every call, and cannot
see them move halfway through. `forget` reads them again (the tests point them elsewhere per test).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

CODE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Places:
    """The folders and names the environment gives, resolved."""

    home: Path
    docker_dir: Path
    hf_home: Path
    gateway_image: str
    exec_log: Path | None


@functools.cache
def places() -> Places:
    """The environment's answer, read once per process."""
    log = os.environ.get("RUNRECIPE_EXEC_LOG")
    hf = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Places(home=Path(os.environ.get("RUNRECIPE_HOME") or CODE_ROOT).resolve(),
                  docker_dir=Path(os.environ.get("RUNRECIPE_DOCKER_DIR") or CODE_ROOT / "docker").resolve(),
                  hf_home=Path(hf),
                  gateway_image=os.environ.get("RUNRECIPE_GATEWAY_IMAGE") or "ghcr.io/berriai/litellm:main-stable",
                  exec_log=Path(log) if log else None)


def forget() -> None:
    """Read the environment again at the next call (a test that changed RUNRECIPE_HOME, HF_HOME, ...)."""
    places.cache_clear()


def project_root() -> Path:
    """The folder holding recipes/, mods/, .env and the state dir (default: this checkout)."""
    return places().home


def recipes_dir() -> Path:
    return project_root() / "recipes"


def state_dir() -> Path:
    """doit's state, the lock and rendered scripts; created on first use."""
    path = project_root() / ".runrecipe"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a file of that name (FileExistsError), or no permission
        raise ConfigError(f"{path}: cannot use it as runrecipe's state folder ({exc.strerror}): it must be a "
                          "folder this user can write; move away whatever is there and run again") from None
    return path


def docker_dir() -> Path:
    """The Dockerfiles (Dockerfile, Dockerfile.mxfp4, Dockerfile.wheels) and their build context."""
    return places().docker_dir


def hf_home() -> Path:
    """The HuggingFace folder mounted into containers (HF_HOME, else $XDG_CACHE_HOME/huggingface)."""
    return places().hf_home


def gateway_image() -> str:
    """The LiteLLM proxy image a stack's gateway runs (RUNRECIPE_GATEWAY_IMAGE; the tests build their own)."""
    return places().gateway_image


def exec_log() -> Path | None:
    """Where the executor appends what it ran (execute.py), for tests that compare it with `run-recipe plan`."""
    return places().exec_log
