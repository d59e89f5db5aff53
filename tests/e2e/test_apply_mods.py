"""Issue #14 item 2 and --apply-vllm-pr, end to end on the real test dockerd.

The image is the busybox stand-in plus the real git (tests/harness/gitroot.py: Debian's git package,
fetched on the host, because the product applies a PR with `git apply` and busybox has no git) and a
fake installed `vllm` package under /usr/local/lib/python3.12/dist-packages for the patch to change.
Patches come from a loopback HTTP server (RUNRECIPE_VLLM_PR_BASE); nothing reaches the internet.
"""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from harness.gitroot import git_root
from harness.patches import PatchServer

from .conftest import Project, free_port
from .test_solo import executed, simple

SITE = "/usr/local/lib/python3.12/dist-packages"
PR = 4242
DIFF = f"""\
diff --git a/vllm/sampling_params.py b/vllm/sampling_params.py
index 1111111..2222222 100644
--- a/vllm/sampling_params.py
+++ b/vllm/sampling_params.py
@@ -1,2 +1,2 @@
 # the stand-in's vllm package
-MAX_TOKENS = 1
+MAX_TOKENS = 2  # from PR {PR}
diff --git a/docs/sampling.md b/docs/sampling.md
index 3333333..4444444 100644
--- a/docs/sampling.md
+++ b/docs/sampling.md
@@ -1 +1 @@
-old
+new
"""


@pytest.fixture(scope="module")
def git_docker_dir(standin_docker_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in Docker folder, its Dockerfile extended with git and a fake vllm package."""
    dest = tmp_path_factory.mktemp("git-standin")
    shutil.copytree(standin_docker_dir, dest, dirs_exist_ok=True)
    shutil.copytree(git_root(), dest / "gitroot", symlinks=True)
    (dest / "vllm_pkg").mkdir()
    (dest / "vllm_pkg" / "__init__.py").write_text("")
    (dest / "vllm_pkg" / "sampling_params.py").write_text("# the stand-in's vllm package\nMAX_TOKENS = 1\n")
    dockerfile = dest / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + f"COPY gitroot /\nCOPY vllm_pkg {SITE}/vllm\n")
    return dest


@pytest.fixture
def patches() -> Iterator[PatchServer]:
    server = PatchServer({PR: DIFF})
    yield server
    server.stop()


@pytest.fixture
def gproject(project: Project, git_docker_dir: Path, patches: PatchServer) -> Project:
    project.env.update(RUNRECIPE_DOCKER_DIR=str(git_docker_dir), RUNRECIPE_VLLM_PR_BASE=patches.base)
    return project


def file_in(project: Project, rid: str, path: str) -> str:
    (c,) = project.containers(rid)
    return project.docker("exec", c["Id"], "cat", path).stdout


def test_a_vllm_pr_is_fetched_once_applied_once_and_reruns_do_nothing(gproject: Project,
                                                                    patches: PatchServer) -> None:
    gproject.recipe("pr", simple("pr", free_port()))
    first = gproject.cli("pr", "--setup", "-d", "--apply-vllm-pr", str(PR), timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert executed(first.stdout) == ["build:rr-e2e-pr", "mods:pr", "check:pr", "launch:pr"]
    assert file_in(gproject, "pr", f"{SITE}/vllm/sampling_params.py").endswith(f"MAX_TOKENS = 2  # from PR {PR}\n")
    assert patches.hits == 1
    cached = list((gproject.root / ".runrecipe" / "cache" / "vllm-pr" / str(PR)).glob("*/pr.diff"))
    assert [p.read_text() for p in cached] == [DIFF]
    again = gproject.cli("pr", "--setup", "-d", "--apply-vllm-pr", f"https://github.com/vllm-project/vllm/pull/{PR}")
    assert again.returncode == 0 and executed(again.stdout) == [], again.stdout + again.stderr
    patches.stop()  # offline: only the cache can answer
    gproject.env["HF_HUB_OFFLINE"] = "1"
    offline = gproject.cli("pr", "--setup", "-d", "--apply-vllm-pr", str(PR))
    assert offline.returncode == 0 and executed(offline.stdout) == [], offline.stdout + offline.stderr
    assert patches.hits == 1


def test_an_applied_pr_is_skipped_and_order_follows_the_command_line(gproject: Project, tmp_path: Path) -> None:
    """The recipe lives in its own origin-like tree and finds its mod there; --apply-mod (relative to the
    current directory) and --apply-vllm-pr follow in command-line order; the PR given twice is applied once
    (its second run.sh finds it applied). A changed --apply-mod makes a new mods image, as a recipe mod does."""
    tree = tmp_path / "origin"
    for name in ("first", "later", "last"):
        mod = (tree if name == "first" else gproject.root) / "mods" / name
        mod.mkdir(parents=True)
        (mod / "run.sh").write_text(f'#!/bin/sh\nset -eu\necho {name} >> "$WORKSPACE_DIR/order.txt"\n')
    recipe = tree / "recipes" / "ordered.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(textwrap.dedent(simple("ordered", free_port(), mods="mods: [mods/first]")))
    gproject.recipes.append("ordered")
    args = [str(recipe), "--setup", "-d", "--apply-mod", "mods/later", "--apply-vllm-pr", str(PR),
            "--apply-mod", "mods/last", "--apply-vllm-pr", str(PR)]
    first = gproject.cli(*args, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert file_in(gproject, "ordered", "/workspace/vllm/order.txt") == "first\nlater\nlast\n"
    # the second copy of the PR found it applied and skipped (git apply of an applied patch fails)
    assert file_in(gproject, "ordered", f"{SITE}/vllm/sampling_params.py").count("from PR") == 1
    (c,) = gproject.containers("ordered")
    label = gproject.docker("image", "inspect", "--format", '{{index .Config.Labels "runrecipe.mods"}}',
                            c["Image"]).stdout.strip()
    assert label == f"first,later,vllm-pr-{PR},last,vllm-pr-{PR}-2"
    assert executed(gproject.cli(*args).stdout) == []
    (gproject.root / "mods" / "last" / "run.sh").write_text('#!/bin/sh\necho changed >> "$WORKSPACE_DIR/order.txt"\n')
    changed = gproject.cli(*args)
    assert executed(changed.stdout) == ["mods:ordered", "check:ordered", "launch:ordered"], changed.stdout + changed.stderr
    assert file_in(gproject, "ordered", "/workspace/vllm/order.txt") == "first\nlater\nchanged\n"


def test_an_image_without_git_fails_the_pr_mod_saying_so(project: Project, patches: PatchServer) -> None:
    """The plain busybox stand-in has no git: the PR's mod fails by name and says what is missing."""
    project.env["RUNRECIPE_VLLM_PR_BASE"] = patches.base
    project.recipe("nogit", simple("nogit", free_port()))
    res = project.cli("nogit", "--setup", "-d", "--apply-vllm-pr", str(PR), timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and f"mod 'vllm-pr-{PR}' failed" in out, out
    assert "this image has no git; --apply-vllm-pr applies the patch with git apply" in out
    assert project.containers("nogit") == []
