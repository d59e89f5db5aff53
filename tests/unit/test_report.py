"""The reporter: events rendered as today's text (same bytes, same stream) or as JSON lines."""
from __future__ import annotations

import io
import json
import threading

import pytest

from tasks.cli import events as cli_report
from tasks import report
from tasks.errors import ConfigError


def test_text_renders_each_event_on_its_stream() -> None:
    out, err = io.StringIO(), io.StringIO()
    with report.using(cli_report.TextReporter(out, err)):
        report.emit(report.Warn("the weights are not complete"))
        report.emit(report.LockWait("pid 12: run-recipe x"))
        report.emit(report.LockAcquired(2.345))
        report.emit(report.BytesMoved("  image x -> n2; chain; 1.0 GB left the head in 3.0 s", "image x", ("n2",), 10**9))
        report.say("started x on 2 node(s); waiting for http://h:8000 ...")
        report.emit(report.Failed("boom"))
    assert err.getvalue() == ("Warning: the weights are not complete\n"
                              "waiting for another run to finish (pid 12: run-recipe x) ...\n"
                              "lock acquired after 2.3 s\n"
                              "started x on 2 node(s); waiting for http://h:8000 ...\n"
                              "Error: boom\n")
    assert out.getvalue() == "  image x -> n2; chain; 1.0 GB left the head in 3.0 s\n"


def test_json_is_one_object_per_line_with_the_fields() -> None:
    stream = io.StringIO()
    with report.using(cli_report.JsonReporter(stream)):
        report.emit(report.Ready("serving m at http://h:8000: ready in 3.0 s", "http://h:8000", "m"))
        report.emit(report.Downloaded("org/m@abc: 2 files", "org/m", "abc", 2, 10, 1.5))
        report.emit(report.Note("a table\n", to_stdout=True))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0] == {"event": "ready", "text": "serving m at http://h:8000: ready in 3.0 s",
                        "endpoint": "http://h:8000", "model": "m"}
    assert lines[1] == {"event": "downloaded", "text": "org/m@abc: 2 files", "repo": "org/m", "commit": "abc",
                        "files": 2, "bytes": 10, "seconds": 1.5}
    assert lines[2] == {"event": "note", "text": "a table\n"}
    assert cli_report.JsonReporter(stream).live() is None  # no progress bars between JSON lines


def test_json_scrubs_remembered_secrets() -> None:
    from tasks import masking

    masking.remember_secret("sk-report-secret-123456")
    stream = io.StringIO()
    with report.using(cli_report.JsonReporter(stream)):
        report.emit(report.Warn("the key sk-report-secret-123456 leaked"))
    assert "sk-report-secret-123456" not in stream.getvalue()


def test_the_fallback_writes_todays_bytes_to_the_sys_streams(capsys: pytest.CaptureFixture[str]) -> None:
    report.emit(report.Warn("w"))
    report.emit(report.BytesMoved("copied", "image"))
    assert capsys.readouterr() == ("copied\n", "Warning: w\n")


def test_using_wins_over_the_installed_one_and_threads_see_the_installed_one() -> None:
    installed, scoped = report.Collect(), report.Collect()
    before = report.install(installed)
    try:
        with report.using(scoped):
            report.say("here")
            worker = threading.Thread(target=report.say, args=("in a thread",))
            worker.start()
            worker.join()
        report.say("after")
    finally:
        report.install(before)
    assert [e.text for e in scoped.events] == ["here"]
    assert [e.text for e in installed.events] == ["in a thread", "after"]


def test_the_environment_chooses_the_renderer() -> None:
    assert isinstance(cli_report.for_environment({}), cli_report.TextReporter)
    assert isinstance(cli_report.for_environment({"RUNRECIPE_EVENTS": "json"}), cli_report.JsonReporter)
    with pytest.raises(ConfigError, match="RUNRECIPE_EVENTS='xml'"):
        cli_report.for_environment({"RUNRECIPE_EVENTS": "xml"})


def test_json_events_never_reach_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """A --json command's stdout is its JSON alone: events, even the ones text puts on stdout, go to stderr."""
    with report.using(cli_report.JsonReporter()):
        report.emit(report.BytesMoved("copied", "image", ("n2",), 5))
        report.emit(report.Note("table", to_stdout=True))
    out, err = capsys.readouterr()
    assert out == "" and [json.loads(line)["event"] for line in err.splitlines()] == ["bytes_moved", "note"]
