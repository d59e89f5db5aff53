"""One recipe's run as the watcher sees it: its containers on every node, its head's /health, and
how to tear it down and converge it again (the same command with `-d`: the same plan, the same hash)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Sequence

from .. import settings
from ..errors import RunError
from ..fanout import each
from ..facts import cache as facts, docker
from ..connect import Connector
from ..flagtypes import run_words
from ..masking import scrub
from ..ops import crash_causes, launch, readiness, run_record
from ..plan import Plan
from ..report import say

MISSES = 2  # checks in a row without a /health answer (or probes without a token) before the head counts as gone


class RecipeRun:
    """A recipe on its nodes. `run_args` are the run's own command-line words (recipe, flags, `-- ...`)."""

    def __init__(self, plan: Plan, run_args: Sequence[str], runners: Sequence[Connector], token_every: float = 30.0,
                 token_wait: float = 30.0) -> None:
        self.plan, self.name = plan, plan.recipe.id
        self.run_args = list(run_args)
        self.runners = {r.node: r for r in runners}
        self.token_every = token_every  # seconds between streamed-token probes (answering /health is not serving)
        self.token_wait = token_wait    # seconds a probe waits for its first token (a busy server queues it)
        self.misses = self.mute = 0
        self.probed = time.monotonic()

    def ended(self) -> str | None:
        stopped = (run_record.read(self.name) or {}).get("stopped")
        return f"stopped with `run-recipe stop` at {stopped}" if stopped else None

    def check(self) -> str | None:
        record = run_record.read(self.name) or {}
        if not record.get("nodes"):
            return "not running (no run record: it never became ready)"
        for node in record["nodes"]:
            runner = self.runners.get(node["node"])
            if runner is None:
                return f"the run record names {node['node']}, which is not a node of this run"
            status, code = docker.state(runner, node["container"])
            if status != "running":
                tail = docker.logs_tail(runner, node["container"]) if status != "gone" else ""
                return (f"rank {node['rank']} on {node['node']}: container {status}"
                        + (f" (exit {code})" if status != "gone" else "")
                        + (f"; {crash_causes.one_line(tail, code)}" if tail else ""))
        base = launch.base_url(self.plan)
        status = readiness.health(base)
        if status == 200:
            self.misses = 0
            return self._probe(base)
        if status is not None and status >= 500:
            return f"the head's {base}/health answered {status} (vLLM's engine is dead)"
        self.misses += 1
        return f"the head stopped answering {base}/health" if self.misses >= MISSES else None

    def _probe(self, base: str) -> str | None:
        """Every `token_every` s, one streamed completion: a head that answers /health but gives no
        token twice in a row is wedged."""
        if time.monotonic() - self.probed < self.token_every:
            return None
        key = self.plan.api_key
        model = readiness.served_model(base, self.plan.served_model, key)
        took = readiness.first_token(base, model, self.token_wait, key=key) if model else None
        self.probed = time.monotonic()
        self.mute = 0 if took is not None else self.mute + 1
        if self.mute >= MISSES:
            return f"the head answers {base}/health but streamed no token in {MISSES} tries ({self.token_wait:g} s each)"
        return None

    def teardown(self) -> None:
        def stop(runner: Connector) -> None:
            facts.forget(runner.node)  # the container list changed since we last asked
            launch.stop(runner, self.name)

        each(stop, list(self.runners.values()))
        self.misses = self.mute = 0

    def converge(self) -> None:
        """`run-recipe <run args> -d --reform [-- vLLM args]` in a process of its own: it takes the state
        lock only while it converges, its output goes to the watcher's log, and it refuses to start a
        run that `run-recipe stop` stopped (run_record)."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(settings.CODE_ROOT), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run([sys.executable, "-m", "tasks", *run_words(self.run_args, "-d", "--reform")],
                              env=env, capture_output=True, text=True)
        for line in (proc.stdout + proc.stderr).splitlines():
            say(f"    {scrub(line)}")
        if proc.returncode:
            raise RunError(f"{self.name}: the converge exited {proc.returncode}\n{scrub(proc.stderr.strip())}")

    def note(self, watch: dict) -> None:
        run_record.update(self.name, lambda record: {"recipe": self.name, **record, "watch": watch})

