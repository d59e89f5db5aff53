"""One run session: both entry points hold a run the same way (the lock first, then what the run does), and the
session's lines go to the Say its caller gives, never straight to the console."""
from __future__ import annotations

from typing import Any

import pytest

from tasks import session, state


def recorder() -> tuple[list[str], session.Say]:
    lines: list[str] = []
    return lines, session.Say(info=lambda t: lines.append(f"info: {t}"), warning=lambda t: lines.append(f"warn: {t}"))


def test_dodo_takes_the_lock_before_the_loader_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    monkeypatch.setattr(state, "lock", lambda holder, wait=True: order.append(f"lock {holder}"))
    monkeypatch.setattr(state, "repair_dep_file", lambda: "the dep file was damaged: started afresh")
    lines, say = recorder()

    def load(given: session.Say) -> dict[str, Any]:
        order.append("load")
        assert given is say
        return {"task_x": lambda: {"actions": []}}

    assert set(session.for_doit(["run", "recipe=a"], load, say)) == {"task_x"}
    assert order == ["lock doit run recipe=a", "load"]
    assert lines == ["warn: the dep file was damaged: started afresh"]


def test_a_solo_plan_has_no_cluster_preflight() -> None:
    class Solo:
        mode = "solo"

    lines, say = recorder()
    assert session.preflight(Solo(), say) is None  # type: ignore[arg-type]
    assert lines == []
