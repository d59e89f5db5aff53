"""One run session: both entry points hold a run the same way (the lock first, then what the run does), and the
session's lines are events for the reporter, never straight to the console."""
from __future__ import annotations

from typing import Any

import pytest

from tasks import report
from tasks.graph import session
from tasks import state


def test_dodo_takes_the_lock_before_the_loader_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    monkeypatch.setattr(state, "lock", lambda holder, wait=True: order.append(f"lock {holder}"))
    monkeypatch.setattr(state, "repair_dep_file", lambda: "the dep file was damaged: started afresh")

    def load() -> dict[str, Any]:
        order.append("load")
        return {"task_x": lambda: {"actions": []}}

    with report.using(report.Collect()) as seen:
        assert set(session.for_doit(["run", "recipe=a"], load)) == {"task_x"}
    assert order == ["lock doit run recipe=a", "load"]
    assert [(e.kind, e.text) for e in seen.events] == [("warning", "Warning: the dep file was damaged: started afresh")]


def test_a_solo_plan_has_no_cluster_preflight() -> None:
    class Solo:
        mode = "solo"

    with report.using(report.Collect()) as seen:
        assert session.preflight(Solo()) is None  # type: ignore[arg-type]
    assert seen.events == []
