"""Steps as data: given a node's facts, each step answers Noop(reason) or the Change it would make.

The graph's up-to-date check is "the step answers Noop" (graph.Check); `run-recipe plan` prints
the answers, with the commands and the bytes that would travel; unit tests feed facts and read the
answers, with no daemon (tests/unit/steps_cases). The facts come from the facts/docker/distribute
modules; these functions never touch a machine. The build, mods and launch steps answer with the very
Commands (commands.py) that the executor (execute.py) then runs: image.build, mods.apply and
launch.converge decide, and hand the commands over; so do the image and weights copies (image_copy,
weights_copy), whose streams run through execute.stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

from .commands import LOCAL, Command
from ..facts.docker import LABEL, Container
from .image import BuildSpec, build_command, not_here
from .mods import build_command as build_mods


@dataclass(frozen=True)
class Noop:
    """Nothing to do on this node, and why."""

    reason: str


@dataclass(frozen=True)
class Change:
    """What the step would do: why, the commands (in order) and the bytes sent to the node."""

    why: str
    commands: tuple[Command, ...] = ()
    travels: int = 0


Answer = Union[Noop, Change]


def build(spec: BuildSpec, image: Mapping | None) -> Answer:
    """`image`: docker.image_info of the tag (None when absent)."""
    digest = spec.inputs_hash()
    if image and image["labels"].get(f"{LABEL}.inputs") == digest:
        return Noop(f"{spec.tag} carries the hash of its current Dockerfile, args and context")
    why = "is missing" if not image else "was built from other inputs"
    return Change(f"image {spec.tag} {why}", (build_command(spec, digest),))


def as_is(spec: BuildSpec, image: Mapping | None) -> Answer:
    """--no-build: the image must be there as it is; nothing is built."""
    if image:
        return Noop(f"{spec.tag} is on this machine (--no-build: used as it is, not built)")
    return Change(not_here(spec))


def mods(names: Sequence[str], base_id: str | None, derived: str, derived_id: str | None,
         context: Callable[[], bytes] = lambda: b"", node: str = LOCAL) -> Answer:
    """`derived`: the mods image tag for this base and these mods; `derived_id` its ID where present;
    `context`: makes the build context's tar (mods.context_tar), only when the build runs."""
    shown = ", ".join(names)
    if not base_id:  # the tag depends on the base's ID: no command can be named before the base exists
        return Change(f"the base image is not on this node yet; mods {shown} follow it")
    if derived_id:
        return Noop(f"the mods image {derived} ({shown} on the current base) exists")
    return Change(f"mods {shown} not yet applied to the current base image",
                  (build_mods(names, base_id, derived, context, node),))


def image_copy(tag: str, node: str, head_id: str | None, node_id: str | None, size: int,
               commands: Sequence[Command] = (), carried_by: str = "") -> Answer:
    """A worker's copy of the head's image: the IDs decide, never the tag alone. `commands`: the stream
    that brings it (image_copy.send_command); `carried_by`: an earlier worker whose stream brings it."""
    if head_id and node_id == head_id:
        return Noop(f"{node} has the head's image ID")
    if not head_id:
        return Change(f"the head has no {tag} yet (the build comes first; its stream follows it)")
    what = "lacks" if not node_id else "has another"
    if carried_by:
        return Change(f"{node} {what} {tag}: the stream to {carried_by} carries it on")
    return Change(f"{node} {what} {tag}", tuple(commands), travels=size)


def weights_copy(key: str, node: str, want: Mapping[str, int], have: Mapping[str, int],
                 stale_refs: Sequence[str] = (), commands: Sequence[Command] = (), carried_by: str = "") -> Answer:
    """`want`/`have`: path -> size of the commit's files on the head / on the worker; `commands`: what
    its copy runs (weights_copy.planned); `carried_by`: an earlier worker whose copy brings it too."""
    missing = {p: s for p, s in want.items() if have.get(p) != s}
    if not missing and not stale_refs:
        return Noop(f"{node} has every file of {key} at the head's size")
    why = f"{node} lacks {len(missing)} file(s) of {key}" if missing else f"{node}'s refs do not name {key}'s commit"
    if carried_by:
        return Change(f"{why}: the copy to {carried_by} brings them")
    return Change(why, tuple(commands), sum(missing.values()))


def launch(container: str, digest: str, running: Sequence[Container], answering: bool | None, node: str = LOCAL,
           start: Sequence[Command] = ()) -> Answer:
    """`running`: this recipe's containers on the node; `digest`: the inputs hash it must carry;
    `answering` None: the server was not asked (--dry-run sends no request, not even to loopback);
    `start`: the commands that start the wanted container there (launch.start_commands)."""
    current = [c for c in running if c.running and c.labels.get(f"{LABEL}.inputs") == digest]
    if current and answering is None:
        return Noop(f"{current[0].name} runs with the current image, script and settings and was seen "
                    "ready (not asked whether it answers: a dry run sends no request)")
    if current and answering:
        return Noop(f"{current[0].name} runs with the current image, script and settings, and answers")
    if current:
        return Change(f"{current[0].name} runs with the current inputs but does not answer yet: wait for it")
    why = "its inputs changed" if running else "no container of it runs"
    return Change(f"{container}: {why}", (*clear(node, running), *start))


def clear(node: str, running: Sequence[Container]) -> tuple[Command, ...]:
    """Remove this recipe's containers on the node before a new one starts (none there: no command)."""
    return remove(node, [c.id for c in running])


def remove(node: str, container_ids: Sequence[str]) -> tuple[Command, ...]:
    """Remove these containers, running or not (a stop, a failed start's cleanup); none named: no command."""
    return (Command(("docker", "rm", "-f", *container_ids), node),) if container_ids else ()


def halt(node: str, container_id: str) -> Command:
    """Stop one container (foreground Ctrl-C); a failure is the caller's to explain (it is leaving anyway)."""
    return Command(("docker", "stop", container_id), node, check=False)

