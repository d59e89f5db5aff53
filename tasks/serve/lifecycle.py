"""The work behind run-recipe status | stop | logs: what runs on every node (-n, else .env CLUSTER_NODES,
else this machine), stopping a recipe's containers, and the nodes those commands look at.

It returns rows and names; tasks/cli/lifecycle.py prints them. The work per node is tasks/ops/launch.py's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from .. import settings
from ..ops import run_record
from ..errors import RunError, RunRecipeError
from ..fanout import each
from ..masking import scrub
from ..nodes import Node
from ..report import Failed, Warn, emit


def status_rows(runners: list[Any], recipe_id: str | None, *,
                details: bool = False) -> tuple[list[dict], list[str]]:
    """Every node's rows for the recipe (all recipes without one) and the nodes missed; with `details`,
    each row also holds its run record and what its head's /metrics says now (status --json)."""
    from ..ops import launch

    answers, missed = on_each_node(lambda rn: launch.status(rn, recipe_id), runners)
    rows = [row for rs in answers for row in rs]
    if details:
        for row in rows:
            row["record"] = run_record.read(row["recipe"])
            row["metrics"] = head_metrics(row)
    return rows, missed


def stop(runners: list[Any], recipe_id: str | None, every: bool) -> tuple[list[str], list[str]]:
    """Stop one recipe's containers (or every runrecipe container) on each node: the `name@node`s
    stopped and the nodes missed. The run record says "stopped" first, so a watcher does not read the
    gone containers as a failure."""
    from ..ops import launch

    run_record.mark_stopped(recipe_id)
    answers, missed = on_each_node(lambda rn: launch.stop(rn, recipe_id or "", every=every), runners)
    return [f"{n}@{r.node}" for r, stopped in zip(runners, answers) for n in stopped], missed


def head_metrics(row: dict) -> dict | None:
    """What the head's vLLM says in /metrics now (None on a worker's row or when it does not answer)."""
    from .metrics import read

    record = row["record"] or {}
    heads = [n.get("container", "") for n in (record.get("nodes") or [])[:1]]
    if not record.get("base_url") or not any(h.startswith(row["id"]) for h in heads):
        return None
    snap = read(record["base_url"], 0.0)
    return {k: v for k, v in snap.items() if k != "at"} if snap else None


def supervision_line(recipe_id: str, record: dict) -> str:
    """Readiness times and what the watcher did, from the run record ("" when it holds neither)."""
    ready, watch = record.get("readiness") or {}, record.get("watch") or {}
    parts = ([f"ready in {ready['ready_seconds']:.1f} s, first token in {ready['first_token_seconds']:.3f} s"]
             if ready.get("ready_seconds") is not None and ready.get("first_token_seconds") is not None else [])
    if watch:
        parts.append(f"watch: {watch.get('state')}, {watch.get('restarts', 0)} restart(s)"
                     + (f", last cause: {watch['last_cause']} ({watch.get('at')})" if watch.get("last_cause") else ""))
    return scrub(f"  {recipe_id}: {'; '.join(parts)}") + "\n" if parts else ""  # a record may hold log text


def wait_memory(runners: list[Any], recipe_id: str, timeout: float | None = None) -> None:
    """After a stop, wait (bounded) on each node until the memory its launch needed is free again;
    say which processes hold it when it is not."""
    from ..ops.memory_check import RELEASE_WAIT, wait_released
    from ..facts.memory import held_by, room
    from ..sizes import human_bytes

    needs = {n["node"]: n.get("memory_need") for n in (run_record.read(recipe_id) or {}).get("nodes", [])}
    waiting = [r for r in runners if needs.get(r.node)]
    # every node at once: a stuck node would otherwise hold up the wait of each node after it
    wait = RELEASE_WAIT if timeout is None else timeout
    lefts, _ = on_each_node(lambda runner: [wait_released(runner, needs[runner.node], timeout=wait)], waiting)
    for runner, answer in zip(waiting, lefts):  # [] when the node did not answer: report_unreached names it
        if answer and answer[0] is not None:
            need, left = needs[runner.node], answer[0]
            emit(Warn(f"{runner.node}: {human_bytes(need)} of memory not free again after "
                      f"{wait:.0f} s ({human_bytes(room(left))} available); "
                      f"held by {held_by(left.holders) or 'an unknown process'}"))


def on_each_node(work: Callable[[Any], list], runners: Sequence[Any]) -> tuple[list[list], list[str]]:
    """`work` on every node at once; a node that cannot be reached costs only its own answer.

    Returns the answers in node order ([] for a missed node) and one `node: why` line per missed node."""
    def attempt(runner: Any) -> tuple[list, str]:
        try:
            return work(runner), ""
        except RunError as exc:
            return [], f"{runner.node}: {str(exc).splitlines()[0]}"

    pairs = each(attempt, runners)
    return [answer for answer, _ in pairs], [why for _, why in pairs if why]


def report_unreached(command: str, missed: list[str], consequence: str) -> int:
    """Exit code 1 and an error event per node `command` could not reach, saying what that leaves undone."""
    for why in missed:
        emit(Failed(f"{command}: {scrub(why)} ({consequence})"))
    return 1 if missed else 0


def listed_nodes(nodes: str | None, config: Path | None) -> tuple[Node, ...]:
    """-n's nodes, else the .env's CLUSTER_NODES (read once, with none of its launch values checked: a bad
    IB_IF must not keep status or stop from working), else none (this machine alone)."""
    from ..config import read_env
    from ..nodes import parse_list

    return parse_list(nodes, "-n/--nodes") if nodes is not None else read_env(config).cluster_nodes()


def node_runners(listed: Sequence[Node]) -> list[Any]:
    """This machine first, then the other nodes over SSH (verified host keys)."""
    from ..connect import SshSettings, head_first

    return head_first(listed, SshSettings())


def id_of(name: str) -> str:
    """The id containers are labelled with; a name that is not a file is taken as the id itself."""
    from ..recipe import find, id_for

    try:
        return id_for(find(name, settings.recipes_dir()), settings.recipes_dir())
    except RunRecipeError:
        return name

