"""The run record's stop mark: a stop holds against a launch already under way, and the watcher's
re-form never starts over it; the user's next launch does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.ops import run_record
from tasks.flagtypes import run_words

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    return tmp_path


def test_a_stop_marks_even_a_recipe_without_a_record() -> None:
    assert run_record.stop_mark(run_record.read("first") or {}) is None
    run_record.mark_stopped("first")  # its first launch may be under way
    assert run_record.read("first")["recipe"] == "first" and run_record.stop_mark(run_record.read("first") or {})


def test_stop_all_marks_every_record_and_each_stop_is_a_new_mark() -> None:
    run_record.save("a/b", {"recipe": "a/b", "nodes": []})
    run_record.save("c", {"recipe": "c", "watch": {"state": "watching"}})
    run_record.mark_stopped(None)
    first = run_record.stop_mark(run_record.read("a/b"))
    assert first and run_record.stop_mark(run_record.read("c")) and run_record.read("c")["watch"] == {"state": "watching"}
    run_record.mark_stopped("a/b")  # the same second: still another mark
    assert run_record.stop_mark(run_record.read("a/b")) not in (None, first)


def test_a_launch_fails_only_for_a_stop_that_came_after_it_began() -> None:
    run_record.mark_stopped("r")
    seen = run_record.stop_mark(run_record.read("r"))
    run_record.refuse_if_stopped("r", run_record.read("r"), seen, reform=False)  # the user launched again after a stop: fine
    run_record.mark_stopped("r")  # a stop while it started the server
    with pytest.raises(run_record.StoppedError, match="r: stopped with `run-recipe stop` at .* while this run "
                                                      "started it; what it started is removed"):
        run_record.refuse_if_stopped("r", run_record.read("r"), seen, reform=False)


def test_the_watchers_re_form_refuses_any_stop_mark() -> None:
    run_record.refuse_if_stopped("r", {}, None, reform=True)  # never stopped
    run_record.mark_stopped("r")
    seen = run_record.stop_mark(run_record.read("r"))
    with pytest.raises(run_record.StoppedError, match="the watcher does not start it again"):
        run_record.refuse_if_stopped("r", run_record.read("r"), seen, reform=True)


@pytest.mark.parametrize("words, flags, expect", [
    (["r", "-n", "a,b", "-d"], ("-d", "--reform"), ["r", "-n", "a,b", "-d", "--reform"]),
    (["r", "--daemon", "--", "--seed", "1", "-d"], ("-d",), ["r", "-d", "--", "--seed", "1", "-d"]),
    (["r", "--reform", "--", "--api-key", "k"], (), ["r", "--", "--api-key", "k"]),
])
def test_run_words_put_our_flags_before_the_vllm_words(words: list[str], flags: tuple[str, ...],
                                                        expect: list[str]) -> None:
    assert run_words(words, *flags) == expect


def test_updates_from_several_processes_lose_nothing(home: Path) -> None:
    """A stop and a launch's last write are read-change-write on one file: under the records' lock no
    process writes over another's change (here: 4 processes x 25 increments, each holding a moment)."""
    code = ("import time; from tasks.ops import run_record\n"
            "def bump(r):\n    time.sleep(0.001)\n    return {**r, 'n': r.get('n', 0) + 1}\n"
            "for _ in range(25): run_record.update('r', bump)\n")
    env = {**os.environ, "RUNRECIPE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=home) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 4
    assert run_record.read("r") == {"n": 100}


def test_stop_all_reaches_a_first_launch_under_way() -> None:
    """A launch begins: a recipe without a record gets one, so `stop --all` (which marks the records
    there are) marks it, and the launch then refuses to record its server."""
    assert run_record.begin("new") == {}
    run_record.mark_stopped(None)
    with pytest.raises(run_record.StoppedError, match="while this run started it"):
        run_record.refuse_if_stopped("new", run_record.read("new"), None, reform=False)
    assert run_record.begin("new")["stopped"]  # the next launch sees the mark it began over
