"""Issue #14 item 2: where mods are found, --apply-mod / --apply-vllm-pr order, and the PR cache and rule.

PR diffs come from a real HTTP server on loopback (RUNRECIPE_VLLM_PR_BASE), fetched by the product with
huggingface_hub's client; the e2e test (tests/e2e/test_apply_mods.py) applies one in an image.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import pytest

from harness.patches import PatchServer
from tasks import mod_spec

from .test_cli import ROOT, cli

GOOD_DIFF = ("diff --git a/vllm/x.py b/vllm/x.py\n--- a/vllm/x.py\n+++ b/vllm/x.py\n@@ -1 +1 @@\n-a\n+b\n"
             "diff --git a/tests/test_x.py b/tests/test_x.py\n--- a/tests/test_x.py\n+++ b/tests/test_x.py\n"
             "@@ -1 +1 @@\n-a\n+b\n")
NATIVE_DIFF = GOOD_DIFF + ("diff --git a/csrc/attn.cu b/csrc/attn.cu\n--- a/csrc/attn.cu\n+++ b/csrc/attn.cu\n"
                           "diff --git a/vllm/ops/k.cpp b/vllm/ops/k.cpp\n--- a/vllm/ops/k.cpp\n+++ b/vllm/ops/k.cpp\n"
                           "diff --git a/setup.py b/setup.py\n--- a/setup.py\n+++ b/setup.py\n")
RECIPE = "recipe_version: '1'\nname: R\ncontainer: img\nmods: [mods/fix-a]\ncommand: vllm serve org/m --port 8000\n"


def mod(root: Path, name: str) -> Path:
    (root / "mods" / name).mkdir(parents=True)
    (root / "mods" / name / "run.sh").write_text("#!/bin/sh\necho ok\n")
    return root / "mods" / name


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "project" / "recipes").mkdir(parents=True)
    return tmp_path / "project"


@pytest.fixture
def diffs() -> Iterator[PatchServer]:
    server = PatchServer({7: GOOD_DIFF, 8: NATIVE_DIFF, 9: "diff --git a/docs/a.md b/docs/a.md\n"})
    yield server
    server.stop()


def test_a_recipe_finds_its_mod_in_its_own_tree_before_the_project(home: Path, tmp_path: Path) -> None:
    tree = tmp_path / "origin"
    (tree / "recipes" / "4x").mkdir(parents=True)
    (tree / "recipes" / "4x" / "r.yaml").write_text(RECIPE)
    own, _ = mod(tree, "fix-a"), mod(home, "fix-a")
    res = cli(home, str(tree / "recipes" / "4x" / "r.yaml"), "--solo", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"mods:      {own}\n" in res.stdout


def test_a_recipe_falls_back_to_the_project_mods(home: Path, tmp_path: Path) -> None:
    (tmp_path / "origin" / "recipes").mkdir(parents=True)
    (tmp_path / "origin" / "recipes" / "r.yaml").write_text(RECIPE)
    project_mod = mod(home, "fix-a")
    res = cli(home, str(tmp_path / "origin" / "recipes" / "r.yaml"), "--solo", "--dry-run")
    assert res.returncode == 0 and f"mods:      {project_mod}\n" in res.stdout, res.stderr


def test_a_missing_mod_lists_every_place_it_looked(home: Path, tmp_path: Path) -> None:
    (tmp_path / "origin" / "recipes").mkdir(parents=True)
    recipe = tmp_path / "origin" / "recipes" / "r.yaml"
    recipe.write_text(RECIPE)
    res = cli(home, str(recipe), "--solo", "--dry-run")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"{recipe}: mods[0]: 'mods/fix-a' not found; looked in:\n  {tmp_path}/origin/mods/fix-a\n  " \
           f"{home}/mods/fix-a\n" in res.stderr, res.stderr
    assert f"put the mod (a folder or .zip with run.sh) at {tmp_path}/origin/mods/fix-a" in res.stderr
    lint = cli(home, "lint", str(recipe))
    assert lint.returncode == 1 and f"not found in {tmp_path}/origin/mods/fix-a, {home}/mods/fix-a" in lint.stdout


def test_apply_mod_is_relative_to_the_current_directory_and_follows_the_recipes_mods(home: Path) -> None:
    (home / "recipes" / "r.yaml").write_text(RECIPE)
    mod(home, "fix-a"), mod(home / "extra", "later"), mod(home / "extra", "fix-a")
    res = cli(home, "r", "--solo", "--dry-run", "--apply-mod", "extra/mods/later", "--apply-mod", "extra/mods/fix-a")
    assert res.returncode == 0, res.stderr
    assert f"mods:      {home}/mods/fix-a, {home}/extra/mods/later, {home}/extra/mods/fix-a\n" in res.stdout
    missing = cli(home, "r", "--solo", "--dry-run", "--apply-mod", "nope")
    assert missing.returncode == 1 and f"--apply-mod '{home}/nope' does not exist" in missing.stderr


@pytest.mark.parametrize("text, number", [("12", 12), ("https://github.com/vllm-project/vllm/pull/345", 345),
                                          ("https://github.com/vllm-project/vllm/pull/345/files", 345),
                                          ("https://github.com/vllm-project/vllm/pull/345.diff", 345)])
def test_a_pr_is_a_number_or_its_url(text: str, number: int) -> None:
    assert mod_spec.parse(text).number == number


@pytest.mark.parametrize("text", ["0", "-3", "abc", "https://github.com/other/vllm/pull/3", "12; id"])
def test_anything_else_is_a_usage_error(home: Path, text: str) -> None:
    (home / "recipes" / "r.yaml").write_text(RECIPE.replace("mods: [mods/fix-a]\n", ""))
    res = cli(home, "r", "--solo", "--dry-run", "--apply-vllm-pr", text)
    assert res.returncode == 2 and f"argument --apply-vllm-pr: '{text}' is not a vLLM pull request" in res.stderr


def test_the_runtime_only_rule_lists_every_offending_path() -> None:
    paths = mod_spec.touched(NATIVE_DIFF)
    assert mod_spec.refused(paths) == ["csrc/attn.cu", "vllm/ops/k.cpp", "setup.py"]
    assert mod_spec.refused(mod_spec.touched(GOOD_DIFF)) == []


def test_a_pr_is_fetched_once_into_the_cache_and_offline_uses_it(home: Path, diffs: PatchServer) -> None:
    (home / "recipes" / "r.yaml").write_text(RECIPE.replace("mods: [mods/fix-a]\n", ""))
    env = {"RUNRECIPE_VLLM_PR_BASE": diffs.base}
    dry = cli(home, "r", "--solo", "--dry-run", "--apply-vllm-pr", "7", **env)
    assert dry.returncode == 0 and diffs.hits == 0, dry.stderr  # a dry run fetches nothing
    assert f"--apply-vllm-pr 7 is not fetched yet: a run fetches {diffs.base}/7.diff once" in dry.stderr
    digest = hashlib.sha256(GOOD_DIFF.encode()).hexdigest()
    folder = home / ".runrecipe" / "cache" / "vllm-pr" / "7" / digest
    # a real run fetches before anything else (here it then stops: there is no Docker engine)
    first = cli(home, "r", "--solo", "-d", "--apply-vllm-pr", "7", HF_TOKEN="hf_NotForGitHub1234", **env)
    assert "hf_NotForGitHub1234" not in repr(diffs.headers) and "authorization" not in repr(diffs.headers).lower()
    assert f"--apply-vllm-pr 7: fetched {diffs.base}/7.diff into {folder}" in first.stdout and diffs.hits == 1
    assert "Docker engine on local is not reachable" in first.stderr, first.stderr
    assert (folder / "pr.diff").read_text() == GOOD_DIFF
    assert "git apply --binary --include='vllm/**'" in (folder / "run.sh").read_text()
    for extra in ({}, {"HF_HUB_OFFLINE": "1"}):
        again = cli(home, "r", "--solo", "-d", "--apply-vllm-pr", "7", **env, **extra)
        assert "fetched" not in again.stdout and "Docker engine on local is not reachable" in again.stderr
    assert diffs.hits == 1
    script = (folder / "run.sh").read_bytes()
    elsewhere = {"RUNRECIPE_VLLM_PR_BASE": "http://127.0.0.1:9/other"}
    shown = json.loads(cli(home, "r", "--solo", "--dry-run", "--json", "--apply-vllm-pr", "7", **elsewhere).stdout)
    assert shown["mods"] == [str(folder)]  # the cached PR is a mod of the plan now
    assert (folder / "run.sh").read_bytes() == script  # where it came from is no input of the mods image
    (folder / "pr.diff").write_text(GOOD_DIFF + "\n")
    damaged = cli(home, "r", "--solo", "--dry-run", "--apply-vllm-pr", "7", **env)
    assert damaged.returncode == 1 and "(edited or damaged): remove" in damaged.stderr


def test_offline_without_the_cache_and_refused_patches_are_clear_errors(home: Path, diffs: PatchServer) -> None:
    (home / "recipes" / "r.yaml").write_text(RECIPE.replace("mods: [mods/fix-a]\n", ""))
    env = {"RUNRECIPE_VLLM_PR_BASE": diffs.base}
    offline = cli(home, "r", "--solo", "-d", "--apply-vllm-pr", "7", HF_HUB_OFFLINE="1", **env)
    assert offline.returncode == 1 and "the patch is not in the cache" in offline.stderr and diffs.hits == 0
    native = cli(home, "r", "--solo", "-d", "--apply-vllm-pr", "8", **env)
    assert native.returncode == 1 and "  csrc/attn.cu\n  vllm/ops/k.cpp\n  setup.py\n" in native.stderr, native.stderr
    assert "tests/test_x.py" not in native.stderr
    assert not (home / ".runrecipe" / "cache" / "vllm-pr" / "8").exists() or \
        not list((home / ".runrecipe" / "cache" / "vllm-pr" / "8").glob("*/pr.diff"))
    docs_only = cli(home, "r", "--solo", "-d", "--apply-vllm-pr", "9", **env)
    assert docs_only.returncode == 1 and "changes no file of the vllm package" in docs_only.stderr
    missing = cli(home, "r", "--solo", "-d", "--apply-vllm-pr", "404", **env)
    assert missing.returncode == 1 and "answered HTTP 404" in missing.stderr, missing.stderr


@pytest.mark.parametrize("entry, where", [("/abs/nope", ["/abs/nope"]), ("~nobody-here/x", None)])
def test_odd_mod_paths_are_clear_errors(home: Path, entry: str, where: list[str] | None) -> None:
    """An absolute entry is looked up once; `~user` is no expansion in a recipe and no traceback in a flag."""
    (home / "recipes" / "r.yaml").write_text(RECIPE.replace("mods/fix-a", entry))
    res = cli(home, "r", "--solo", "--dry-run")
    looked = res.stderr.split("looked in:\n", 1)[1].split("put the mod", 1)[0].split()
    assert res.returncode == 1 and looked == (where or [f"{home}/{entry}", f"{ROOT}/{entry}"]), res.stderr
    (home / "recipes" / "plain.yaml").write_text(RECIPE.replace("mods: [mods/fix-a]\n", ""))
    flag = cli(home, "plain", "--solo", "--dry-run", "--apply-mod", "~nobody-here/x")
    assert flag.returncode == 1 and "Traceback" not in flag.stderr and "does not exist" in flag.stderr
