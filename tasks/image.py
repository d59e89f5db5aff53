"""The container image a recipe runs: which Dockerfile and build args make it, and building it.

An image counts as built only when its tag exists AND carries the inputs hash
(Dockerfile content, build args, build context) we would build it from now; a
tag that points anywhere else is rebuilt. The hash lives on the image itself as
a label, so the engine, not a side file, is the source of truth.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from . import docker
from .docker import LABEL, Runner
from .errors import RecipeError, RunError

# Recipe `build_args` (the origin's build-and-copy.sh flags) -> (Dockerfile, docker build args).
BUILD_FLAGS: dict[str, tuple[str | None, dict[str, str]]] = {
    "--pre-tf": (None, {"PRE_TRANSFORMERS": "1"}),
    "--exp-mxfp4": ("Dockerfile.mxfp4", {}),
    "--use-wheels": ("Dockerfile.wheels", {}),
    "--exp-b12x": (None, {"ENABLE_B12X": "1"}),
}
# Files above this size (e.g. wheels) are hashed by size and mtime instead of content.
CONTENT_HASH_LIMIT = 8 << 20


@dataclass(frozen=True)
class BuildSpec:
    """How to build one tag: plain data, hashable for the graph."""

    tag: str
    context: Path
    dockerfile: str
    build_args: tuple[tuple[str, str], ...]

    @property
    def dockerfile_path(self) -> Path:
        return self.context / self.dockerfile

    def describe(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.build_args)
        return f"{self.dockerfile_path}" + (f" ({args})" if args else "")

    def inputs_hash(self) -> str:
        """sha256 over the Dockerfile, the build args and every file of the context."""
        if not self.dockerfile_path.is_file():
            raise RunError(f"cannot build {self.tag}: {self.dockerfile_path} does not exist "
                           "(set RUNRECIPE_DOCKER_DIR to the folder holding the Dockerfiles)")
        h = hashlib.sha256()
        h.update(json.dumps([self.dockerfile, list(self.build_args)]).encode())
        for path in sorted(p for p in self.context.rglob("*") if p.is_file()):
            st = path.stat()
            h.update(str(path.relative_to(self.context)).encode() + b"\0")
            if st.st_size > CONTENT_HASH_LIMIT:
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            else:
                h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()


def build_spec(tag: str, build_args: tuple[str, ...], context: Path, source: str) -> BuildSpec:
    """Map the origin's build flags onto a Dockerfile and build args; unknown flags are an error."""
    dockerfile, args = "Dockerfile", {}
    for flag in build_args:
        if flag not in BUILD_FLAGS:
            known = ", ".join(BUILD_FLAGS)
            raise RecipeError(f"{source}: build_args: unknown build flag '{flag}' (known: {known})")
        chosen, extra = BUILD_FLAGS[flag]
        dockerfile = chosen or dockerfile
        args.update(extra)
    return BuildSpec(tag, context, dockerfile, tuple(sorted(args.items())))


def build_argv(spec: BuildSpec) -> list[str]:
    """The `docker build` that makes the tag, labelled with the hash of its inputs."""
    argv = ["docker", "build", "-f", str(spec.dockerfile_path), "-t", spec.tag,
            "--label", f"{LABEL}.inputs={spec.inputs_hash()}"]
    for key, value in spec.build_args:
        argv += ["--build-arg", f"{key}={value}"]
    return [*argv, str(spec.context)]


def build(runner: Runner, spec: BuildSpec) -> dict[str, str]:
    """docker build, then prove the tag now carries this build's inputs; returns the image ID."""
    digest = spec.inputs_hash()
    argv = build_argv(spec)
    runner.run(argv)
    info = docker.image_info(runner, spec.tag)
    if not info or info["labels"].get(f"{LABEL}.inputs") != digest:
        raise RunError(f"docker build reported success but {spec.tag} does not carry the new build",
                       node=runner.node, command=" ".join(argv))
    return {"image_id": info["id"]}
