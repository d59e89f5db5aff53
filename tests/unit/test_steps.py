"""Steps as data: facts in, Noop(reason) or Change(why, commands, bytes) out; no daemon involved."""
from __future__ import annotations

from pathlib import Path

import pytest

from tasks import steps
from tasks.commands import Command
from tasks.docker import Container
from tasks.image import BuildSpec

SPEC = BuildSpec("img", Path("/ctx"), "Dockerfile", (("A", "1"),))


def labelled(digest: str) -> dict:
    return {"id": "sha256:1", "labels": {"runrecipe.inputs": digest}, "workdir": "/", "size": 10}


def container(cid: str, state: str, digest: str) -> Container:
    return Container(cid, f"c-{cid}", state, "img", {"runrecipe.inputs": digest})


def test_build_is_a_noop_only_when_the_label_carries_the_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BuildSpec, "inputs_hash", lambda self: "h1")
    assert steps.build(SPEC, labelled("h1")) == steps.Noop("img carries the hash of its current Dockerfile, "
                                                           "args and context")
    for facts, why in ((None, "image img is missing"), (labelled("h0"), "image img was built from other inputs")):
        answer = steps.build(SPEC, facts)
        assert isinstance(answer, steps.Change) and answer.why == why
        (command,) = answer.commands
        argv = command.argv
        assert argv[:2] == ("docker", "build") and "runrecipe.inputs=h1" in argv and "A=1" in argv


def test_no_build_takes_any_image_with_the_tag_and_reads_no_dockerfile() -> None:
    """`/ctx/Dockerfile` does not exist: --no-build never hashes the inputs, whatever labels the image has."""
    assert steps.as_is(SPEC, labelled("someone else's")) == steps.Noop(
        "img is on this machine (--no-build: used as it is, not built)")
    assert steps.as_is(SPEC, None) == steps.Change(
        "image img is not on this machine: docker pull/load it, or drop --no-build (doit: no_build=1) to build it "
        "from /ctx/Dockerfile")


@pytest.mark.parametrize("base, derived_id, kind, text", [
    ("sha256:b", "sha256:d", steps.Noop, "the mods image runrecipe-mods:x (m1, m2 on the current base) exists"),
    ("sha256:b", None, steps.Change, "mods m1, m2 not yet applied to the current base image"),
    (None, None, steps.Change, "the base image is not on this node yet; mods m1, m2 follow it"),
])
def test_mods(base: str | None, derived_id: str | None, kind: type, text: str) -> None:
    answer = steps.mods(["m1", "m2"], base, "runrecipe-mods:x", derived_id)
    assert isinstance(answer, kind) and text in (answer.reason if kind is steps.Noop else answer.why)


@pytest.mark.parametrize("head, there, kind, why, travels", [
    ("sha256:a", "sha256:a", steps.Noop, "n2 has the head's image ID", 0),
    ("sha256:a", None, steps.Change, "n2 lacks img", 500),
    ("sha256:a", "sha256:old", steps.Change, "n2 has another img", 500),
    (None, None, steps.Change, "the head has no img yet (the build comes first)", 0),
])
def test_image_copy(head: str | None, there: str | None, kind: type, why: str, travels: int) -> None:
    answer = steps.image_copy("img", "n2", head, there, 500)
    assert isinstance(answer, kind)
    assert (answer.reason if kind is steps.Noop else answer.why) == why
    assert getattr(answer, "travels", 0) == travels


def test_weights_copy_counts_only_what_differs() -> None:
    want = {"snapshots/c/a": 10, "snapshots/c/b": 20, "blobs/x": 30}
    assert isinstance(steps.weights_copy("org/m@c", "n2", want, dict(want)), steps.Noop)
    answer = steps.weights_copy("org/m@c", "n2", want, {"snapshots/c/a": 10, "snapshots/c/b": 5})
    assert isinstance(answer, steps.Change) and answer.why == "n2 lacks 2 file(s) of org/m@c"
    assert answer.travels == 50 and answer.commands[0][-2:] == ("blobs/x", "snapshots/c/b")
    refs = steps.weights_copy("org/m@c", "n2", want, dict(want), stale_refs=["main"])
    assert isinstance(refs, steps.Change) and refs.travels == 0 and "refs" in refs.why


def test_launch() -> None:
    good, old = container("1", "running", "d1"), container("2", "running", "d0")
    assert isinstance(steps.launch("srv", "d1", [good], answering=True), steps.Noop)
    waiting = steps.launch("srv", "d1", [good], answering=False)
    assert isinstance(waiting, steps.Change) and "does not answer yet" in waiting.why and not waiting.commands
    replace = steps.launch("srv", "d1", [old], answering=True)
    assert isinstance(replace, steps.Change) and replace.why == "srv: its inputs changed"
    assert replace.commands[0].argv == ("docker", "rm", "-f", "2")
    start = [Command(("docker", "create", "--name", "srv")), Command(("docker", "start", "srv"))]
    fresh = steps.launch("srv", "d1", [], answering=False, start=start)
    assert fresh.why == "srv: no container of it runs" and fresh.commands[0].argv[:2] == ("docker", "create")
    stopped = steps.launch("srv", "d1", [container("3", "exited", "d1")], answering=False)
    assert isinstance(stopped, steps.Change) and stopped.commands[0].argv == ("docker", "rm", "-f", "3")
