"""Issue #14: every origin recipe dry-runs to the `vllm serve` argv the origin launches with default flags,
and its env arrives as written.

The recipes (tests/unit/fixtures/origin/recipes.yaml, written out from origin-facts sections 3 and 3.3) are
laid out as an origin checkout: recipes/ (sub-folders kept) and a mods/ folder beside it holding every mod
they name, in a tree apart from the runrecipe project, so each recipe must find its mods in its own tree.
Each is dry-run (`--dry-run --json`) on two nodes and on one, and compared with a model of what the origin
runs (origin-facts 1.10 and 6.1): str.format of defaults (solo: tensor_parallel 1), the executor flag removed,
and on a cluster `--nnodes 2 --node-rank R --master-addr HEAD --master-port 29501`, `--headless` on rank 1.
Recipes the origin refuses in a mode (cluster_only solo, solo_only on two nodes) must be refused here too.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.cli.main import main

FIXTURE = Path(__file__).parent / "fixtures" / "origin" / "recipes.yaml"
RECIPES: list[dict[str, Any]] = yaml.safe_load(FIXTURE.read_text())
HEAD, WORKER = "10.9.9.1", "10.9.9.2"


def origin_argv(recipe: dict[str, Any], nodes: int, rank: int = 0) -> list[str]:
    """What the origin runs (origin-facts 1.10, 6.1), for `nodes` nodes and this node's rank."""
    params = dict(recipe["defaults"])
    if nodes == 1:
        params["tensor_parallel"] = 1  # the origin's solo default unless --tp is given
    command = re.sub(r"--distributed-executor-backend(=| )\S+", "", recipe["command"].format(**params))
    argv = shlex.split(command)
    if nodes > 1:
        argv += ["--nnodes", str(nodes), "--node-rank", str(rank), "--master-addr", HEAD, "--master-port", "29501"]
        argv += ["--headless"] if rank else []
    return argv


def served(script: str) -> tuple[list[str], dict[str, str]]:
    """The `vllm serve` argv a node script runs, and the variables it exports."""
    exports = dict(shlex.split(line)[1].split("=", 1) for line in script.splitlines() if line.startswith("export "))
    command = script.split("\n# Serve\n", 1)[1].replace("\\\n", " ")
    argv = shlex.split(command)
    return (argv[1:] if argv[:1] == ["exec"] else argv), exports


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An origin checkout: recipes/<file> and mods/<name>/run.sh for every mod the recipes name."""
    root = tmp_path_factory.mktemp("origin")
    for recipe in RECIPES:
        path = root / "recipes" / recipe["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({k: v for k, v in recipe.items() if k != "file"}, sort_keys=False))
        for mod in recipe.get("mods", []):
            (root / mod).mkdir(parents=True, exist_ok=True)
            (root / mod / "run.sh").write_text("#!/bin/sh\ntrue\n")
    return root


@pytest.fixture
def dry(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """run-recipe FILE ARGS --dry-run --json in-process, from a project that is not the origin tree."""
    (tmp_path / "recipes").mkdir()
    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)

    def run(recipe: dict[str, Any], *args: str) -> tuple[int, Any, str]:
        code = main([str(tree / "recipes" / recipe["file"]), *args, "--dry-run", "--json"])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if code == 0 else None), err
    return run


def test_the_fixture_holds_the_origins_recipes() -> None:
    assert len(RECIPES) == 35 and len({r["file"] for r in RECIPES}) == 35


@pytest.mark.parametrize("recipe", RECIPES, ids=[r["file"] for r in RECIPES])
def test_two_nodes_run_what_the_origin_runs(recipe: dict[str, Any], dry, tree: Path) -> None:
    code, shown, err = dry(recipe, "-n", f"{HEAD},{WORKER}")
    if recipe.get("solo_only"):
        assert code == 1 and "runs on a single node only" in err, err
        return
    assert code == 0, err
    assert shown["backend"] == "native"
    assert shown["mods"] == [str(tree / m) for m in recipe.get("mods", [])]
    for rank, node in enumerate(shown["node_scripts"]):
        argv, exports = served(node["script"])
        assert argv == origin_argv(recipe, 2, rank)
        assert {k: exports.get(k) for k in recipe.get("env", {})} == recipe.get("env", {})


@pytest.mark.parametrize("recipe", RECIPES, ids=[r["file"] for r in RECIPES])
def test_one_node_runs_what_the_origin_runs(recipe: dict[str, Any], dry, tree: Path) -> None:
    code, shown, err = dry(recipe, "--solo")
    if recipe.get("cluster_only"):
        assert code == 1 and "requires cluster mode" in err, err
        return
    assert code == 0, err
    assert shown["mods"] == [str(tree / m) for m in recipe.get("mods", [])]
    argv, exports = served(shown["script"])
    assert argv == shown["argv"] == origin_argv(recipe, 1)
    assert {k: exports.get(k) for k in recipe.get("env", {})} == recipe.get("env", {})
