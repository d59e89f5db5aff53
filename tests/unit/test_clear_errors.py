"""Inputs that once ended in a traceback: a model no hub can have, a state folder or lock of the wrong file
type, a corrupt doit dependency file (reported, rebuilt, and the run carries on). Exit code 1 and one
message naming the file and what to do; never a traceback. (MASTER_PORT=² is in test_cli_flags.py.)"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness.hub import LocalHub

from .test_cli import ROOT, cli, home  # noqa: F401 - the fixture and the runner of the CLI tests


def clean(res: subprocess.CompletedProcess[str]) -> str:
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    return out


@pytest.mark.parametrize("model", ["--foo", "a b/c", "org/a--b", "-", "org/.x"])
@pytest.mark.parametrize("args", [["--dry-run"], ["--download-only"]])
def test_a_model_no_hub_can_have_is_refused_naming_the_file(home: Path, model: str, args: list[str]) -> None:
    path = home / "recipes" / "badmodel.yaml"
    path.write_text(f"recipe_version: '1'\nname: B\ncontainer: img\nmodel: '{model}'\ncommand: vllm serve x --port {{port}}\n"
                    "defaults: {port: 8000}\n")
    res = cli(home, "badmodel", "--solo", *args)
    assert res.returncode == 1
    assert f"Error: {path}: model: '{model}' is neither a HuggingFace repo id" in clean(res)


@pytest.mark.parametrize("make, needle", [
    (lambda state: state.write_text("a file"), ".runrecipe: cannot use it as runrecipe's state folder"),
    (lambda state: (state / "lock").mkdir(parents=True), "lock: cannot open the lock file (Is a directory)"),
    (lambda state: (state / "doit.sqlite3").mkdir(parents=True), "doit.sqlite3: doit's dependency file is not"),
])
def test_state_files_of_the_wrong_type_are_named(home: Path, make, needle: str) -> None:  # type: ignore[no-untyped-def]
    make(home / ".runrecipe")
    res = cli(home, "good", "--solo", "--download-only")
    assert res.returncode == 1 and needle in clean(res), res.stderr
    env = {**os.environ, "RUNRECIPE_HOME": str(home), "PYTHONPATH": str(ROOT), "DOCKER_HOST": "unix:///x.sock"}
    doit = subprocess.run([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "list"], cwd=home, env=env,
                          capture_output=True, text=True, timeout=60)
    assert doit.returncode == 1 and needle in clean(doit), doit.stderr


def test_a_corrupt_dependency_file_is_reported_rebuilt_and_the_run_carries_on(home: Path) -> None:
    state = home / ".runrecipe"
    state.mkdir()
    (state / "doit.sqlite3").write_bytes(b"not a database, whatever happened to it" * 100)
    with LocalHub() as hub:
        hub.create_repo("org/good", {"config.json": b"{}"})
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(home / "hf")}
        res = cli(home, "good", "--solo", "--download-only", **env)
        assert res.returncode == 0, res.stdout + res.stderr
        out = clean(res)
        assert "Warning: " in out and "doit.sqlite3 could not be read" in out and "a new one is built" in out
        assert "download:org/good@main" in out
        assert len(list(state.glob("doit.sqlite3.corrupt-*"))) == 1
        with sqlite3.connect(state / "doit.sqlite3") as db:
            assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
        again = cli(home, "good", "--solo", "--download-only", **env)
        assert again.returncode == 0 and "could not be read" not in clean(again)


LONG = "x" * 300  # longer than a file name may be: Path.is_file raised `File name too long`


@pytest.mark.parametrize("args, needle", [
    ([LONG, "--solo", "--dry-run"], f"recipe '{LONG}' not found"), (["plan", LONG], f"recipe '{LONG}' not found"),
    (["stop", LONG], f"nothing to stop for {LONG}"), (["lint", LONG], f"{LONG}:1: error: no such file"),
    (["install-service", LONG, "--solo"], f"recipe '{LONG}' not found"),
    (["lint", "--vllm", "--venv", "/nowhere", LONG], f"recipe '{LONG}' not found"),
    (["stack", "long", "--dry-run"], f"models[0].recipe: recipe '{LONG}' not found")])
def test_a_recipe_name_longer_than_a_file_name_is_an_error(home: Path, args: list[str], needle: str) -> None:
    (home / "stacks").mkdir()
    (home / "stacks" / "long.yaml").write_text(f"name: long\nmodels: [{{recipe: {LONG}}}]\n")
    res = cli(home, *args, DOCKER_HOST="unix:///nonexistent.sock")  # stop: no engine answers, exit 1 too
    out = clean(res)
    assert res.returncode == 1 and needle in out, out


def test_recipe_names_with_rich_markup_or_escapes_list_as_they_are(home: Path) -> None:
    names = ["[/bold]", "[link=http://evil.invalid]click[/link]", ":smile: [red]x", "t\x1b]0;pwned\x07x"]
    for i, name in enumerate(names):
        (home / "recipes" / f"m{i}.yaml").write_text(
            f"recipe_version: '1'\nname: {json.dumps(name)}\ncontainer: img\ncommand: vllm serve org/m\n")
    (home / "recipes" / "zz-[broken].yaml").write_text("name: [/bold]\n")
    res = cli(home, "--list")
    out = clean(res)
    assert res.returncode == 0, out
    for shown in ("[/bold]", "[link=http://evil.invalid]click[/link]", ":smile: [red]x", "tx"):
        assert shown in out, out
    assert "\x1b" not in out and "\x07" not in out and "😄" not in out


def test_a_zip_mod_holding_a_file_and_a_folder_of_one_name_is_refused_before_anything_runs(home: Path) -> None:
    import zipfile

    with zipfile.ZipFile(home / "clash.zip", "w") as zf:
        zf.writestr("run.sh", "#!/bin/sh\n")
        zf.writestr("a", "a file")
        zf.writestr("a/b", "and a folder of the same name")
    res = cli(home, "good", "--solo", "--dry-run", "--apply-mod", str(home / "clash.zip"))
    assert res.returncode == 1
    assert f"clash.zip' holds 'a' both as a file and as the folder of other entries" in clean(res)
