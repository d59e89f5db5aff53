"""The executor: runs each Command on its node the way the Command says, records the text `plan` shows,
forgets the node's facts, and refuses a success whose proof does not hold. A fake runner, no daemon."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.ops import execute
from tasks.connect.changes import announced
from tasks.facts import cache as facts
from tasks.ops.commands import Command, Input, Proof
from tasks.errors import RunError
from tasks.connect import Result

INSPECT = '{"id":"sha256:9","labels":{"runrecipe.inputs":"h1"},"workdir":"/","size":1,"env":[]}'


class Fake:
    """Records run/feed calls; `docker image inspect` answers INSPECT (the image exists with label h1).
    Its run and feed announce a change as a real connector's do (connect/changes.py)."""

    node = "n1"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    @announced
    def run(self, argv: list[str], *, stream: bool = True, timeout: float | None = None, check: bool = True) -> Result:
        self.calls.append(("run", argv, stream, timeout, check))
        return Result("out\n", "", 0)

    @announced
    def feed(self, argv: list[str], data: bytes, *, timeout: float | None = 600, check: bool = True) -> Result:
        self.calls.append(("feed", argv, data, timeout, check))
        return Result("cid\n", "", 0)

    def read(self, argv: list[str], *, check: bool = True, timeout: float = 60) -> Result:
        return Result(INSPECT + "\n", "", 0)


def test_each_command_runs_as_it_says_and_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "ran.jsonl"
    monkeypatch.setenv("RUNRECIPE_EXEC_LOG", str(log))
    runner, before = Fake(), len(execute.ran)
    facts.fact("n1", "probe", (), lambda: 1)
    build = Command(("docker", "build", "-t", "img", "."), "n1", output="stream",
                    proves=Proof("img", "runrecipe.inputs", "h1"))
    create = Command(("docker", "create", "x y"), "n1", Input("env file: K", lambda: b"K=v\n", secret=True), timeout=120)
    start = Command(("docker", "start", "x"), "n1", timeout=60)
    results = execute.run_all({"n1": runner}, [build, create, start])
    assert [r.stdout for r in results] == ["out\n", "cid\n", "out\n"]
    assert runner.calls == [("run", ["docker", "build", "-t", "img", "."], True, None, True),
                            ("feed", ["docker", "create", "x y"], b"K=v\n", 120, True),
                            ("run", ["docker", "start", "x"], False, 60, True)]
    texts = ["[n1] docker build -t img .", "[n1] docker create 'x y' < env file: K", "[n1] docker start x"]
    assert [t for _, t in execute.ran[before:]] == texts
    assert [json.loads(line) for line in log.read_text().splitlines()] == [{"node": "n1", "command": t} for t in texts]
    assert ("n1", "probe", ()) not in facts._KNOWN  # the node changed: its facts are asked again


def test_a_success_whose_proof_fails_is_an_error() -> None:
    wrong = Command(("docker", "build", "-t", "img", "."), "n1", proves=Proof("img", "runrecipe.inputs", "h2"))
    with pytest.raises(RunError, match="does not carry the new build"):
        execute.run(Fake(), wrong)
