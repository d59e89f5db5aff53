"""The watcher's policy over scripted runs: re-form on a failure, exponential backoff, the crash-loop cap."""
from __future__ import annotations

from tasks.serve import watch
from tasks.errors import RunError


class Scripted:
    """A run whose checks and converges follow a script; records what the watcher did to it."""

    def __init__(self, checks: list[str | None], converges: list[str | None]) -> None:
        self.name, self.checks, self.converges = "r", checks, converges
        self.actions: list[str] = []
        self.notes: list[dict] = []
        self.stopped = ""  # set by a test: `run-recipe stop` marked the run

    def ended(self) -> str | None:
        return self.stopped or None

    def check(self) -> str | None:
        return self.checks.pop(0) if self.checks else None

    def teardown(self) -> None:
        self.actions.append("teardown")

    def converge(self) -> None:
        self.actions.append("converge")
        failure = self.converges.pop(0) if self.converges else None
        if failure:
            raise RunError(f"r: the converge exited 1\nError: not ready\n  cause: {failure}")

    def note(self, state: dict) -> None:
        self.notes.append(state)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_dead_rank_is_torn_down_and_converged_once() -> None:
    run, clock, lines = Scripted([None, "rank 1 on n2: container exited (exit 137)", None], []), Clock(), []
    assert watch.watch([run], watch.Policy(interval=1), lines.append, clock, clock.sleep, rounds=3) == 0
    assert run.actions == ["teardown", "converge"]
    assert run.notes[-1]["restarts"] == 1 and run.notes[-1]["state"] == "watching"
    assert run.notes[-1]["last_cause"] == "rank 1 on n2: container exited (exit 137)"
    assert any("tearing down the group" in ln for ln in lines) and any("serving again" in ln for ln in lines)


def test_failed_restarts_back_off_exponentially_and_hit_the_cap() -> None:
    run, clock, lines = Scripted(["not running"], ["out of memory"] * 10), Clock(), []
    policy = watch.Policy(interval=1, backoff=2, max_failures=4, window=600)
    assert watch.watch([run], policy, lines.append, clock, clock.sleep) == 1
    assert run.actions.count("converge") == 4
    waits = [ln.rsplit("next try in ", 1)[1] for ln in lines if "next try in" in ln]
    assert waits == ["2 s", "4 s", "8 s"]
    assert run.notes[-1]["state"] == "stopped" and run.notes[-1]["restarts"] == 4
    assert "crash loop: 4 failed restarts within 10 min; last cause: cause: out of memory" in run.notes[-1]["stopped"]


def test_failures_outside_the_window_do_not_count() -> None:
    tally, policy = watch.Tally(), watch.Policy(backoff=1, max_failures=2, window=60)
    tally.failed(0, policy)
    tally.failed(100, policy)
    assert not tally.gave_up and len(tally.failures) == 1
    tally.failed(110, policy)
    assert tally.gave_up


def test_a_run_stopped_on_purpose_is_not_re_formed_and_the_watcher_ends_with_0() -> None:
    """`run-recipe stop` marks the record first; its containers vanish next, which a check reads as failure."""
    run, clock, lines = Scripted([None, "rank 0 on n1: container gone"], []), Clock(), []
    other = Scripted([None] * 10, [])
    other.name = "other"

    def stopped_during_the_check() -> str | None:  # marked while the check ran: the check saw the gone container
        cause = run.checks.pop(0)
        if cause:
            run.stopped = "stopped with `run-recipe stop` at T"
        return cause
    run.check = stopped_during_the_check  # type: ignore[method-assign]
    assert watch.watch([run, other], watch.Policy(interval=1), lines.append, clock, clock.sleep, rounds=3) == 0
    assert run.actions == [] and run.notes[-1]["state"] == "ended"
    assert "r: stopped with `run-recipe stop` at T: stopped watching it" in lines
    other.stopped = "stopped"
    assert watch.watch([other], watch.Policy(interval=1), lines.append, clock, clock.sleep) == 0


def test_a_stop_during_the_re_form_ends_the_watch_without_counting_a_failure() -> None:
    """The converge refused (or removed what it started) because `run-recipe stop` marked the run
    meanwhile: that is the user's stop, not a failed restart; no retry, exit 0."""
    run, clock, lines = Scripted(["container gone"], ["stopped with `run-recipe stop`"]), Clock(), []
    converge = run.converge

    def stopped_meanwhile() -> None:
        run.stopped = "stopped with `run-recipe stop` at T"
        converge()

    run.converge = stopped_meanwhile  # type: ignore[method-assign]
    assert watch.watch([run], watch.Policy(interval=1), lines.append, clock, clock.sleep) == 0
    assert run.actions == ["teardown", "converge"]
    assert run.notes[-1]["state"] == "ended" and run.notes[-1]["failed_restarts"] == 0
    assert not any("next try" in ln for ln in lines)


ESCAPES = "\x1b[2J\x1b]0;pwned\x07\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\\rover\x9b31m"


def test_log_text_reaches_records_and_lines_without_terminal_controls() -> None:
    """A container's log is someone else's text: kept in the run record, printed by watch and status."""
    from tasks.facts import docker
    from tasks.serve import lifecycle
    from tasks.connect import Result

    class Logs:
        node = "n1"

        def read(self, argv: list[str], *, check: bool = True, timeout: float = 60) -> Result:
            return Result(f"RuntimeError: CUDA error {ESCAPES}\r\n", "", 0)

    tail = docker.logs_tail(Logs(), "cid")
    assert tail == "RuntimeError: CUDA error clickover"
    run, clock, lines = Scripted([f"rank 0 on n1: container exited; {ESCAPES}", None], []), Clock(), []
    watch.watch([run], watch.Policy(interval=1), lines.append, clock, clock.sleep, rounds=2)
    assert run.notes[-1]["last_cause"] == "rank 0 on n1: container exited; clickover"
    assert not any(ch in "".join(lines) for ch in "\x1b\x07\r\x9b")
    error = RunError("the server exited", node="n1", command="x", exit_code=1, tail=f"boom {ESCAPES}")
    assert "\x1b" not in str(error) and "boom clickover" in str(error)
    old = {"watch": {"state": "watching", "restarts": 1, "last_cause": f"cause: {ESCAPES}", "at": "t"}}
    line = lifecycle.supervision_line("r", old)  # a record written before this: shown clean too
    assert "\x1b" not in line and "last cause: cause: clickover (t)" in line
