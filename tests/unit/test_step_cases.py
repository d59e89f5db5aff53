"""Steps as data, one case a file: tests/unit/steps_cases/<step>/<case>.json gives the facts a step reads and
the answer it must give: {"noop": reason}, or {"change": why, "commands": [...], "travels": bytes} with each
command as `run-recipe plan --json` shows it (commands.as_json). One generic test runs every file; no daemon."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from tasks.connect import SshLink
from tasks.connect.chain import Worker
from tasks.ops import answers as steps, image_copy, weights_copy
from tasks.ops.weights_state import RemoteState, Want
from tasks.ops.commands import Command, as_json
from tasks.facts.docker import Container
from tasks.ops.image import BuildSpec

CASES = Path(__file__).parent / "steps_cases"


def spec(facts: dict) -> BuildSpec:
    s = facts["spec"]
    return BuildSpec(s["tag"], Path(s["context"]), s["dockerfile"], tuple(tuple(a) for a in s["build_args"]))


def containers(facts: dict) -> list[Container]:
    return [Container(c["id"], c["name"], c["state"], c["image"], c["labels"]) for c in facts["running"]]


def chain(facts: dict) -> list[Worker]:
    return [Worker(name, SshLink(("ssh", f"root@{name}"))) for name in facts["chain"]]


def weights_job(facts: dict) -> weights_copy.Job:
    w = facts["want"]
    want = Want(w["manifest"], w.get("refs", {}), sorted(w["files"]), {}, w.get("blob_of", {}), w.get("sizes", {}))
    folder = f"{facts['cache']}/models--{facts['repo'].replace('/', '--')}"
    return weights_copy.Job(want, {}, Path(facts["head_folder"]), facts["cache"], folder, facts["repo"],
                            facts["commit"], False, None, 120)


def weights(facts: dict) -> steps.Answer:
    haves = {n: RemoteState(h.get("manifest", {}), h.get("refs", {}), h.get("blobs", {}))
             for n, h in facts["haves"].items()}
    return weights_copy.answer(weights_job(facts), chain(facts), facts["node"], haves)


# step -> how its facts become the step function's arguments
STEPS: dict[str, Callable[[dict], Any]] = {
    "build": lambda f: steps.build(spec(f), f["image"]),
    "as_is": lambda f: steps.as_is(spec(f), f["image"]),
    "mods": lambda f: steps.mods(f["names"], f["base_id"], f["derived"], f["derived_id"], node=f.get("node", "local")),
    "image_copy": lambda f: image_copy.answer(f["tag"], f["node"], f["head_id"], f["size"], chain(f), f["ids"]),
    "weights_copy": weights,
    "launch": lambda f: steps.launch(f["container"], f["digest"], containers(f), f["answering"], f.get("node", "local"),
                                     [Command(tuple(c["argv"]), f.get("node", "local")) for c in f.get("start", [])]),
}


def answer_json(answer: steps.Answer) -> dict:
    if isinstance(answer, steps.Noop):
        return {"noop": answer.reason}
    return {"change": answer.why, "commands": [as_json(c) for c in answer.commands], "travels": answer.travels}


@pytest.mark.parametrize("path", sorted(CASES.glob("*/*.json")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_step_case(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = json.loads(path.read_text())
    if "inputs_hash" in case:  # a build's hash reads the context's files: the case names it instead
        monkeypatch.setattr(BuildSpec, "inputs_hash", lambda self: case["inputs_hash"])
    got = answer_json(STEPS[path.parent.name](case["facts"]))
    want = {"noop": case["noop"]} if "noop" in case else \
        {"change": case["change"], "commands": case.get("commands", []), "travels": case.get("travels", 0)}
    assert got == want


def test_every_step_has_cases() -> None:
    assert {p.name for p in CASES.iterdir() if p.is_dir()} == set(STEPS)
