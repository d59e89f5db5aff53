"""Flags that cannot mean anything are refused, naming the flag (or the pair, or the .env key): never ignored,
never a traceback."""
from __future__ import annotations

from pathlib import Path

import pytest

from tasks.nodes import parse_node
from tasks.errors import ConfigError

from .test_cli import cli, home  # noqa: F401 - the fixture and the runner of the CLI tests

NODES = ["-n", "10.0.0.1,10.0.0.2"]


@pytest.mark.parametrize("flags, pair", [
    (["--solo", *NODES], "argument -n/--nodes: not allowed with argument --solo"),
    (["--build-only", "--download-only"], "argument --download-only: not allowed with argument --build-only"),
    (["--ray", "--no-ray", *NODES], "argument --no-ray: not allowed with argument --ray"),
    (["--solo", "--ray"], "argument --ray: not allowed with argument --solo"),
    (["--no-ray", "--solo"], "argument --no-ray: not allowed with argument --solo"),
    (["--setup", "--force-build", "--no-build"], "argument --no-build: not allowed with argument --force-build"),
    (["--no-build"], "argument --no-build: only with --setup or --build-only"),
    (["--download-only", "--no-build"], "argument --no-build: only with --setup or --build-only"),
])
def test_conflicting_flags_are_refused_naming_the_pair(home: Path, flags: list[str], pair: str) -> None:
    res = cli(home, "good", "--dry-run", *flags)
    assert res.returncode == 2 and pair in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("command", ["watch", "install-service"])
def test_watch_and_service_read_the_run_words_as_a_run_does(home: Path, command: str) -> None:
    """They converge the same plan later: a pair a run refuses must not be written into a unit or watched."""
    res = cli(home, command, "good", "--solo", "--ray", "--unit-dir" if command != "watch" else "--interval",
              str(home / "units") if command != "watch" else "1")
    assert res.returncode == 2 and "argument --ray: not allowed with argument --solo" in res.stderr, res.stderr
    assert not (home / "units").exists() and "Traceback" not in res.stderr


@pytest.mark.parametrize("env_line, flags, expect", [
    ("", ["--master-port", "0"], "--master-port: '0' is not a port number (1-65535)"),
    ("MASTER_PORT=2000\n", ["--master-port", "0"], "--master-port: '0' is not a port number"),
    ("MASTER_PORT=0\n", [], ".env: MASTER_PORT: '0' is not a port number"),
    ("MASTER_PORT=\u00b2\n", [], ".env: MASTER_PORT: '\u00b2' is not a port number"),
    ("MASTER_PORT=\u0662\u0662\n", [], ".env: MASTER_PORT: '\u0662\u0662' is not a port number"),
])
def test_master_port_zero_or_not_ascii_is_refused(home: Path, env_line: str, flags: list[str], expect: str) -> None:
    """A bad flag is a usage error (2, like every typed flag); a bad .env value is bad input (1)."""
    (home / ".env").write_text(env_line, encoding="utf-8")
    res = cli(home, "good", *NODES, "--dry-run", *flags)
    assert res.returncode == (2 if flags else 1) and expect in res.stderr, res.stderr
    assert res.stderr.startswith("usage: " if flags else "Error: ") and "Traceback" not in res.stderr + res.stdout


@pytest.mark.parametrize("entry", ["[::1", "[::1:22", "[fe80::1%eth0", "admin@[::1"])
def test_an_unclosed_ipv6_bracket_is_refused(entry: str) -> None:
    with pytest.raises(ConfigError, match=r"-n/--nodes: node '.*' is not a hostname or IP address"):
        parse_node(entry, "-n/--nodes")


def test_an_unclosed_ipv6_bracket_is_refused_by_the_cli(home: Path) -> None:
    res = cli(home, "good", "--dry-run", "-n", "[::1,10.0.0.2")
    assert res.returncode == 1 and "node '[::1' is not a hostname or IP address" in res.stderr, res.stderr


@pytest.mark.parametrize("args", [["-o", "host=\udcff"], ["--host", "a\udc80b"], ["--", "--x", "\udcfe"],
                                  ["--name", "\udcff"]])
def test_arguments_that_are_not_utf8_are_refused(home: Path, args: list[str]) -> None:
    """Found by tests/faults/test_fuzz_env_cli.py: a byte like 0xff in -o ended in a UnicodeEncodeError traceback.
    (subprocess hands str arguments over with os.fsencode: the surrogates become the original bytes.)"""
    res = cli(home, "good", "--solo", "--dry-run", *args)
    assert res.returncode == 1 and "is not UTF-8 text" in res.stderr, res.stderr
    assert res.stderr.startswith("Error: ") and "Traceback" not in res.stderr + res.stdout
