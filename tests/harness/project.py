"""A throw-away runrecipe project for benchmarks: the stand-in Docker folder, recipes/, and a .env
for an engine that cannot grant --privileged's capabilities."""
from __future__ import annotations

from pathlib import Path

from harness import images


def standin_project(base: Path) -> Path:
    """Make `base` a project (recipes/ empty, .env NON_PRIVILEGED=1); returns its stand-in Docker folder."""
    dockdir = images.standin_docker_dir(base / "docker")
    (base / "recipes").mkdir()
    (base / ".env").write_text("NON_PRIVILEGED=1\n")
    return dockdir
