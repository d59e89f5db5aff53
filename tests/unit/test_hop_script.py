"""The chain hop's shell script, run here for real: one stream in, the same bytes to this node's
taker and to the next hop, with python3 (large writes) and with the `tee -p` fallback; the chain
travels ahead of the stream, so a hop's command line is the same whatever the chain's length."""
from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.connect.chain import HOP, Worker, chain_header, hop_argv
from tasks.connect import SshLink

TOOLS = ("sh", "mktemp", "rm", "base64", "tr", "mkfifo", "tee", "cat", "tail", "head", "touch", "wc", "sed")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def line(name: str, take: str, reach: str) -> bytes:
    """One hop's line as chain_header writes it, with any reach command (here: local, no ssh)."""
    return f"{b64(name)} {b64(take)} {b64(reach) if reach else '-'}\n".encode()


def header(hops: list[tuple[str, str, str]]) -> bytes:
    body = b"".join(line(*hop) for hop in hops)
    return b"RRCHAIN %d\n" % len(body) + body


def tool_path(tmp_path: Path, python: bool) -> dict[str, str]:
    """Only the tools a node must have on PATH, plus python3 (wrapped, so the test sees it ran) when `python`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    if python:
        wrapper = bin_dir / "python3"
        wrapper.write_text(f'#!/bin/sh\ntouch "{tmp_path}/python-ran"\nexec "{shutil.which("python3")}" "$@"\n')
        wrapper.chmod(0o755)
    return {"PATH": str(bin_dir), "TMPDIR": str(tmp_path)}


def run_hop(tmp_path: Path, data: bytes, fwd: str, *, python: bool) -> subprocess.CompletedProcess:
    """One hop ("me") with a next hop ("nx") that `fwd` stands in for (its own line travels on with it)."""
    ahead = header([("me", f"cat > {tmp_path}/mine", ""), ("nx", "true", fwd)])
    return subprocess.run(HOP, input=ahead + data, capture_output=True, env=tool_path(tmp_path, python), timeout=60)


@pytest.mark.parametrize("python", [True, False], ids=["python3", "tee"])
def test_a_forwarding_hop_gives_both_readers_every_byte(tmp_path: Path, python: bool) -> None:
    data = os.urandom(5 << 20) + b"end"
    p = run_hop(tmp_path, data, f"cat > {tmp_path}/next", python=python)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "mine").read_bytes() == data
    # the next hop gets its own part of the chain ahead of the same bytes
    assert (tmp_path / "next").read_bytes() == header([("nx", "true", f"cat > {tmp_path}/next")]) + data
    assert p.stdout.decode().splitlines() == ["RRSTAT take me 0 ", "RRSTAT fwd nx 0 -"]
    assert (tmp_path / "python-ran").exists() == python


@pytest.mark.parametrize("python", [True, False], ids=["python3", "tee"])
def test_a_next_hop_that_stops_reading_does_not_starve_this_node(tmp_path: Path, python: bool) -> None:
    data = os.urandom(5 << 20)
    p = run_hop(tmp_path, data, f"head -c 1000 > {tmp_path}/next; exit 3", python=python)
    assert (tmp_path / "mine").read_bytes() == data
    assert (tmp_path / "next").read_bytes() == (header([("nx", "true", f"head -c 1000 > {tmp_path}/next; exit 3")])
                                                + data)[:1000]
    assert p.stdout.decode().splitlines() == ["RRSTAT take me 0 ", "RRSTAT fwd nx 3 -"]
    assert p.returncode == 0


@pytest.mark.parametrize("python", [True, False], ids=["python3", "tee"])
def test_a_dead_next_hop_is_reported_and_this_node_still_takes_all(tmp_path: Path, python: bool) -> None:
    data = os.urandom(1 << 20)
    p = run_hop(tmp_path, data, "exit 255", python=python)
    assert (tmp_path / "mine").read_bytes() == data
    assert p.stdout.decode().splitlines() == ["RRSTAT take me 0 ", "RRSTAT fwd nx 255 -"]


@pytest.mark.parametrize("python", [True, False], ids=["python3", "tee"])
def test_each_hop_peels_its_line_and_every_taker_gets_the_stream(tmp_path: Path, python: bool) -> None:
    """Six hops, each reaching the next by running the hop script locally (what ssh does remotely)."""
    data = os.urandom(3 << 20)
    names = [f"w{i}" for i in range(6)]
    hops = [(n, f"cat > {tmp_path}/{n}", shlex.join(HOP)) for n in names]
    p = subprocess.run(HOP, input=header(hops) + data, capture_output=True, env=tool_path(tmp_path, python),
                       timeout=120)
    assert p.returncode == 0, p.stderr
    for n in names:
        assert (tmp_path / n).read_bytes() == data, n
    lines = p.stdout.decode().splitlines()
    assert sorted(lines) == sorted([f"RRSTAT take {n} 0 " for n in names] + [f"RRSTAT fwd {n} 0 -" for n in names[1:]])


def test_a_bad_header_fails_the_hop_with_a_status_line(tmp_path: Path) -> None:
    p = subprocess.run(HOP, input=b"not a chain\n" + os.urandom(1000), capture_output=True,
                       env=tool_path(tmp_path, python=True), timeout=60)
    assert p.returncode == 97
    status = p.stdout.decode().split()
    assert status[:4] == ["RRSTAT", "take", "?", "97"]
    assert base64.b64decode(status[4]) == b"bad chain header"


def ssh_to(i: int) -> SshLink:
    """A worker's ssh link as tasks/connect gives it, with a fixed-width address."""
    return SshLink(("ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
                   "-o", "UserKnownHostsFile=/home/u/.ssh/known_hosts", f"root@10.0.{i // 256}.{100 + i % 100}"))


@pytest.mark.parametrize("length", [2, 16, 64])
def test_a_hop_command_is_the_same_size_whatever_the_chain_length(length: int) -> None:
    """What once nested every later hop inside the earlier ones (and broke near 12 workers) is now
    one fixed command per hop; only the header, sent in the stream, grows with the chain."""
    chain = [Worker(f"w{i:03d}", ssh_to(i)) for i in range(length)]
    sizes = {len(shlex.join(hop_argv(w, first=i == 0))) for i, w in enumerate(chain)}
    two = [Worker(f"w{i:03d}", ssh_to(i)) for i in range(2)]
    assert max(sizes) == max(len(shlex.join(hop_argv(w, first=i == 0))) for i, w in enumerate(two))
    assert max(sizes) < 4000
    take = "cd ~/x && tar -x -f -"
    assert len(chain_header(chain, take=lambda w: take)) < length * (max(sizes) * 4 // 3 + 200)
