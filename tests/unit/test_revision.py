"""Revisions follow git's ref-name rules (git check-ref-format): anything else is refused, naming where it came from."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tasks.errors import ConfigError
from tasks.plan import Options, make_plan
from tasks.recipe import parse

GOOD = ["main", "v1.0", "refs/pr/3", "0123456789abcdef0123456789abcdef01234567", "feature/x-1", "a@b", "v.1"]
BAD = ["-main", "--upload-pack=x", "@", "a..b", "a\x01b", "a\tb", "a\x7fb", "x@{1}", "main.lock", "a/b.lock/c",
       "a/.hidden", ".main", "main/", "main.", "a//b", "/main", "a b", "x~1", "x^", "feat:x", "a?", "a*", "a[b",
       "a\\b", ""]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    return tmp_path


def recipe(project: Path):  # type: ignore[no-untyped-def]
    return parse("recipe_version: '1'\nname: m\nmodel: org/m\ncontainer: c\ncommand: vllm serve org/m\n", project / "m.yaml")


@pytest.mark.parametrize("revision", GOOD)
def test_git_ref_names_are_accepted(project: Path, revision: str) -> None:
    plan = make_plan(recipe(project), Options(solo=True, revision=revision))
    assert plan.models[0].revision == revision


@pytest.mark.parametrize("revision", [b for b in BAD if b])
def test_names_git_refuses_are_refused_from_the_flag(project: Path, revision: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"--revision: '{revision}' is not a branch, tag or commit")):
        make_plan(recipe(project), Options(solo=True, revision=revision))


@pytest.mark.parametrize("revision", ["-main", "@", "x@{1}", "main.lock", "a/.hidden"])
def test_names_git_refuses_are_refused_from_the_recipe(project: Path, revision: str) -> None:
    plan_recipe = parse(f"recipe_version: '1'\nname: m\nmodel: org/m\ncontainer: c\nrevision: '{revision}'\ncommand: vllm serve org/m\n",
                        project / "m.yaml")
    with pytest.raises(ConfigError, match=re.escape(f"m.yaml: revision: '{revision}' is not a branch")):
        make_plan(plan_recipe, Options(solo=True))


@pytest.mark.parametrize("revision", GOOD + [b for b in BAD if b])
def test_the_rules_agree_with_git(project: Path, revision: str) -> None:
    """git is the reference (`git check-ref-format refs/heads/NAME`), plus what `--branch` and the hub add:
    no leading '-' (an option to any command line), not '@' alone (git's shorthand for HEAD)."""
    git = subprocess.run(["git", "check-ref-format", f"refs/heads/{revision}"], capture_output=True)
    expected = git.returncode == 0 and not revision.startswith("-") and revision != "@"
    try:
        make_plan(recipe(project), Options(solo=True, revision=revision))
        ours = True
    except ConfigError:
        ours = False
    assert ours == expected, (revision, git.stderr)
