"""Node entries from -n and from .env CLUSTER_NODES are checked before any SSH: bad ones are refused
through the real CLI (--dry-run) with a message naming the entry and where it came from."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.errors import ConfigError
from tasks.nodes import parse_list, parse_node

CODE_ROOT = Path(__file__).resolve().parents[2]

GOOD = ["192.168.1.10", "spark2", "admin@spark2", "admin@spark2:2222", "10.0.0.1:22", "[fe80::1]:22",
        "fe80::1", "fe80::1%eth0", "user_1@node-3.lan", "[::1]"]
BAD = {
    "semicolon": "node1;touch /tmp/rr-nodes-pwned",
    "command substitution": "$(touch /tmp/rr-nodes-pwned)",
    "backticks": "`touch /tmp/rr-nodes-pwned`",
    "space": "node 1",
    "ssh option as host": "-oProxyCommand=touch /tmp/rr-nodes-pwned",
    "ssh option as user": "-oProxyCommand=x@host",
    "empty user": "@host",
    "port 0": "host:0",
    "port 70000": "host:70000",
    "non-ascii port": "host:²",
    "arabic digits port": "host:٢٢",
    "ipv6 with port, no brackets": "2001:db8:0:0:0:0:0:1:22",
    "ipv6 zone injection": "fe80::1%$(touch /tmp/rr-nodes-pwned)",
    "newline in host": "host\n:22",
    "newline in user": "root\n@host",
    "all-digit host": "1.2.3",
    "two at signs": "a@b@host",
    "bracket junk": "[host]x",
    "underscore host": "bad_host",
    "pipe": "host|nc",
    "glob": "host*",
}
CANARY = Path("/tmp/rr-nodes-pwned")


@pytest.mark.parametrize("entry", GOOD)
def test_valid_entries_parse(entry: str) -> None:
    node = parse_node(entry, "-n/--nodes")
    assert node.host and node.target


@pytest.mark.parametrize("label", list(BAD))
def test_invalid_entries_are_refused_naming_entry_and_source(label: str) -> None:
    entry = BAD[label]
    with pytest.raises(ConfigError) as err:
        parse_list(f"10.0.0.1,{entry}", "somewhere: CLUSTER_NODES")
    message = str(err.value)
    assert message.startswith("somewhere: CLUSTER_NODES: node '") and entry.strip() in message


def test_ipv6_bare_with_port_is_ambiguous_and_read_as_an_address() -> None:
    """'::1:22' is itself a valid IPv6 address, so it cannot be refused; brackets are the way to add a port."""
    assert parse_node("::1:22", "-n").port == 0
    assert parse_node("[::1]:22", "-n").port == 22


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nodes") / "project"
    (root / "recipes").mkdir(parents=True)
    (root / "recipes" / "two.yaml").write_text(
        "recipe_version: '1'\nname: Two\ncontainer: rr-nodes\ncommand: vllm serve org/m --port {port}\ndefaults: {port: 8000}\n")
    return root


def cli(project: Path, *args: str, env_file: str | None = None) -> subprocess.CompletedProcess[str]:
    if env_file is not None:
        (project / ".env").write_text(env_file)
    elif (project / ".env").exists():
        (project / ".env").unlink()
    # A PATH without ssh: if anything tried to connect, it could not, and the message would say so.
    fake_bin = project / "bin"
    fake_bin.mkdir(exist_ok=True)
    ssh = fake_bin / "ssh"
    ssh.write_text("#!/bin/sh\ntouch /tmp/rr-nodes-ssh-called\nexit 255\n")
    ssh.chmod(0o755)
    env = {**os.environ, "RUNRECIPE_HOME": str(project), "PYTHONPATH": str(CODE_ROOT),
           "PATH": f"{fake_bin}:{os.environ['PATH']}", "DOCKER_HOST": "unix:///nonexistent.sock"}
    return subprocess.run([sys.executable, "-m", "tasks", "two", "--dry-run", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60)


# Through the CLI, one run per entry is slow (python start-up); a representative set for each source.
CLI_BAD = ["semicolon", "command substitution", "space", "ssh option as host", "empty user", "port 0",
           "port 70000", "ipv6 with port, no brackets", "ipv6 zone injection", "non-ascii port"]


@pytest.mark.parametrize("label", CLI_BAD)
def test_cli_refuses_bad_node_from_flag(project: Path, label: str) -> None:
    entry = BAD[label]
    res = cli(project, "-n", f"10.0.0.1,{entry}")
    assert res.returncode != 0, res.stdout
    assert res.stderr.startswith("Error: -n/--nodes: node '"), res.stderr
    assert entry in res.stderr and "Traceback" not in res.stderr
    assert not CANARY.exists() and not Path("/tmp/rr-nodes-ssh-called").exists()


@pytest.mark.parametrize("label", CLI_BAD)
def test_cli_refuses_bad_node_from_env_file(project: Path, label: str) -> None:
    entry = BAD[label]
    res = cli(project, env_file=f"CLUSTER_NODES='10.0.0.1,{entry}'\n")
    assert res.returncode != 0, res.stdout
    assert res.stderr.startswith(f"Error: {project / '.env'}: CLUSTER_NODES: node '"), res.stderr
    assert entry in res.stderr and "Traceback" not in res.stderr
    assert not CANARY.exists() and not Path("/tmp/rr-nodes-ssh-called").exists()


def test_cli_newline_in_env_entry_is_refused(project: Path) -> None:
    res = cli(project, env_file='CLUSTER_NODES="10.0.0.1,host\\n:22"\n')
    assert res.returncode != 0 and res.stderr.startswith("Error: ") and "Traceback" not in res.stderr


def test_cli_accepts_good_nodes_and_plans_without_ssh(project: Path) -> None:
    res = cli(project, "-n", "admin@10.0.0.1:2222,[fe80::1]:22")
    assert res.returncode == 0, res.stderr
    assert "admin@10.0.0.1:2222, [fe80::1]:22" in res.stdout
    assert not Path("/tmp/rr-nodes-ssh-called").exists()
