"""Steps as data: given a node's facts, each step answers Noop(reason) or the Change it would make.

The graph's up-to-date check is "the step answers Noop" (graph.StepCheck); `run-recipe plan` prints
the answers, with the commands and the bytes that would travel; unit tests feed facts and read the
answers, with no daemon. The facts come from the facts/docker/distribute modules; these functions
never touch a machine. Executing a Change stays with the step's module (image.build, mods.apply,
distribute, launch.converge), which then proves the result on the node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

from .docker import LABEL, Container
from .image import BuildSpec, build_argv, not_here


@dataclass(frozen=True)
class Noop:
    """Nothing to do on this node, and why."""

    reason: str


@dataclass(frozen=True)
class Change:
    """What the step would do: why, the commands (argv lists, in order) and the bytes sent to the node."""

    why: str
    commands: tuple[tuple[str, ...], ...] = ()
    travels: int = 0


Answer = Union[Noop, Change]


def build(spec: BuildSpec, image: Mapping | None) -> Answer:
    """`image`: docker.image_info of the tag (None when absent)."""
    if image and image["labels"].get(f"{LABEL}.inputs") == spec.inputs_hash():
        return Noop(f"{spec.tag} carries the hash of its current Dockerfile, args and context")
    why = "is missing" if not image else "was built from other inputs"
    return Change(f"image {spec.tag} {why}", (tuple(build_argv(spec)),))


def as_is(spec: BuildSpec, image: Mapping | None) -> Answer:
    """--no-build: the image must be there as it is; nothing is built."""
    if image:
        return Noop(f"{spec.tag} is on this machine (--no-build: used as it is, not built)")
    return Change(not_here(spec))


def mods(names: Sequence[str], base_id: str | None, derived: str, derived_id: str | None) -> Answer:
    """`derived`: the mods image tag for this base and these mods; `derived_id` its ID where present."""
    shown = ", ".join(names)
    if not base_id:
        return Change(f"the base image is not on this node yet; mods {shown} follow it",
                      (("docker", "build", "-t", derived, "-"),))
    if derived_id:
        return Noop(f"the mods image {derived} ({shown} on the current base) exists")
    return Change(f"mods {shown} not yet applied to the current base image", (("docker", "build", "-t", derived, "-"),))


def image_copy(tag: str, node: str, head_id: str | None, node_id: str | None, size: int) -> Answer:
    """A worker's copy of the head's image: the IDs decide, never the tag alone."""
    if head_id and node_id == head_id:
        return Noop(f"{node} has the head's image ID")
    if not head_id:
        return Change(f"the head has no {tag} yet (the build comes first)", (("docker", "save", tag),
                                                                               ("docker", "load")))
    what = "lacks" if not node_id else "has another"
    return Change(f"{node} {what} {tag}", (("docker", "save", tag), ("docker", "load")), travels=size)


def weights_copy(key: str, node: str, want: Mapping[str, int], have: Mapping[str, int],
                 stale_refs: Sequence[str] = ()) -> Answer:
    """`want`/`have`: path -> size of the commit's files on the head / on the worker."""
    missing = {p: s for p, s in want.items() if have.get(p) != s}
    if not missing and not stale_refs:
        return Noop(f"{node} has every file of {key} at the head's size")
    why = f"{node} lacks {len(missing)} file(s) of {key}" if missing else f"{node}'s refs do not name {key}'s commit"
    return Change(why, (("rsync", "-a", "--partial", *sorted(missing)),) if missing else (), sum(missing.values()))


def launch(container: str, digest: str, running: Sequence[Container], answering: bool | None) -> Answer:
    """`running`: this recipe's containers on the node; `digest`: the inputs hash it must carry;
    `answering` None: the server was not asked (--dry-run sends no request, not even to loopback)."""
    current = [c for c in running if c.running and c.labels.get(f"{LABEL}.inputs") == digest]
    if current and answering is None:
        return Noop(f"{current[0].name} runs with the current image, script and settings and was seen "
                    "ready (not asked whether it answers: a dry run sends no request)")
    if current and answering:
        return Noop(f"{current[0].name} runs with the current image, script and settings, and answers")
    if current:
        return Change(f"{current[0].name} runs with the current inputs but does not answer yet: wait for it")
    old = [c.id for c in running]
    why = "its inputs changed" if old else "no container of it runs"
    return Change(f"{container}: {why}", ((("docker", "rm", "-f", *old),) if old else ()) +
                  (("docker", "create", "--name", container, "..."), ("docker", "start", container)))
