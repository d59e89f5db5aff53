"""Count what a run sends to other machines: SSH command channels (fabric) and OpenSSH/rsync processes.

Run as `python3 -m harness.roundtrips CODE_ROOT run-recipe-args...` (with tests/ on sys.path): it
imports runrecipe from CODE_ROOT, wraps fabric's Connection.run and subprocess.Popen so every call
is counted and then carried out for real, runs the CLI in-process and prints `COUNTS {json}` last.
Works on older checkouts too (it patches only fabric and subprocess), for before/after figures.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

counts: Counter[str] = Counter()


def main() -> int:
    root, args = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, root)
    import fabric

    real_run = fabric.Connection.run

    def run(self, command, **kwargs):  # type: ignore[no-untyped-def]
        counts["fabric command"] += 1
        if os.environ.get("RR_SHOW"): print("FABRIC", self.host, command[:150], file=sys.stderr)
        return real_run(self, command, **kwargs)

    real_popen = subprocess.Popen.__init__

    def popen(self, args, *rest, **kwargs):  # type: ignore[no-untyped-def]
        first = os.path.basename(str(args[0] if isinstance(args, (list, tuple)) else str(args).split()[0]))
        if first in ("ssh", "rsync"):
            is_control = isinstance(args, (list, tuple)) and "-O" in args
            counts[f"{first} process" + (" (control)" if is_control else "")] += 1
        return real_popen(self, args, *rest, **kwargs)

    fabric.Connection.run = run
    subprocess.Popen.__init__ = popen  # type: ignore[method-assign]
    from tasks.cli.main import main as cli

    try:
        code = cli(args)
    finally:
        print("COUNTS " + json.dumps(dict(counts), sort_keys=True), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
