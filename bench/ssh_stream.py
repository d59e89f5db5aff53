#!/usr/bin/env python3
"""Bulk bytes over SSH: fabric/paramiko's channel against the OpenSSH client, side by side.

tasks/connect runs commands with fabric and streams bulk bytes (docker save | … docker load, tar
streams, rsync, chain hops) through OpenSSH. This bench is the measurement behind that choice: on
two netns test nodes (tests/harness, sshd only), the head pipes the same N MB into `cat >/dev/null`
on the worker, once through a paramiko channel of the connector's own fabric connection (same
host-key policy, ssh_config and known_hosts) and once through the connector's OpenSSH link
(`Ssh.link`), alternating, and prints MB/s per run, the medians and their ratio. The links
are unshaped veths, so the figure is what each client and its cipher path cost, not the wire.

    sudo python3 bench/ssh_stream.py [--mb 200] [--repeat 3] [--wait 900]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import cluster as rc  # noqa: E402

# Runs on the head node (its netns, HOME=/root with the cluster's ~/.ssh): both clients, the same bytes.
DRIVER = r"""
import json, shlex, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tasks.connect import Ssh, SshSettings
from tasks.nodes import Node
a = json.loads(sys.argv[2])
chunk, total = bytes(range(256)) * 4096, a["mb"] << 20  # 1 MiB, incompressible enough for a cipher
ssh = Path("/root/.ssh")
runner = Ssh(Node(a["worker"], "root"), SshSettings(known_hosts=ssh / "known_hosts", ssh_config=ssh / "config"))
runner.read(["true"])  # fabric's connection up (host key checked)
subprocess.run(runner.argv_for(["true"]), check=True)  # OpenSSH's shared connection up
SINK = ["sh", "-c", "cat >/dev/null && echo done"]

def fabric():
    chan = runner._connection("bench").client.get_transport().open_session()
    chan.exec_command(shlex.join(SINK))
    left = total
    while left > 0:
        chan.sendall(chunk[:min(left, len(chunk))])
        left -= len(chunk)
    chan.shutdown_write()
    assert chan.recv_exit_status() == 0

def openssh():
    p = subprocess.Popen(runner.argv_for(SINK), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    left = total
    while left > 0:
        p.stdin.write(chunk[:min(left, len(chunk))])
        left -= len(chunk)
    p.stdin.close()
    assert p.wait() == 0

runs = {"fabric": [], "openssh": []}
for _ in range(a["repeat"]):
    for name, fn in (("fabric", fabric), ("openssh", openssh)):
        t0 = time.monotonic()
        fn()
        runs[name].append(time.monotonic() - t0)
runner.close()
print(json.dumps(runs))
"""


def cluster(wait: float) -> rc.TestCluster:
    """Two nodes with sshd only, once the machine's one test cluster is free."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return rc.TestCluster(2, owner="bench/ssh_stream.py", dockerd=False).__enter__()
        except rc.ClusterBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(3)


def report(mb: int, runs: dict[str, list[float]]) -> None:
    rates = {}
    for name, times in runs.items():
        rates[name] = mb / statistics.median(times)
        spread = ", ".join(f"{mb / t:.0f}" for t in times)
        print(f"  {name:8} {rates[name]:7.1f} MB/s  (runs: {spread})")
    print(f"  OpenSSH / fabric: {rates['openssh'] / rates['fabric']:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=200, help="MB piped per run")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each client, alternating (the median counts)")
    ap.add_argument("--wait", type=float, default=900, help="seconds to wait for a busy test cluster")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/ssh_stream.py needs root (it builds a netns test cluster)")
    try:
        c = cluster(a.wait)
    except rc.ClusterBusy as e:
        sys.exit(str(e))
    try:
        args = {"worker": c.nodes[1].name, "mb": a.mb, "repeat": max(1, a.repeat)}
        p = c.head.run([sys.executable, "-c", DRIVER, str(ROOT), json.dumps(args)], timeout=3600)
        if p.returncode != 0:
            sys.exit(f"driver failed: {p.stderr[-3000:]}")
        print(f"{a.mb} MB head -> worker, `cat >/dev/null` there, {args['repeat']} runs each:")
        report(a.mb, json.loads(p.stdout.strip().splitlines()[-1]))
    finally:
        c.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
