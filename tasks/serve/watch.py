"""Supervision: keep a list of runs serving, re-forming a whole group when any part of it fails.

A multi-node vLLM group cannot heal one rank: the others wait for it forever. So when a rank's
container dies or the head stops answering, the watcher tears the group down on every node and
converges it again (the same plan, the same inputs hash), with exponential backoff between failed
attempts and a crash-loop cap: after K failed restarts within T minutes it stops and says why.

The watcher knows runs only through the `Run` protocol (check / teardown / converge), so a stack of
recipes plugs in as a list of runs. The policy is pure (`Policy`, `Tally`); `watch` is the loop.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Protocol, Sequence

from ..errors import RunRecipeError
from ..masking import scrub


class Run(Protocol):
    """One supervised run: a recipe on its nodes (or a member of a stack)."""

    name: str

    def ended(self) -> str | None:
        """Why to stop watching it (someone stopped it on purpose), or None."""

    def check(self) -> str | None:
        """None while it serves; else the cause, in one line."""

    def teardown(self) -> None:
        """Remove every container of the run on every node."""

    def converge(self) -> None:
        """Start it again and wait until ready; raise RunRecipeError (the cause in its message) if it fails."""

    def note(self, watch: dict) -> None:
        """Keep the watcher's counts and last cause where `status` shows them (the run record)."""


@dataclass(frozen=True)
class Policy:
    interval: float = 3.0     # seconds between checks
    backoff: float = 5.0      # seconds before the first retry after a failed restart; doubles each time
    backoff_max: float = 300.0
    max_failures: int = 5     # K: failed restarts ...
    window: float = 600.0     # ... within T seconds stop the watcher for that run


@dataclass
class Tally:
    """What happened to one run: restarts begun, failed ones (times), the last cause, when to try next."""

    restarts: int = 0
    failures: list[float] = field(default_factory=list)
    last_cause: str = ""
    retry_at: float = 0.0     # 0: no failed restart pending
    delay: float = 0.0
    gave_up: str = ""
    ended: str = ""           # stopped on purpose: not a failure

    def failed(self, now: float, policy: Policy) -> None:
        """A restart failed: count it, and either schedule the next one later or give up (crash loop)."""
        self.failures = [t for t in self.failures if now - t < policy.window] + [now]
        if len(self.failures) >= policy.max_failures:
            self.gave_up = (f"crash loop: {len(self.failures)} failed restarts within {policy.window / 60:g} min; "
                            f"last cause: {self.last_cause}")
            return
        self.delay = min(policy.backoff_max, self.delay * 2 if self.delay else policy.backoff)
        self.retry_at = now + self.delay

    def succeeded(self) -> None:
        self.retry_at, self.delay = 0.0, 0.0

    def record(self, state: str) -> dict:
        return {"state": state, "restarts": self.restarts, "failed_restarts": len(self.failures),
                "last_cause": self.last_cause, "at": _stamp(), **({"stopped": self.gave_up} if self.gave_up else {})}


def watch(runs: Sequence[Run], policy: Policy, log: Callable[[str], None],
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
          rounds: int | None = None) -> int:
    """Check every run every `policy.interval` s and re-form the failed ones. Returns once no run is left
    to watch: 1 when one hit its crash-loop cap, 0 when all were stopped on purpose (and 0 after
    `rounds` rounds, for tests and benchmarks)."""
    tallies = {run.name: Tally() for run in runs}
    for run in runs:
        log(f"watching {run.name} (every {policy.interval:g} s; gives up after {policy.max_failures} failed "
            f"restarts within {policy.window / 60:g} min)")
    done = 0
    while rounds is None or done < rounds:
        for run in runs:
            tally = tallies[run.name]
            if not (tally.gave_up or tally.ended):
                _step(run, tally, policy, log, clock)
        if all(t.gave_up or t.ended for t in tallies.values()):
            return 1 if any(t.gave_up for t in tallies.values()) else 0
        done += 1
        sleep(policy.interval)
    return 0


def _step(run: Run, tally: Tally, policy: Policy, log: Callable[[str], None], clock: Callable[[], float]) -> None:
    """One check of one run, and a re-form when it failed (or when a failed restart's backoff is over)."""
    now = clock()
    if tally.retry_at and now < tally.retry_at:
        return
    if _ended(run, tally, log):
        return
    if not tally.retry_at:
        cause = _safe_check(run)
        if cause is None or _ended(run, tally, log):  # asked again: a stop removes the containers just after
            return
        tally.last_cause = scrub(cause)  # read from server logs: kept in the run record and printed
        log(f"{run.name}: {tally.last_cause}")
    tally.restarts += 1
    log(f"{run.name}: tearing down the group on every node and converging again (restart {tally.restarts})")
    try:
        run.teardown()
        run.converge()
    except RunRecipeError as exc:
        if _ended(run, tally, log):  # stopped while re-forming: the converge refused, or removed what it started
            return
        tally.last_cause = _cause_of(str(exc))
        tally.failed(clock(), policy)
        if tally.gave_up:
            log(f"{run.name}: stopped watching: {tally.gave_up}")
            run.note(tally.record("stopped"))
            return
        log(f"{run.name}: restart {tally.restarts} failed ({tally.last_cause}); next try in {tally.delay:g} s")
        run.note(tally.record("backing off"))
        return
    tally.succeeded()
    log(f"{run.name}: serving again after restart {tally.restarts}")
    run.note(tally.record("watching"))


def _ended(run: Run, tally: Tally, log: Callable[[str], None]) -> bool:
    tally.ended = run.ended() or ""
    if tally.ended:
        log(f"{run.name}: {tally.ended}: stopped watching it")
        run.note(tally.record("ended"))
    return bool(tally.ended)


def _safe_check(run: Run) -> str | None:
    try:
        return run.check()
    except RunRecipeError as exc:  # a node that does not answer is a failure of the run too
        return _cause_of(str(exc))


def _cause_of(message: str) -> str:
    """The line of an error that says why (`cause: ...`), else its first line."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()] or ["unknown"]
    return scrub(next((ln for ln in lines if ln.startswith("cause: ")), lines[0]))


def _stamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def logger(stream: Callable[[str], None]) -> Callable[[str], None]:
    """Every action with its UTC time (milliseconds), one line each."""
    return lambda line: stream(f"{datetime.now(timezone.utc).isoformat(timespec='milliseconds')} watch: {scrub(line)}")

