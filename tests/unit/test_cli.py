"""The CLI as a user meets it: listing, errors without tracebacks, --show-env, --dry-run, docs."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.cli.main import parser

ROOT = Path(__file__).resolve().parents[2]
GOOD = "recipe_version: '1'\nname: Good\nmodel: org/good\ncontainer: img\ncommand: vllm serve org/good --port {port}\ndefaults:\n  port: 8000\n"


def cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "RUNRECIPE_HOME": str(home), "PYTHONPATH": str(ROOT),
            "DOCKER_HOST": "unix:///nonexistent.sock", "HF_ENDPOINT": "http://127.0.0.1:9", **env}
    return subprocess.run([sys.executable, "-m", "tasks", *args], cwd=home, env=full,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    rd = tmp_path / "recipes"
    (rd / "2x").mkdir(parents=True)
    (rd / "good.yaml").write_text(GOOD)
    (rd / "2x" / "big.yaml").write_text("recipe_version: '1'\nname: Big\ncontainer: img\ncluster_only: true\ncommand: vllm serve x\n")
    (rd / "one.yaml").write_text("recipe_version: '1'\nname: One\ncontainer: img\nsolo_only: true\ncommand: vllm serve x\n")
    (rd / "broken.yaml").write_text("name: Broken\ncontainer: [\n")
    (rd / "nofield.yaml").write_text("recipe_version: '1'\nname: NoCmd\ncontainer: img\n")
    (rd / "badph.yaml").write_text("recipe_version: '1'\nname: P\ncontainer: img\ncommand: vllm serve x --port {prot}\ndefaults:\n  port: 1\n")
    return tmp_path


def test_list_shows_subfolders_and_broken_recipes(home: Path) -> None:
    res = cli(home, "--list", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["id"]: r for r in json.loads(res.stdout)}
    assert rows["good"]["model"] == "org/good" and rows["good"]["mode"] == "either"
    assert rows["2x/big"]["mode"] == "cluster" and rows["one"]["mode"] == "solo"
    assert "YAML syntax error" in rows["broken"]["error"]
    text = cli(home, "-l")
    assert text.returncode == 0 and "2x/big" in text.stdout and "broken" in text.stdout


@pytest.mark.parametrize("args, needle", [
    (["nofield", "--solo", "--dry-run"], "missing required field 'command'"),
    (["broken", "--solo", "--dry-run"], "YAML syntax error at line 3, column 1"),
    (["badph", "--solo", "--dry-run"], "unknown placeholder '{prot}'"),
    (["big", "--solo", "--dry-run"], "Recipe 'Big' requires cluster mode."),
    (["one", "-n", "10.9.9.1,10.9.9.2", "--dry-run"], "runs on a single node only"),
    (["nope"], "recipe 'nope' not found"),
    (["good", "-n", "a;b", "--dry-run"], "'a;b' is not a hostname"),
    (["good", "--solo", "-o", "not-a-pair"], "is not key=value"),
    (["good", "--solo", "-d"], "Docker engine on local is not reachable"),
    (["good", "-n", "10.9.9.1,10.9.9.2"], "is the head and must be this machine"),
])
def test_errors_are_messages_not_tracebacks(home: Path, args: list[str], needle: str) -> None:
    res = cli(home, *args)
    assert res.returncode != 0
    assert needle in res.stderr, res.stderr
    assert res.stderr.startswith(("Error:", "Warning:")) and "Traceback" not in res.stderr + res.stdout


def test_dry_run_prints_plan_and_script_without_docker(home: Path) -> None:
    res = cli(home, "good", "--solo", "--setup", "--dry-run", "--port", "9001")
    assert res.returncode == 0, res.stderr
    assert "mode:      solo" in res.stdout and "launch script:" in res.stdout
    assert "build:img" in res.stdout and "would run: cannot tell" in res.stdout
    assert "download:org/good@main" in res.stdout
    data = json.loads(cli(home, "good", "--solo", "--dry-run", "--json").stdout)
    assert data["argv"] == ["vllm", "serve", "org/good", "--port", "8000"]
    subprocess.run(["bash", "-n"], input=data["script"], text=True, check=True)


def test_show_env_masks_secrets(home: Path) -> None:
    (home / ".env").write_text('CLUSTER_NODES="10.0.0.1,10.0.0.2"\nCONTAINER_HF_TOKEN=hf_abcdef\n'
                               "MY_API_KEY=k-123\nDB_PASSWORD=pw\nETH_IF=enp1s0f1np1\n")
    res = cli(home, "--show-env")
    assert res.returncode == 0
    assert "CLUSTER_NODES=10.0.0.1,10.0.0.2" in res.stdout and "ETH_IF=enp1s0f1np1" in res.stdout
    for secret in ("hf_abcdef", "k-123", "pw\n"):
        assert secret not in res.stdout
    assert res.stdout.count("****") == 3


def test_show_env_masks_pass_names_and_what_a_stack_names_as_its_gateway_key(home: Path) -> None:
    (home / "stacks").mkdir()
    (home / "stacks" / "duo.yaml").write_text("name: duo\nmodels: [{recipe: good}]\ngateway: {api_key_env: LLM_DOOR}\n")
    (home / ".env").write_text("MY_PASS=hunter2-pass\nLLM_DOOR=sk-door-value-1\nNOTE=uses sk-door-value-1\n"
                               "ETH_IF=eth0\n")
    res = cli(home, "--show-env")
    assert res.returncode == 0, res.stderr
    assert "hunter2-pass" not in res.stdout and "sk-door-value-1" not in res.stdout
    assert "MY_PASS=****" in res.stdout and "LLM_DOOR=****" in res.stdout and "NOTE=uses ****" in res.stdout
    assert "ETH_IF=eth0" in res.stdout


def test_every_flag_is_documented_in_the_readme_or_docs() -> None:
    readme = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    flags = {opt for action in parser()._actions for opt in action.option_strings if opt.startswith("--")}
    missing = sorted(f for f in flags if not re.search(re.escape(f) + r"\b", readme))
    assert missing == []
    assert all(action.help for action in parser()._actions)


def test_doit_with_a_bad_recipe_is_an_error_line(home: Path) -> None:
    env = {**os.environ, "RUNRECIPE_HOME": str(home), "PYTHONPATH": str(ROOT),
           "DOCKER_HOST": "unix:///nonexistent.sock"}
    res = subprocess.run([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "run", "recipe=badph"],
                         cwd=home, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "Error:" in res.stderr and "unknown placeholder '{prot}'" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    listed = subprocess.run([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "list"],
                            cwd=home, env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "launch:good" in listed.stdout and "launch:2x/big" not in listed.stdout


@pytest.mark.parametrize("env_line, flags, expect", [
    ("", ["--eth-if", "eth0;reboot"], "--eth-if: 'eth0;reboot' is not a network interface name"),
    ("ETH_IF=enp1s0f1np1 x\n", [], ".env: ETH_IF: 'enp1s0f1np1 x' is not a network interface name"),
    ("", ["--eth-if", "a-very-long-ifname"], "'a-very-long-ifname' is not a network interface name"),
    ("IB_IF=mlx5_0,,mlx5_1\n", [], ".env: IB_IF: '' in 'mlx5_0,,mlx5_1' is not an HCA name"),
    ("", ["--ib-if", "mlx5_0:port1"], "--ib-if: 'mlx5_0:port1' in 'mlx5_0:port1' is not an HCA name"),
    ("MASTER_PORT=70000\n", [], ".env: MASTER_PORT: '70000' is not a port number (1-65535)"),
])
def test_bad_network_settings_are_named_by_flag_or_env_key(home: Path, env_line: str, flags: list[str],
                                                           expect: str) -> None:
    """The same check on both entry points: run-recipe and `doit run recipe=X` read .env alike."""
    (home / ".env").write_text(env_line)
    res = cli(home, "good", "-n", "10.0.0.1,10.0.0.2", "--dry-run", *flags)
    assert res.returncode != 0 and expect in res.stderr, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    if not flags:
        env = {**os.environ, "RUNRECIPE_HOME": str(home), "PYTHONPATH": str(ROOT),
               "DOCKER_HOST": "unix:///nonexistent.sock"}
        doit = subprocess.run([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "list", "recipe=good"],
                              cwd=home, env=env, capture_output=True, text=True, timeout=60)
        assert doit.returncode != 0 and expect in doit.stderr, doit.stderr
        assert "Traceback" not in doit.stderr + doit.stdout


def test_network_settings_come_from_env_unless_a_flag_says_otherwise(tmp_path: Path) -> None:
    from tasks.config import env_options

    env = tmp_path / "cluster.env"
    env.write_text("ETH_IF=enp1s0f1np1\nIB_IF=^mlx5_9\nMASTER_PORT=29600\nNON_PRIVILEGED=yes\n")
    assert env_options(env) == {"eth_if": "enp1s0f1np1", "ib_if": "^mlx5_9", "master_port": 29600,
                                "privileged": False}
    assert env_options(env, eth_if="eth1", ib_if="mlx5_0:1", master_port=29502) == {
        "eth_if": "eth1", "ib_if": "mlx5_0:1", "master_port": 29502, "privileged": False}
    (tmp_path / "empty.env").write_text("# nothing set\n")
    assert env_options(tmp_path / "empty.env") == {"eth_if": "", "ib_if": "", "master_port": 29501,
                                                   "privileged": True}


def test_hca_lists_name_what_every_node_must_have() -> None:
    from tasks.interfaces import hca_names

    assert hca_names("mlx5_0,mlx5_1:1", "x") == ("mlx5_0", "mlx5_1")
    assert hca_names("=rocep1s0f1", "x") == ("rocep1s0f1",)
    assert hca_names("^mlx5_9", "x") == ()  # only leaves one out: nothing is required
    assert hca_names("  ", "x") == ()


@pytest.mark.parametrize("args, expect", [
    (["good", "--solo", "--dry-run", "--config", "missing.env"],
     "--config missing.env: no such file (`--discover --config missing.env` writes one)"),
    (["status", "--config", "missing.env"], "--config missing.env: no such file"),
    (["good", "--solo", "--dry-run", "--ready-timeout", "-5"], "--ready-timeout: '-5' is not a number of seconds"),
])
def test_a_named_config_must_exist_and_a_timeout_be_positive(home: Path, args: list[str], expect: str) -> None:
    res = cli(home, *args)
    assert res.returncode != 0 and expect in res.stderr, res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_doit_messages_name_the_doit_variable_not_the_flag(home: Path) -> None:
    env = {**os.environ, "RUNRECIPE_HOME": str(home), "PYTHONPATH": str(ROOT),
           "DOCKER_HOST": "unix:///nonexistent.sock"}
    res = subprocess.run([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "list", "recipe=good",
                          "nodes=10.0.0.1,a;b"], cwd=home, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "Error: doit nodes=: node 'a;b' is not a hostname" in res.stderr, res.stderr
