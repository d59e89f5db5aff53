"""The one fan-out: answers in item order, every item finishes, the first error in item order surfaces."""
from __future__ import annotations

import threading
import time

import pytest

from tasks.fanout import each


def test_answers_come_in_item_order_whatever_finishes_first() -> None:
    assert each(lambda n: time.sleep(0.01 * (5 - n)) or n * n, range(5)) == [0, 1, 4, 9, 16]


def test_the_first_error_in_item_order_is_raised_after_every_item_finished() -> None:
    done: list[int] = []

    def work(n: int) -> int:
        time.sleep(0.05 if n == 1 else 0.0)
        done.append(n)
        if n in (1, 3):
            raise ValueError(f"item {n}")
        return n

    with pytest.raises(ValueError, match="item 1"):
        each(work, [0, 1, 2, 3])
    assert sorted(done) == [0, 1, 2, 3]


def test_items_overlap_up_to_workers() -> None:
    running, most = [0], [0]
    lock, three = threading.Lock(), threading.Barrier(3, timeout=10)  # breaks unless 3 run at once

    def work(_: int) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        three.wait()
        with lock:
            running[0] -= 1

    each(work, range(6), workers=3)
    assert most[0] == 3


def test_one_item_runs_here_and_none_runs_nothing() -> None:
    assert each(lambda _: threading.current_thread() is threading.main_thread(), ["only"]) == [True]
    assert each(lambda _: 1 / 0, []) == []


def test_threads_carry_the_callers_name() -> None:
    names = each(lambda _: threading.current_thread().name, [1, 2], name="preflight")
    assert all(n.startswith("preflight") for n in names)
