"""facts.gather asks side by side and remembers what it learnt; a failing ask is left for its step."""
from __future__ import annotations

import threading
import time

import pytest

from tasks.facts import cache as facts


def test_gather_runs_asks_at_once_and_remembers_answers() -> None:
    both_started = threading.Barrier(2, timeout=5)  # each ask waits for the other: one at a time would time out

    def ask(value: str):
        def answer() -> str:
            both_started.wait()
            return value
        return answer

    facts.gather([lambda: facts.fact("n-gather", "a", (), ask("A")),
                  lambda: facts.fact("n-gather", "b", (), ask("B"))])
    assert facts.fact("n-gather", "a", (), lambda: "asked again") == "A"
    assert facts.fact("n-gather", "b", (), lambda: "asked again") == "B"


def test_a_failing_ask_is_not_remembered_and_the_step_sees_its_error() -> None:
    def broken() -> str:
        raise RuntimeError("engine not reachable")

    facts.gather([lambda: facts.fact("n-broken", "info", (), broken)])
    with pytest.raises(RuntimeError, match="engine not reachable"):
        facts.fact("n-broken", "info", (), broken)
    assert facts.fact("n-broken", "info", (), lambda: "up") == "up"


def test_an_answer_begun_before_the_node_changed_is_not_kept() -> None:
    """A gathered ask still in flight when a command changes the node (forget) holds the old state:
    the check that waited for it asks again instead of taking it."""
    started, release = threading.Event(), threading.Event()

    def slow_old_state() -> str:
        started.set()
        release.wait(5)
        return "old"

    facts.gather([lambda: facts.fact("n-change", "image", (), slow_old_state)])
    assert started.wait(5)
    facts.forget("n-change")  # e.g. a build just finished
    threading.Timer(0.2, release.set).start()
    assert facts.fact("n-change", "image", (), lambda: "new") == "new"
    assert facts.fact("n-change", "image", (), lambda: "asked again") == "new"


def test_a_check_waiting_for_a_failing_ask_gets_its_error_without_asking_again() -> None:
    """An engine that hangs: the gathered ask times out once, and the waiting check reports that, not a second wait."""
    started, calls = threading.Event(), []

    def hangs_then_fails() -> str:
        calls.append("gathered")
        started.set()
        time.sleep(0.3)
        raise RuntimeError("docker info: timed out after 20 s")

    facts.gather([lambda: facts.fact("n-hang", "info", (), hangs_then_fails)])
    assert started.wait(5)
    with pytest.raises(RuntimeError, match="timed out"):
        facts.fact("n-hang", "info", (), lambda: calls.append("asked again") or "up")
    assert calls == ["gathered"]
    assert facts.fact("n-hang", "info", (), lambda: "up") == "up"  # not remembered: the next check asks
