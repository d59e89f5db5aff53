"""What a failed launch keeps: every node's whole log (streams merged in order, secrets scrubbed) in the
state folder, and an error naming the root cause and that folder. Runners are stand-ins answering
`docker logs --timestamps` as the daemon does (RFC 3339, nanoseconds, UTC)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.ops import crash_logs
from tasks.facts import docker
from tasks.errors import RunError
from tasks.connect import Result

LOGS = Path(__file__).parent / "fixtures" / "vllm-logs"


class LogRunner:
    """A node whose `docker logs --timestamps` answers (stdout, stderr), or fails like an unreachable node."""

    def __init__(self, node: str, stdout: str = "", stderr: str = "", fails: bool = False) -> None:
        self.node, self.stdout, self.stderr, self.fails = node, stdout, stderr, fails
        self.asked: list[list[str]] = []

    def read(self, argv: list[str], *, check: bool = True, timeout: float = 60) -> Result:
        self.asked.append(argv)
        if self.fails:
            raise RunError(f"ssh to {self.node} failed", node=self.node, command=" ".join(argv), exit_code=255)
        return Result(self.stdout, self.stderr, 0)


def stamped(lines: list[str], second: int = 0) -> str:
    """`docker logs -t` lines, one microsecond apart from `second` on."""
    return "".join(f"2026-12-07T10:00:{second:02d}.{i:06d}000Z {line}\n" for i, line in enumerate(lines))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    return tmp_path


def plan(env: dict[str, str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(recipe=SimpleNamespace(id="cpu/tiny", env=env or {}), container_name="rr-tiny")


def test_the_two_streams_come_back_in_the_order_written() -> None:
    """vLLM's logger writes stdout, tracebacks go to stderr: apart, the first error could sort after its echo."""
    runner = LogRunner("local", stdout="2026-12-07T10:00:01.000000001Z INFO up\n"
                                       "2026-12-07T10:00:03.000000000Z 50%|#####\r100%|##########\n",
                       stderr="2026-12-07T10:00:02.500000000Z Traceback (most recent call last):\n")
    assert docker.logs(runner, "c1") == "INFO up\nTraceback (most recent call last):\n50%|#####\r100%|##########\n"
    assert runner.asked == [["docker", "logs", "--timestamps", "c1"]]
    assert docker.logs(LogRunner("local"), "c1") == ""


def test_a_dead_server_names_its_root_cause_and_every_node_s_log_is_kept(home: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    head_log = (LOGS / "no-compiler.log").read_text().splitlines()
    monkeypatch.setenv("HF_TOKEN", "hf_fromtheenvironment")
    head = LogRunner("local", stdout=stamped(head_log[:-1] + ["token hf_fromtheenvironment and hf_fromtherecipe"]),
                     stderr=stamped([head_log[-1]], second=1))
    worker = LogRunner("198.18.0.12", stdout=stamped(["standin-vllm: headless worker"]))
    lost = LogRunner("198.18.0.13", fails=True)
    err = crash_logs.failure(plan({"HF_TOKEN": "hf_fromtherecipe"}), [(head, "c1"), (worker, "c2"), (lost, "c3")], 0,
                             "http://127.0.0.1:8000/health answered 503 (vLLM's engine is dead)",
                             command="/runrecipe/launch.sh")
    text = str(err)
    assert "cause: no C++ compiler in the image (torch._inductor.exc.InductorError: InvalidCxxCompiler" in text
    assert "EngineDeadError" not in text.split("last output:")[0]
    folder = Path(text.split("every node's full log is kept in ", 1)[1].split()[0])
    assert folder.parent == home / ".runrecipe" / "logs" / "cpu%2Ftiny"
    assert sorted(p.name for p in folder.iterdir()) == ["198.18.0.12-rr-tiny.log", "local-rr-tiny.log"]
    kept = (folder / "local-rr-tiny.log").read_text().splitlines()
    assert kept[:-2] == head_log[:-1] and kept[-1] == head_log[-1], "the whole log, in order"
    assert kept[-2] == "token **** and ****", "secrets scrubbed, the recipe's env ones too"
    assert "not read: 198.18.0.13: ssh to 198.18.0.13 failed" in text
    assert err.node == "local" and err.tail.splitlines() == kept[-docker.LOG_TAIL:]


def test_a_slow_server_gets_no_cause_and_a_state_folder_that_cannot_be_written_is_said(home: Path) -> None:
    head = LogRunner("local", stdout=stamped(["KeyError: 'never mind'"]))
    text = str(crash_logs.failure(plan(), [(head, "c1")], 0, "the server was not ready after 5 s"))
    assert "cause:" not in text and "every node's full log is kept in " in text
    (home / ".runrecipe").rename(home / "moved")
    (home / ".runrecipe").write_text("a file where the state folder goes")
    text = str(crash_logs.failure(plan(), [(head, "c1")], 0, "exited (code 1)", command="/runrecipe/launch.sh", code=1))
    assert "cause: the first error the server logged (KeyError: 'never mind')" in text
    assert "the containers' logs could not be kept: " in text and "cannot use it as runrecipe's state folder" in text


def test_only_the_newest_failed_launches_are_kept(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crash_logs, "KEEP", 2)
    folders = [crash_logs.save("r", [("local", "c", f"launch {i}\n")]) for i in range(3)]
    left = sorted((home / ".runrecipe" / "logs" / "r").iterdir())
    assert left == folders[1:] and (left[-1] / "local-c.log").read_text() == "launch 2\n"
