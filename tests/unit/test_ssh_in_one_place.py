"""SSH is built in one folder: no module outside tasks/connect/ makes an ssh or rsync remote-shell line.

Callers hold a link or a runner and ask it (`argv_for`, `script_argv`, `rsync_shell`); a second place
building ssh argvs would drift from the host-key policy, timeouts and shared connections defined once
in tasks/connect/options.py.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TASKS = Path(__file__).resolve().parents[2] / "tasks"
CONNECT = TASKS / "connect"
SSH_OPTIONS = ("ControlPath", "ControlMaster", "ControlPersist", "StrictHostKeyChecking", "UserKnownHostsFile",
               "GlobalKnownHostsFile", "BatchMode=", "ServerAlive", "ProxyJump", "--rsh")
OPTION_BUILDERS = {"ssh_argv", "ssh_options", "ssh_prefix", "peer_ssh", "shared_connection_options", "KEEPALIVE"}


def _word(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_rsync_shell(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "rsync_shell"


def problems(source: str) -> list[str]:
    """What in this module's source builds an ssh line itself (line: why)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
            first = _word(node.elts[0])
            if first is not None and first.rsplit("/", 1)[-1] == "ssh":
                out.append(f"{node.lineno}: an argv starting with 'ssh'")
            if first == "rsync":
                for word, nxt in zip(node.elts, node.elts[1:]):
                    if _word(word) == "-e" and not _is_rsync_shell(nxt):
                        out.append(f"{node.lineno}: rsync -e not from a link's rsync_shell()")
        text = _word(node)
        if text is not None and (re.match(r"(\S*/)?ssh\s+-", text) or any(opt in text for opt in SSH_OPTIONS)):
            out.append(f"{node.lineno}: ssh command text or option {text[:40]!r}")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("connect.options"):
            out.extend(f"{node.lineno}: imports {a.name} from connect.options" for a in node.names
                       if a.name in OPTION_BUILDERS)
    return out


def test_no_module_outside_connect_builds_ssh_lines() -> None:
    found = {str(p.relative_to(TASKS.parent)): problems(p.read_text()) for p in sorted(TASKS.rglob("*.py"))
             if CONNECT not in p.parents}
    bad = {k: v for k, v in found.items() if v}
    assert not bad, bad


@pytest.mark.parametrize("bad", [
    'argv = ["ssh", "-o", "BatchMode=yes", host, cmd]',
    'argv = ("/usr/bin/ssh", host)',
    'argv = ["rsync", "-a", "-e", "ssh -p 22", src, dst]',
    'argv = ["rsync", "-e", shlex.join(prefix), src]',
    'opts = ["-o", f"ControlPath={path}"]',
    'line = f"ssh -p {port} {host} docker load"',
    'from .connect.options import ssh_argv',
])
def test_the_scan_sees_a_hand_built_ssh_line(bad: str) -> None:
    assert problems(bad)


def test_the_scan_lets_links_and_docker_env_flags_pass() -> None:
    assert not problems('argv = ["rsync", "-a", "-e", w.link.rsync_shell(), src]\n'
                        'cmd = ["docker", "run", "-e", "HF_HUB_OFFLINE=1", image]\n'
                        'cols = ("node", "ssh", "docker")\n'
                        'why = f"ssh to {name} failed"\n')
