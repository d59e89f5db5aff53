"""Where things live: the project folder, its recipes, the state dir, the Docker folder.

One place reads the environment so tests and users can point the tool elsewhere:
RUNRECIPE_HOME (project folder: recipes/, mods/, .env, .runrecipe/),
RUNRECIPE_DOCKER_DIR (the folder of Dockerfiles that builds use),
RUNRECIPE_EXEC_LOG (a file that gets one JSON line per command the executor runs).
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

CODE_ROOT = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """The folder holding recipes/, mods/, .env and the state dir (default: this checkout)."""
    return Path(os.environ.get("RUNRECIPE_HOME") or CODE_ROOT).resolve()


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
    return Path(os.environ.get("RUNRECIPE_DOCKER_DIR") or CODE_ROOT / "docker").resolve()


def hf_home() -> Path:
    """The HuggingFace folder mounted into containers (HF_HOME, else $XDG_CACHE_HOME/huggingface)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("HF_HOME") or Path(cache) / "huggingface")


def gateway_image() -> str:
    """The LiteLLM proxy image a stack's gateway runs (RUNRECIPE_GATEWAY_IMAGE; the tests build their own)."""
    return os.environ.get("RUNRECIPE_GATEWAY_IMAGE") or "ghcr.io/berriai/litellm:main-stable"


def exec_log() -> Path | None:
    """Where the executor appends what it ran (execute.py), for tests that compare it with `run-recipe plan`."""
    path = os.environ.get("RUNRECIPE_EXEC_LOG")
    return Path(path) if path else None

