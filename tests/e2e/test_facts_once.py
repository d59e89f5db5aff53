"""Facts are asked once per run: a no-op re-run asks the engine each thing one time only.

The re-run executes in a child process whose Local.read records every query it sends to the
real test dockerd (the recording wraps the real call; nothing is answered for it)."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

from .conftest import Project, free_port
from .test_solo import simple

DRIVER = r"""
import json, sys
from tasks.connect import Local
asked = []
real = Local.read
def read(self, argv, **kwargs):
    asked.append(list(argv))
    return real(self, argv, **kwargs)
Local.read = read
from tasks.cli.main import main
code = main(sys.argv[1:])
print("ASKED " + json.dumps(asked))
sys.exit(code)
"""


def test_a_noop_rerun_asks_each_fact_once(project: Project) -> None:
    port = free_port()
    mod = project.root / "mods" / "mark"
    mod.mkdir(parents=True)
    (mod / "run.sh").write_text("#!/bin/sh\ntouch \"$WORKSPACE_DIR/mark\"\n")
    project.recipe("once", simple("once", port, mods="mods: [mods/mark]"))
    first = project.cli("once", "--setup", "-d")
    assert first.returncode == 0, first.stderr
    again = subprocess.run([sys.executable, "-c", DRIVER, "once", "--setup", "-d"], cwd=project.root,
                           env=project.env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "serving" not in again.stdout.lower() or "-- launch:once" in again.stdout
    asked = json.loads(next(ln for ln in again.stdout.splitlines() if ln.startswith("ASKED "))[6:])
    assert asked, "the re-run asked the engine nothing: the recording is broken"
    twice = {" ".join(argv): n for argv, n in Counter(tuple(a) for a in asked).items() if n > 1}
    assert twice == {}, twice
