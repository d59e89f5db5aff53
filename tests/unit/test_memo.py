"""The memo: a re-run with nothing changed gets the rendered script and the `bash -n` verdict from the
state dir, and anything changed is worked out again."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import memo
from tasks import plan
from tasks import render
from tasks.errors import RenderError

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = dict(recipe_name="r", recipe_file="/r.yaml", mode="solo", env={"A": "1"}, command="vllm serve m",
              exec_ok=True)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    return tmp_path


def entries(home: Path) -> list[Path]:
    folder = home / ".runrecipe" / "memo"
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def test_parts_are_length_prefixed() -> None:
    assert memo.key("ab", "c") != memo.key("a", "bc")
    assert memo.key("ab", "c") == memo.key(b"ab", "c")


def test_a_rerun_reads_the_rendered_script_without_jinja(home: Path) -> None:
    """The point of the memo, seen from a fresh process each time as a run is."""
    code = ("import sys; from tasks import render; text = render.render_template('launch.sh.j2', "
            f"**{LAUNCH!r}); print('jinja2' in sys.modules, len(text))")
    env = {**os.environ, "RUNRECIPE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    first, second = (subprocess.run([sys.executable, "-c", code], env=env, cwd=home, capture_output=True,
                                    text=True, check=True).stdout.split() for _ in range(2))
    assert first[0] == "True" and second == ["False", first[1]]
    assert len(entries(home)) == 1


def test_every_input_is_part_of_the_key(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = render.render_template("launch.sh.j2", **LAUNCH)
    assert render.render_template("launch.sh.j2", **LAUNCH) == base
    other = render.render_template("launch.sh.j2", **{**LAUNCH, "command": "vllm serve other"})
    assert "vllm serve other" in other and "vllm serve other" not in base
    # insertion order is what the template iterates: a reordered env is another script
    two = render.render_template("launch.sh.j2", **{**LAUNCH, "env": {"A": "1", "B": "2"}})
    swapped = render.render_template("launch.sh.j2", **{**LAUNCH, "env": {"B": "2", "A": "1"}})
    assert two.index("A=") < two.index("B=") and swapped.index("B=") < swapped.index("A=")
    # an edited template (here: a copy of the folder, changed) renders anew
    folder = tmp_path / "templates"
    folder.mkdir()
    for p in render.TEMPLATES_DIR.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "launch.sh.j2").write_text((folder / "launch.sh.j2").read_text() + "# edited\n")
    monkeypatch.setattr(render, "TEMPLATES_DIR", folder)
    render._environment.cache_clear()
    try:
        assert render.render_template("launch.sh.j2", **LAUNCH) == base + "# edited\n"
    finally:
        render._environment.cache_clear()


def test_values_that_are_not_plain_data_are_not_kept(home: Path) -> None:
    class Shown:
        def __str__(self) -> str:
            return "vllm serve m"

    text = render.render_template("launch.sh.j2", **{**LAUNCH, "command": Shown()})
    assert "vllm serve m" in text and entries(home) == []


def test_an_unwritable_state_dir_only_costs_the_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".runrecipe").write_text("a file where the state folder should be")
    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    assert "vllm serve m" in render.render_template("launch.sh.j2", **LAUNCH)
    plan.check_bash("echo ok\n", "r.yaml")


def test_only_a_passing_bash_check_is_kept(home: Path) -> None:
    plan.check_bash("echo ok\n", "r.yaml")
    assert [p.read_text() for p in entries(home)] == [""]
    for _ in range(2):  # a failure is never remembered: the second check runs bash again and fails again
        with pytest.raises(RenderError, match="r.yaml: command: the rendered script is not valid bash"):
            plan.check_bash("echo $(\n", "r.yaml")
    assert len(entries(home)) == 1


def test_the_oldest_entries_go_past_the_limit(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memo, "KEEP", 3)
    for i in range(5):
        memo.put(memo.key(str(i)), str(i))
        path = home / ".runrecipe" / "memo" / memo.key(str(i))
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    assert sorted(p.read_text() for p in entries(home)) == ["2", "3", "4"]
    assert memo.get(memo.key("0")) is None and memo.get(memo.key("4")) == "4"


def test_the_script_read_back_is_byte_for_byte_the_one_rendered(home: Path) -> None:
    """A `\\r` in a value read back as a line break: the second run ran another script than the first showed."""
    values = dict(LAUNCH, env={"A": "x\ry", "B": "crlf\r\nend", "C": "\u2028sep"})
    first = render.render_template("launch.sh.j2", **values)
    assert entries(home) and "x\ry" in first
    again = render.render_template("launch.sh.j2", **values)  # from the memo this time
    assert again == first
    memo.put("k", "a\rb\r\nc\n\u2028")
    assert memo.get("k") == "a\rb\r\nc\n\u2028"
