"""check:<recipe> with the real vLLM 0.33.0 parser in a real container, on the test dockerd.

No image with a full vLLM build fits CI (~9.4 GB of CUDA libraries), and the stand-in `vllm` parses
nothing: tests/harness/vllmsite.py installs vLLM with `--no-deps` and the packages its import chain
needs (CPU torch) into a cached site folder and copies it into the Debian base image (debootstrap,
python 3.11), with the stand-in `vllm` command beside it so a run can also launch. The parser,
validation and name registries the check asks are vLLM's own.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.ops import vllm_check
from tasks.connect import Local
from harness import rayimage, vllmsite


class _Local:
    """The test dockerd as rayimage's DockerNode (for the Debian base image)."""

    name = "local"

    def __init__(self, host: str) -> None:
        self.env = {**os.environ, "DOCKER_HOST": host}

    def run(self, cmd, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=kw.get("timeout"))

    def docker(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(["docker", *args], **kw)


@pytest.fixture(scope="module")
def vllm_image(docker_host: str) -> str:
    base = rayimage.ensure_base_image(_Local(docker_host))
    return vllmsite.ensure_image(vllmsite.local_docker(docker_host), base)


def _target(where: str, *words: str) -> vllm_check.Target:
    return vllm_check.Target("r", where, ("org/model", "--port", "8000", *words))


def test_verdicts_of_the_real_parser(vllm_image: str, docker_host: str, monkeypatch, tmp_path: Path) -> None:
    """One container: a good argv passes, an unknown flag, a missing chat template and a bad -cc enum
    (a bare KeyError inside vLLM) are refused with the flag named; an unknown parser name warns."""
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    template = tmp_path / "there.jinja"
    template.write_text("{{ messages }}")
    argvs = [_target("good", "--max-model-len", "4096", "--chat-template", str(template)),
             _target("typo", "--max-modle-len", "4096"),
             _target("template", "--chat-template", "/nowhere/missing.jinja"),
             _target("cc", "-cc.cudagraph_mode=BOGUS"),
             _target("parser", "--enable-auto-tool-choice", "--tool-call-parser", "no_such_parser")]
    verdict = vllm_check.in_image(Local(), vllm_image, argvs, mounts=[(str(tmp_path), str(tmp_path))])
    assert verdict.version == "0.33.0" and not verdict.cannot
    errors = {f.where: f for f in verdict.errors}
    assert set(errors) == {"typo", "template", "cc"}
    assert errors["typo"].flag == "--max-modle-len" and "unrecognized" in errors["typo"].message
    assert errors["template"].flag == "--chat-template" and "missing.jinja" in errors["template"].message
    assert errors["cc"].flag == "-cc.cudagraph_mode" and "BOGUS" in errors["cc"].message
    assert [(w.where, w.flag) for w in verdict.warnings] == [("parser", "--tool-call-parser")]
    assert "vLLM 0.33.0 refuses --max-modle-len" in errors["typo"].text(verdict.version)


def test_an_image_without_python_cannot_be_checked(standin_image: str, docker_host: str, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    verdict = vllm_check.in_image(Local(), standin_image, [_target("solo")])
    assert "no python3" in verdict.cannot and not verdict.findings
    assert verdict.lines("img")[0].startswith("cannot check with the vLLM in img: ")


def test_refused_before_launch_and_not_asked_again(project, vllm_image: str) -> None:
    """Through the CLI: a typo stops the run before any container, naming flag and version; a good
    command is checked once, launched, and a re-run finds the check up to date (no new container)."""
    recipe = "recipe_version: '1'\nname: {0}\ncontainer: %s\ncommand: vllm serve org/model --port {1} {2} 4096\n" % vllm_image
    project.recipe("typo", recipe.format("typo", 18431, "--max-modle-len"))
    res = project.cli("typo", "-d", timeout=600)
    assert res.returncode == 1, res.stderr
    assert "--max-modle-len" in res.stderr and "vLLM 0.33.0" in res.stderr and "--skip-vllm-check" in res.stderr
    assert project.containers("typo") == []
    record = json.loads((project.root / ".runrecipe" / "checks" / "typo.json").read_text())
    assert record["verdict"] == "refused" and record["version"] == "0.33.0"

    skipped = project.cli("typo", "-d", "--skip-vllm-check", "--ready-timeout", "1", timeout=600)
    assert "--skip-vllm-check: the command is not checked" in skipped.stderr

    project.recipe("good", recipe.format("good", 18432, "--max-model-len"))
    first = project.cli("good", "-d", timeout=600)
    assert first.returncode == 0, first.stderr
    assert "vLLM 0.33.0" in first.stderr and "accepts the command" in first.stderr
    checked = (project.root / ".runrecipe" / "checks" / "good.json").read_text()
    again = project.cli("good", "-d", timeout=600)
    assert again.returncode == 0, again.stderr
    assert "accepts the command" not in again.stderr and "-- check:good" in again.stdout
    assert (project.root / ".runrecipe" / "checks" / "good.json").read_text() == checked
    run = json.loads((project.root / ".runrecipe" / "runs" / "good.json").read_text())
    assert run["vllm_check"]["verdict"] == "accepted"


def test_lint_vllm_with_a_local_venv(tmp_path: Path) -> None:
    """`lint --vllm --venv`: a venv whose site-packages name the cached vLLM site (a .pth line)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (next(venv.glob("lib/python3*/site-packages")) / "vllm-site.pth").write_text(f"{vllmsite.site_dir()}\n")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "typo.yaml").write_text("recipe_version: '1'\nname: t\ncontainer: img\ncommand: vllm serve org/m "
                                       "--max-modle-len 4 --enforce-eagre --dtype float99\n")
    # a flag only the recipe's mod adds is a warning against another vLLM, as the README says
    (tmp_path / "mods" / "adds-flag").mkdir(parents=True)
    (tmp_path / "mods" / "adds-flag" / "run.sh").write_text("#!/bin/sh\n")
    (recipes / "modded.yaml").write_text("recipe_version: '1'\nname: m\ncontainer: img\nmods: [mods/adds-flag]\n"
                                         "command: vllm serve org/m --gpu-memory-utilization-gb 100\n")
    # a recipe's parser plugin is code: lint, the command that vets a recipe, must not run it here
    ran = tmp_path / "plugin-ran"
    (recipes / "plugin.py").write_text(f"import os\nopen({str(ran)!r}, 'w').write(os.environ.get('HF_TOKEN', '-'))\n")
    (recipes / "plugged.yaml").write_text("recipe_version: '1'\nname: p\ncontainer: img\ncommand: vllm serve org/m "
                                          f"--tool-parser-plugin {recipes / 'plugin.py'} --tool-call-parser evil\n")
    res = subprocess.run([sys.executable, "-m", "tasks", "lint", "--vllm", "--venv", str(venv), str(recipes)],
                         capture_output=True, text=True, timeout=900, cwd=Path(__file__).resolve().parents[2],
                         env={**os.environ, "HF_TOKEN": "hf_lint_venv_marker"})
    assert res.returncode == 1, res.stdout + res.stderr
    for flag in ("--max-modle-len", "--enforce-eagre", "--dtype"):  # every refused flag, not only the first
        assert f"typo: vLLM 0.33.0 refuses {flag}" in res.stdout, res.stdout
    assert not ran.exists(), ran.read_text()
    assert f"plugged: vLLM 0.33.0 may refuse at start --tool-parser-plugin: {recipes / 'plugin.py'} was not " \
           "loaded, so --tool-call-parser was not checked" in res.stdout
    assert "modded: vLLM 0.33.0 may refuse at start --gpu-memory-utilization-gb: unrecognized arguments: " \
           "--gpu-memory-utilization-gb (a mod of the recipe may add it)" in res.stdout, res.stdout
    assert "lint --vllm: 3 error(s), 2 warning(s)" in res.stdout
