"""Large recipes stay linear: lint of 20,000 repeated flags, a dry run of a 1 MB recipe with 300,000
placeholders (issue #15, item 7).

Times are CPU seconds of this process (`bash -n` runs in a child and is left out), which other work on
this 2-core machine hardly moves, with the garbage collector paused while measuring (its full passes
over 300,000 fresh objects made a linear run look 2.7x once); N against 2N grows at most 3x
(quadratic work would grow 4x). The
absolute bounds are generous (the full sizes take about 1.5 s of CPU here; they took minutes in lint).
bench/large_recipes.py prints the same cases as wall and CPU time of a whole `run-recipe` process.
"""
from __future__ import annotations

import contextlib
import gc
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from harness.large_recipes import FLAGS, PLACEHOLDERS, placeholders, repeated_flags
from tasks.cli import main as cli
from tasks.lint import rules as lint

MAX_RATIO = 3.0


@pytest.fixture(autouse=True, scope="module")
def home() -> Iterator[Path]:
    """A scratch project (RUNRECIPE_HOME) and an engine address that answers nothing: a dry run asks none."""
    root = Path(tempfile.mkdtemp(prefix="rr-large-"))
    (root / "recipes").mkdir()
    saved = {k: os.environ.get(k) for k in ("RUNRECIPE_HOME", "DOCKER_HOST")}
    os.environ.update(RUNRECIPE_HOME=str(root), DOCKER_HOST="unix:///nonexistent.sock")
    yield root
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def cpu_seconds(run: Callable[[], object]) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            run()
        return time.process_time() - start
    finally:
        gc.enable()


@pytest.mark.parametrize("option, rule, per_line", [
    ("--max-num-seqs {i}", "duplicate-flag", 1),     # each repeat after the first
    ("--tokenizer bad!", "model-id", 2),             # each value (not a repo id) and each repeat
])
def test_lint_of_20000_repeated_flags_is_linear(home: Path, option: str, rule: str, per_line: int) -> None:
    times, findings = {}, {}
    for flags in (FLAGS // 2, FLAGS):
        path = home / "recipes" / f"flags-{flags}.yaml"
        path.write_text(repeated_flags(flags, option))
        times[flags] = cpu_seconds(lambda: findings.__setitem__(flags, lint.lint_file(path)))
    assert sum(f.rule == rule for f in findings[FLAGS]) >= FLAGS - 1
    assert len(findings[FLAGS]) == per_line * FLAGS - 1
    assert max(f.line for f in findings[FLAGS] if f.rule == "duplicate-flag") == FLAGS + 5  # each on its line
    assert times[FLAGS] < 10, times
    assert times[FLAGS] / times[FLAGS // 2] <= MAX_RATIO, times


def test_dry_run_of_300000_placeholders_is_linear(home: Path) -> None:
    times, codes = {}, {}
    for count in (PLACEHOLDERS // 2, PLACEHOLDERS):
        path = home / "recipes" / f"placeholders-{count}.yaml"
        path.write_text(placeholders(count))
        assert path.stat().st_size < 1 << 20
        times[count] = cpu_seconds(lambda: codes.__setitem__(count, cli.main([str(path), "--solo", "--dry-run"])))
    assert codes == {PLACEHOLDERS // 2: 0, PLACEHOLDERS: 0}
    assert times[PLACEHOLDERS] < 10, times
    assert times[PLACEHOLDERS] / times[PLACEHOLDERS // 2] <= MAX_RATIO, times
