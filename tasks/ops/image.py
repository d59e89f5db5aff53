"""Building the container image a recipe runs (what makes it, BuildSpec, is in build_spec.py).

An image counts as built only when its tag exists AND carries the inputs hash
(Dockerfile content, build args, build context) we would build it from now; a
tag that points anywhere else is rebuilt. The hash lives on the image itself as
a label, so the engine, not a side file, is the source of truth.
"""
from __future__ import annotations

import time

from ..build_spec import BuildSpec
from ..facts import docker
from . import execute
from .commands import Command, Proof
from ..facts.docker import LABEL
from ..connect import Connector
from ..errors import RunError


def build_argv(spec: BuildSpec, digest: str | None = None) -> list[str]:
    """The `docker build` that makes the tag, labelled with the hash of its inputs (`digest`: known already)."""
    argv = ["docker", "build", "-f", str(spec.dockerfile_path), "-t", spec.tag,
            "--label", f"{LABEL}.inputs={digest or spec.inputs_hash()}"]
    for key, value in spec.build_args:
        argv += ["--build-arg", f"{key}={value}"]
    for key in spec.fresh:
        argv += ["--build-arg", f"{key}={int(time.time())}"]
    return [*argv, str(spec.context)]


def not_here(spec: BuildSpec) -> str:
    """Why --no-build cannot go on: the image is not on this machine, and the two ways out."""
    return (f"image {spec.tag} is not on this machine: docker pull/load it, or drop --no-build (doit: no_build=1) "
            f"to build it from {spec.dockerfile_path}")


def as_is(runner: Connector, spec: BuildSpec) -> dict[str, str]:
    """--no-build: the tag as it is on this node (pulled, loaded or built elsewhere), never built; its image ID."""
    info = docker.image_info(runner, spec.tag)
    if not info:
        raise RunError(not_here(spec), node=runner.node)
    return {"image_id": info["id"]}


def build_command(spec: BuildSpec, digest: str | None = None) -> Command:
    """The build as the executor runs it: output shown as it comes; afterwards the tag carries the inputs hash.
    A cache-bust arg (--rebuild-vllm) shows as `KEY=<build time>`: its value is the time the build runs."""
    digest = digest or spec.inputs_hash()
    argv = build_argv(spec, digest)
    named = tuple((at, f"{word.split('=')[0]}=<build time>") for at, word in enumerate(argv)
                  if at and argv[at - 1] == "--build-arg" and word.split("=")[0] in spec.fresh)
    return Command(tuple(argv), output="stream", proves=Proof(spec.tag, f"{LABEL}.inputs", digest), named=named)


def build(runner: Connector, spec: BuildSpec) -> dict[str, str]:
    """docker build through the executor (which proves the tag now carries this build's inputs); the image ID."""
    execute.run(runner, build_command(spec))
    return {"image_id": docker.image_id(runner, spec.tag) or ""}

