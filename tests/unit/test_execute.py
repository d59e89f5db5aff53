"""The executor: runs each Command on its node the way the Command says, records the text `plan` shows,
forgets the node's facts, and refuses a success whose proof does not hold. A fake runner, no daemon."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tasks.ops import execute
from tasks.facts import cache as facts
from tasks.ops.commands import Command, Input, Proof, Stream
from tasks.errors import RunError
from tasks.connect import Pumped, Result

INSPECT = '{"id":"sha256:9","labels":{"runrecipe.inputs":"h1"},"workdir":"/","size":1,"env":[]}'


class Fake:
    """Records run/feed calls; `docker image inspect` answers INSPECT (the image exists with label h1).
    The executor, not the runner, forgets the node's facts after each command."""

    node = "n1"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def run(self, argv: list[str], *, stream: bool = True, timeout: float | None = None, check: bool = True) -> Result:
        self.calls.append(("run", argv, stream, timeout, check))
        return Result("out\n", "", 0)

    def feed(self, argv: list[str], data: bytes, *, timeout: float | None = 600, check: bool = True) -> Result:
        self.calls.append(("feed", argv, data, timeout, check))
        return Result("cid\n", "", 0)

    def read(self, argv: list[str], *, check: bool = True, timeout: float = 60) -> Result:
        return Result(INSPECT + "\n", "", 0)


def test_each_command_runs_as_it_says_and_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "ran.jsonl"
    monkeypatch.setenv("RUNRECIPE_EXEC_LOG", str(log))
    runner = Fake()
    facts.fact("n1", "probe", (), lambda: 1)
    build = Command(("docker", "build", "-t", "img", "."), "n1", output="stream",
                    proves=Proof("img", "runrecipe.inputs", "h1"))
    create = Command(("docker", "create", "x y"), "n1", Input("env file: K", lambda: b"K=v\n", secret=True), timeout=120)
    start = Command(("docker", "start", "x"), "n1", timeout=60)
    results = [execute.run(runner, c) for c in (build, create, start)]
    assert [r.stdout for r in results] == ["out\n", "cid\n", "out\n"]
    assert runner.calls == [("run", ["docker", "build", "-t", "img", "."], True, None, True),
                            ("feed", ["docker", "create", "x y"], b"K=v\n", 120, True),
                            ("run", ["docker", "start", "x"], False, 60, True)]
    texts = ["[n1] docker build -t img .", "[n1] docker create 'x y' < env file: K", "[n1] docker start x"]
    assert [json.loads(line) for line in log.read_text().splitlines()] == [{"node": "n1", "command": t} for t in texts]
    assert ("n1", "probe", ()) not in facts._KNOWN  # the node changed: its facts are asked again


def test_a_success_whose_proof_fails_is_an_error() -> None:
    wrong = Command(("docker", "build", "-t", "img", "."), "n1", proves=Proof("img", "runrecipe.inputs", "h2"))
    with pytest.raises(RunError, match="does not carry the new build"):
        execute.run(Fake(), wrong)


class Link(Fake):
    """A node's OpenSSH link as the executor sees it: it also sends (rsync) and pumps streams."""

    def argv_for(self, argv: list[str]) -> list[str]:
        return ["ssh", "n1", *argv]

    def send(self, argv: list[str], data: bytes, *, timeout: float | None = None, check: bool = True) -> Result:
        self.calls.append(("send", argv, data, timeout, check))
        return Result("sent\n", "", 0)

    def pump(self, source: list[str], argv: list[str], **kw) -> Pumped:
        self.calls.append(("pump", source, argv, kw["ahead"], kw["feed"], kw["label"]))
        return Pumped(7, "", "RRSTAT take n1 0 -\n", "", False, 0.0)


def test_copies_run_as_they_say_and_are_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream (a head command's output, a header ahead of it) is pumped into the node; an rsync is sent
    by the node's link; both are recorded in the text a plan prints, script words by name."""
    log = tmp_path / "ran.jsonl"
    monkeypatch.setenv("RUNRECIPE_EXEC_LOG", str(log))
    link = Link()
    hop = Command(("sh", "-c", "# a hop\ncat\n", "hop"), "n1",
                  Stream(("docker", "save", "img"), "n1 loads it", lambda: b"HEAD", size=9, label="image -> n1"))
    rsync = Command(("rsync", "-a", "/src/", "n1:/dst/"), "n1", Input("3 names", lambda: b"a\0b\0c"), sends=True)
    assert execute.stream(link, hop).sent == 7
    assert execute.run(link, rsync).stdout == "sent\n"
    assert link.calls == [("pump", ["docker", "save", "img"], ["sh", "-c", "# a hop\ncat\n", "hop"], b"HEAD", None,
                           "image -> n1"),
                          ("send", ["rsync", "-a", "/src/", "n1:/dst/"], b"a\0b\0c", None, True)]
    texts = [json.loads(line)["command"] for line in log.read_text().splitlines()]
    digest = hashlib.sha256(b"# a hop\ncat\n").hexdigest()[:12]
    assert texts == [f"docker save img | [n1] sh -c <a hop: sha256 {digest}> hop (ahead of it: n1 loads it)",
                     "rsync -a /src/ n1:/dst/ < 3 names"]
