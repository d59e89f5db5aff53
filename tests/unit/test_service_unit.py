"""The systemd unit install-service writes: rendered from its template, words literal to systemd,
checked by systemd-analyze verify where it is installed."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.serve import service
from tasks import settings


def test_words_stay_literal_for_systemd() -> None:
    assert service.systemd_word("glm-4.7") == "glm-4.7"
    assert service.systemd_word("a b") == '"a b"'
    assert service.systemd_word("50%$HOME") == '"50%%$$HOME"'
    assert service.systemd_word('x"\\y') == '"x\\"\\\\y"'


def test_the_unit_converges_then_watches_with_the_same_words(tmp_path: Path) -> None:
    unit = service.render_unit("4x/minimax", ["4x/minimax", "-n", "a,b", "-d", "--", "--seed", "4 2"],
                               user=True, directory=tmp_path)
    assert unit.name == "runrecipe-4x\\x2fminimax.service" and unit.path == tmp_path / unit.name
    lines = unit.text.splitlines()
    entry = str(settings.CODE_ROOT / "run-recipe.sh")
    # -d goes before `--`: after it, it would be vLLM's (and the converge would stay in the foreground)
    assert f"ExecStartPre=-{entry} 4x/minimax -n a,b -d -- --seed \"4 2\"" in lines
    assert f"ExecStart={entry} watch 4x/minimax -n a,b -- --seed \"4 2\"" in lines
    assert "WantedBy=default.target" in lines and "Restart=on-failure" in lines


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    unit = service.render_unit("glm", ["glm", "--port", "9000"], user=False, directory=tmp_path)
    service.write(unit)
    assert service.verify(unit) is None, unit.text
    broken = service.Unit(unit.name, unit.path, unit.text.replace("[Service]", "[Service]\nExecStartt=/bin/true"), False)
    service.write(broken)
    assert service.verify(broken)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_a_project_path_with_a_space_and_percent_stays_one_literal_path(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """WorkingDirectory= and EnvironmentFile= take the path unquoted; Environment= expands no `$`."""
    home = tmp_path / "my models 100%"
    home.mkdir()
    monkeypatch.setenv("RUNRECIPE_HOME", str(home))
    monkeypatch.setenv("HF_HOME", "/srv/hf$cache")
    unit = service.render_unit("glm", ["glm"], user=False, directory=tmp_path)
    lines = unit.text.splitlines()
    assert f"WorkingDirectory={tmp_path}/my models 100%%" in lines, unit.text
    assert f"EnvironmentFile=-{tmp_path}/my models 100%%/.runrecipe/service.env" in lines, unit.text
    assert f'"RUNRECIPE_HOME={tmp_path}/my models 100%%"' in unit.text and "HF_HOME=/srv/hf$cache" in unit.text
    service.write(unit)
    assert service.verify(unit) is None, unit.text
    monkeypatch.setenv("RUNRECIPE_HOME", str(home) + "\n")
    with pytest.raises(service.ConfigError, match="line break"):
        service.render_unit("glm", ["glm"], user=False, directory=tmp_path)


def test_install_and_uninstall_through_the_cli(tmp_path: Path) -> None:
    recipes = tmp_path / "home" / "recipes"
    recipes.mkdir(parents=True)
    (recipes / "tiny.yaml").write_text("recipe_version: '1'\nname: Tiny\ncontainer: img\ncommand: vllm serve /m --port {port}\n"
                                       "defaults: {port: 8000}\n")
    env = {"RUNRECIPE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    root = settings.CODE_ROOT
    run = lambda *a: subprocess.run([sys.executable, "-m", "tasks", *a], cwd=root, env=env, capture_output=True,
                                    text=True, timeout=60)
    made = run("install-service", "tiny", "--solo", "--unit-dir", str(tmp_path / "units"))
    assert made.returncode == 0, made.stderr
    path = tmp_path / "units" / "runrecipe-tiny.service"
    assert f"wrote {path}" in made.stdout and "ExecStart=" in path.read_text()
    gone = run("uninstall-service", "tiny", "--unit-dir", str(tmp_path / "units"))
    assert gone.returncode == 0 and not path.exists(), gone.stderr
    again = run("uninstall-service", "tiny", "--unit-dir", str(tmp_path / "units"))
    assert again.returncode == 1 and "no unit" in again.stderr
    secret = run("install-service", "tiny", "--solo", "-e", "HF_TOKEN=hf_secretvalue", "--unit-dir", str(tmp_path / "units"))
    assert secret.returncode == 1 and "hf_secretvalue" not in secret.stderr + secret.stdout
    assert "`HF_TOKEN=****` carries the value of -e HF_TOKEN" in secret.stderr and not path.exists()
    assert "put HF_TOKEN=... in " in secret.stderr and "write `-e HF_TOKEN` (no value) instead" in secret.stderr


KEYED = ("recipe_version: '1'\nname: Keyed\ncontainer: img\ncommand: vllm serve /m --port {port} --api-key {api_key}\n"
         "defaults: {port: 8000, api_key: sk-the-recipes-own}\n")


def _install(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    home = tmp_path / "home"
    (home / "recipes").mkdir(parents=True, exist_ok=True)
    (home / "recipes" / "keyed.yaml").write_text(KEYED)
    root = settings.CODE_ROOT
    res = subprocess.run([sys.executable, "-m", "tasks", "install-service", "keyed", "--solo", *args,
                          "--unit-dir", str(tmp_path / "units")], cwd=root, capture_output=True, text=True,
                         timeout=60, env={"RUNRECIPE_HOME": str(home), "PATH": "/usr/bin:/bin", **env})
    return res, tmp_path / "units" / "runrecipe-keyed.service"


@pytest.mark.parametrize("words, shown", [
    (["-o", "api_key=sk-unit-secret-77"], "`api_key=****`"),
    (["--override=api_key=sk-unit-secret-77"], "`--override=api_key=****`"),
    (["-o", "api_key=x", "--", "--api-key", "sk-unit-secret-77"], "`****`"),
    (["--", "--hf-token=sk-unit-secret-77"], "`--hf-token=****`"),
])
def test_a_secret_value_reaches_no_unit_whatever_flag_brought_it(tmp_path: Path, words: list[str], shown: str) -> None:
    """Units are world-readable; the plan knows the server's key, and secret-named flags say theirs."""
    res, path = _install(tmp_path, *words)
    assert res.returncode == 1 and not path.exists(), res.stdout + res.stderr
    assert "sk-unit-secret-77" not in res.stdout + res.stderr and "Traceback" not in res.stderr
    assert f"install-service: {shown} carries " in res.stderr and "mode 0600" in res.stderr, res.stderr


def test_a_secret_of_the_environment_reaches_no_unit(tmp_path: Path) -> None:
    res, path = _install(tmp_path, "-o", "host=sk-env-secret-88", MY_PASSWORD="sk-env-secret-88")
    assert res.returncode == 1 and not path.exists() and "sk-env-secret-88" not in res.stderr
    assert "`host=****` carries a secret of the environment or .env" in res.stderr


def test_the_unit_is_0644_and_an_env_file_others_can_read_is_refused(tmp_path: Path) -> None:
    env_file = tmp_path / "home" / ".runrecipe" / "service.env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text("HF_TOKEN=hf_x\n")
    env_file.chmod(0o644)
    res, path = _install(tmp_path)
    assert res.returncode == 1 and not path.exists()
    assert f"{env_file} holds the service's secrets but is mode 0644" in res.stderr
    assert f"chmod 600 {env_file}" in res.stderr
    env_file.chmod(0o600)
    old = os.umask(0o077)
    try:
        res, path = _install(tmp_path)
    finally:
        os.umask(old)
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("word", ["a\rb", "x\x0by", "bell\x07", "nul\x00"[:-1] + "\x1b[2J"])
def test_a_control_character_in_any_word_is_refused(tmp_path: Path, word: str) -> None:
    """systemd splits a unit line at `\\r` too: `-- --x 'a\\rExecStartPost=...'` would add a line."""
    with pytest.raises(service.ConfigError, match="control character") as info:
        service.render_unit("glm", ["glm", "--", "--x", word], user=True, directory=tmp_path)
    assert word not in str(info.value)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_a_percent_in_the_recipe_stays_literal_in_the_description(tmp_path: Path) -> None:
    unit = service.render_unit("50%off/%n", ["50%off/%n"], user=False, directory=tmp_path)
    assert "Description=runrecipe: serve 50%%off/%%n and keep it serving" in unit.text.splitlines()
    service.write(unit)
    assert service.verify(unit) is None, unit.text
