"""`--discover` scan time: the whole test /24 from inside a node, 3 live nodes. Goal: <= 3 s.

Brings up the netns test cluster (3 nodes on 198.18.0.0/24, nothing else reachable), then runs
`tasks.cluster.discover.discover("eth0", …)` inside n1's namespaces as a user there would: 254 TCP
probes with concurrency 64 and a 0.5 s timeout, SSH confirmation of every open port 22.
Needs root; only one test cluster per machine.

    python3 bench/discover.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import cluster as rc  # noqa: E402

SCRIPT = r"""
import json, time
from tasks.cluster.discover import discover
from tasks.connect import SshSettings
t0 = time.monotonic()
found = discover("eth0", None, SshSettings(connect_timeout=2))
print(json.dumps({"took": time.monotonic() - t0, "found": [c.as_dict() for c in found]}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    try:
        cluster = rc.TestCluster(3, owner="bench/discover.py").__enter__()
    except rc.ClusterBusy as e:
        print(f"bench/discover: {e}", file=sys.stderr)
        return 2
    try:
        times = []
        for i in range(args.rounds):
            p = cluster.head.run([sys.executable, "-c", SCRIPT], cwd=str(ROOT), timeout=120,
                                 env={"PYTHONPATH": str(ROOT)}, check=True)
            out = json.loads(p.stdout.strip().splitlines()[-1])
            confirmed = sorted(c["ip"] for c in out["found"] if c["confirmed"])
            times.append(out["took"])
            print(f"round {i + 1}: {out['took']:.2f} s, confirmed {', '.join(confirmed)}")
            expect = sorted(n.ip for n in cluster.nodes)
            if confirmed != expect:
                print(f"bench/discover: expected exactly {expect}", file=sys.stderr)
                return 1
        worst = max(times)
        print(f"scan of 198.18.0.0/24 from n1 (3 live nodes, concurrency 64, timeout 0.5 s): "
              f"best {min(times):.2f} s, worst {worst:.2f} s (goal <= 3 s: {'ok' if worst <= 3 else 'MISSED'})")
        return 0 if worst <= 3 else 1
    finally:
        cluster.teardown()


if __name__ == "__main__":
    sys.exit(main())
