"""`.env` values are taken literally (no `${VAR}` interpolation) and no secret reaches the screen: not under
its own name, not inside another value, not inside an error. The secrets are HF_TOKEN and friends from the
environment and every token/key/secret/password value of the environment or the file."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .test_cli import ROOT, cli, home  # noqa: F401 - the fixture and the runner of the CLI tests

MARK = "hf_" + uuid.uuid4().hex  # '_' makes it no hostname: a node list holding it is refused, with a message
NODES_ERROR = "CLUSTER_NODES: node '"


def run(home: Path, env_text: str, *args: str, **env: str) -> str:
    (home / ".env").write_text(env_text)
    res = cli(home, *args, **env)
    assert "Traceback" not in res.stdout + res.stderr
    return res.stdout + res.stderr


def test_no_interpolation_a_reference_stays_literal_in_the_error(home: Path) -> None:
    out = run(home, "CLUSTER_NODES=10.0.0.1,${HF_TOKEN}\n", "good", "--dry-run", HF_TOKEN=MARK)
    assert NODES_ERROR + "${HF_TOKEN}'" in out, out
    assert MARK not in out


@pytest.mark.parametrize("env_text, env", [
    (f"CLUSTER_NODES=10.0.0.1,{MARK}\n", {"HF_TOKEN": MARK}),                     # the environment's token
    (f"CLUSTER_NODES=10.0.0.1,{MARK}\n", {"HUGGING_FACE_HUB_TOKEN": MARK}),
    (f"CLUSTER_NODES=10.0.0.1,{MARK}\n", {"WANDB_API_KEY": MARK}),                # any secret-named variable
    (f"DB_PASSWORD={MARK}\nCLUSTER_NODES=10.0.0.1,{MARK}\n", {}),                 # a secret of the file
    (f"CLUSTER_NODES=10.0.0.1,{MARK}\nCONTAINER_HF_TOKEN={MARK}\n", {}),          # ... read after its use
])
def test_errors_mask_any_value_equal_to_a_secret(home: Path, env_text: str, env: dict[str, str]) -> None:
    out = run(home, env_text, "good", "--dry-run", **env)
    assert NODES_ERROR + "****'" in out, out
    assert MARK not in out


def test_show_env_keeps_references_literal_and_masks_secret_values(home: Path) -> None:
    out = run(home, f"A=${{HF_TOKEN}}\nB={MARK}\nCOPY_HOSTS=x,{MARK}\nMY_KEY=short\nPLAIN=visible\n",
              "--show-env", HF_TOKEN=MARK)
    assert "A=${HF_TOKEN}\n" in out and "B=****\n" in out and "COPY_HOSTS=x,****\n" in out
    assert "MY_KEY=****\n" in out and "PLAIN=visible\n" in out
    assert MARK not in out and "short" not in out


def test_doit_errors_are_masked_too(home: Path) -> None:
    (home / ".env").write_text(f"CLUSTER_NODES=10.0.0.1,{MARK}\n")
    env = {**os.environ, "RUNRECIPE_HOME": str(home), "PYTHONPATH": str(ROOT), "HF_TOKEN": MARK,
           "DOCKER_HOST": "unix:///nonexistent.sock"}
    res = subprocess.run([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "list", "recipe=good"],
                         cwd=home, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "node '****'" in res.stderr, res.stderr
    assert MARK not in res.stdout + res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("fmt", [(), ("--json",)])
def test_dry_run_masks_a_secret_of_the_recipes_own_env(home: Path, fmt: tuple[str, ...]) -> None:
    """A recipe's `env: {HF_TOKEN: …}` is exported by its launch script; --dry-run shows the script with
    the value masked (solo and every node's script on a cluster), and a public variable as it is."""
    (home / "recipes" / "env.yaml").write_text(
        f"recipe_version: '1'\nname: E\nmodel: org/m\ncontainer: img\nenv:\n  HF_TOKEN: {MARK}\n"
        f"  MY_API_KEY: sk-{MARK}\n  PLAIN: visible-value\ncommand: vllm serve org/m --port {{port}}\n"
        "defaults:\n  port: 8000\n")
    for nodes in (["--solo"], ["-n", "10.0.0.1,10.0.0.2"]):
        out = run(home, "", "env", *nodes, "--dry-run", *fmt)
        assert MARK not in out and "visible-value" in out, out
