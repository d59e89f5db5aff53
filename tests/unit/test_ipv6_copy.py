"""Weights reach a worker addressed by IPv6 (with and without a zone): rsync needs the address in brackets.

Real rsync, real manifest script and real files; only the network hop is a stand-in: an `ssh` first
on PATH that records the destination it was given and runs the command on this machine under another
HOME (no address here is ever contacted)."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tasks.ops import weights_copy as distribute
from tasks.connect.chain import Worker
from tasks.connect import SshLink, close_shared_connections, remote_path

FAKE_SSH = """#!/bin/sh
while [ $# -gt 0 ]; do
  case $1 in
    -O) exit 0;;  # a control command to a shared connection: there is none here
    -o|-p|-l|-F|-i|-S|-E) shift 2;;
    -*) shift;;
    *) break;;
  esac
done
printf '%s\\n' "$1" >> "$SSH_LOG"; shift
HOME=$REMOTE_HOME; export HOME; cd "$HOME"  # as sshd starts the command
exec sh -c "$*"
"""
COMMIT = "1" * 40


def small_cache(hub: Path) -> dict[str, bytes]:
    files = {"config.json": b'{"a": 1}', "model.safetensors": os.urandom(40_000)}
    repo = hub / "models--org--m"
    snap = repo / "snapshots" / COMMIT
    for sub in (repo / "blobs", repo / "refs", repo / "trees", snap):
        sub.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    listing = {}
    for i, (name, data) in enumerate(files.items()):
        blob = f"{i:040x}"
        (repo / "blobs" / blob).write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(repo / "blobs" / blob, snap))
        listing[name] = {"size": len(data), "blob_id": blob}
    (repo / "trees" / f"{COMMIT}.json").write_text(json.dumps({"format_version": 1, "files": listing}))
    return files


@pytest.mark.parametrize("dest, host", [("root@fd00:198:18::12", "fd00:198:18::12"),
                                        ("fe80::2%br-rr", "fe80::2%br-rr")])
def test_weights_copy_to_an_ipv6_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dest: str, host: str) -> None:
    assert remote_path(dest, "/x") == dest.replace(host, f"[{host}]") + ":/x"
    bin_dir, remote_home, log = tmp_path / "bin", tmp_path / "remote", tmp_path / "ssh.log"
    bin_dir.mkdir()
    remote_home.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(stat.S_IRWXU)
    close_shared_connections()  # connections earlier tests opened close with the real ssh
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SSH_LOG", str(log))
    monkeypatch.setenv("REMOTE_HOME", str(remote_home))
    files = small_cache(tmp_path / "local" / "hub")
    try:
        report = distribute.sync_weights(tmp_path / "local" / "hub", "~/.cache/huggingface/hub", "org/m", COMMIT,
                                         [Worker(host, SshLink(("ssh", dest)))], progress=None)
    finally:
        close_shared_connections()
    snap = remote_home / ".cache/huggingface/hub/models--org--m/snapshots" / COMMIT
    assert {name: (snap / name).read_bytes() for name in files} == files
    assert report.strategy and report.nodes[0].action == "sent"
    asked = set(log.read_text().split())
    assert asked <= {dest, host} and host in " ".join(asked), asked  # rsync passed the bare address on
