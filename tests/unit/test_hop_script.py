"""The chain hop's shell script, run here for real: one stream in, the same bytes to this node's
taker and to the next hop, with python3 (large writes) and with the `tee -p` fallback."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.chain import HOP_SCRIPT, _b64

TOOLS = ("sh", "mktemp", "rm", "base64", "tr", "mkfifo", "tee", "cat", "tail", "head", "touch")


def run_hop(tmp_path: Path, data: bytes, fwd: str, *, python: bool) -> subprocess.CompletedProcess:
    """HOP_SCRIPT with only the tools a node must have on PATH, plus python3 (wrapped, so the test
    sees it ran) when `python`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    if python:
        wrapper = bin_dir / "python3"
        wrapper.write_text(f'#!/bin/sh\ntouch "{tmp_path}/python-ran"\nexec "{shutil.which("python3")}" "$@"\n')
        wrapper.chmod(0o755)
    take = f"cat > {tmp_path}/mine"
    return subprocess.run(["sh", "-c", HOP_SCRIPT, "hop", "me", "nx", _b64(fwd), _b64(take)], input=data,
                          capture_output=True, env={"PATH": str(bin_dir), "TMPDIR": str(tmp_path)}, timeout=60)


@pytest.mark.parametrize("python", [True, False], ids=["python3", "tee"])
def test_a_forwarding_hop_gives_both_readers_every_byte(tmp_path: Path, python: bool) -> None:
    data = os.urandom(5 << 20) + b"end"
    p = run_hop(tmp_path, data, f"cat > {tmp_path}/next", python=python)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "mine").read_bytes() == data
    assert (tmp_path / "next").read_bytes() == data
    assert p.stdout.decode().splitlines() == ["RRSTAT take me 0 ", "RRSTAT fwd nx 0 -"]
    assert (tmp_path / "python-ran").exists() == python


@pytest.mark.parametrize("python", [True, False], ids=["python3", "tee"])
def test_a_next_hop_that_stops_reading_does_not_starve_this_node(tmp_path: Path, python: bool) -> None:
    data = os.urandom(5 << 20)
    p = run_hop(tmp_path, data, f"head -c 1000 > {tmp_path}/next; exit 3", python=python)
    assert (tmp_path / "mine").read_bytes() == data
    assert (tmp_path / "next").read_bytes() == data[:1000]
    assert p.stdout.decode().splitlines() == ["RRSTAT take me 0 ", "RRSTAT fwd nx 3 -"]
    assert p.returncode == 0
