"""The run record's stop mark: a stop holds against a launch already under way, and the watcher's
re-form never starts over it; the user's next launch does."""
from __future__ import annotations

from pathlib import Path

import pytest

from tasks import run_record
from tasks.flagtypes import run_words


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    return tmp_path


def test_a_stop_marks_even_a_recipe_without_a_record() -> None:
    assert run_record.stop_mark("first") is None
    run_record.mark_stopped("first")  # its first launch may be under way
    assert run_record.read("first")["recipe"] == "first" and run_record.stop_mark("first")


def test_stop_all_marks_every_record_and_each_stop_is_a_new_mark() -> None:
    run_record.save("a/b", {"recipe": "a/b", "nodes": []})
    run_record.save("c", {"recipe": "c", "watch": {"state": "watching"}})
    run_record.mark_stopped(None)
    first = run_record.stop_mark("a/b")
    assert first and run_record.stop_mark("c") and run_record.read("c")["watch"] == {"state": "watching"}
    run_record.mark_stopped("a/b")  # the same second: still another mark
    assert run_record.stop_mark("a/b") not in (None, first)


def test_a_launch_fails_only_for_a_stop_that_came_after_it_began() -> None:
    run_record.mark_stopped("r")
    seen = run_record.stop_mark("r")
    run_record.refuse_if_stopped("r", seen, reform=False)  # the user launched again after a stop: fine
    run_record.mark_stopped("r")  # a stop while it started the server
    with pytest.raises(run_record.StoppedError, match="r: stopped with `run-recipe stop` at .* while this run "
                                                      "started it; what it started is removed"):
        run_record.refuse_if_stopped("r", seen, reform=False)


def test_the_watchers_re_form_refuses_any_stop_mark() -> None:
    run_record.refuse_if_stopped("r", None, reform=True)  # never stopped
    run_record.mark_stopped("r")
    seen = run_record.stop_mark("r")
    with pytest.raises(run_record.StoppedError, match="the watcher does not start it again"):
        run_record.refuse_if_stopped("r", seen, reform=True)


@pytest.mark.parametrize("words, flags, expect", [
    (["r", "-n", "a,b", "-d"], ("-d", "--reform"), ["r", "-n", "a,b", "-d", "--reform"]),
    (["r", "--daemon", "--", "--seed", "1", "-d"], ("-d",), ["r", "-d", "--", "--seed", "1", "-d"]),
    (["r", "--reform", "--", "--api-key", "k"], (), ["r", "--", "--api-key", "k"]),
])
def test_run_words_put_our_flags_before_the_vllm_words(words: list[str], flags: tuple[str, ...],
                                                        expect: list[str]) -> None:
    assert run_words(words, *flags) == expect
