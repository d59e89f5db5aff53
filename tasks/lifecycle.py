"""run-recipe status | stop | logs: what runs on every node (-n, else .env CLUSTER_NODES, else this machine).

Part of the command line (it prints); the work per node is tasks/launch.py's.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import run_record, settings
from .errors import ConfigError, RunError, RunRecipeError
from .flagtypes import count, seconds
from .masking import scrub
from .plan import Options


def main(command: str, args: list[str]) -> int:
    """status / stop / logs on every node of the cluster (-n, else .env CLUSTER_NODES), or this machine."""
    p = _parser(command)
    ns = p.parse_args(args)
    if ns.recipe is not None and not ns.recipe.strip():
        # an empty name would match every runrecipe container (the label filter without a value)
        p.error("the recipe name is empty: name a recipe (see `run-recipe status`)"
                + (", or use --all to stop every runrecipe container" if command == "stop" else ""))
    if command == "stop" and ns.all and ns.recipe:
        p.error(f"name a recipe ({ns.recipe}) or use --all, not both")
    runners = node_runners(ns.nodes, ns.config)
    recipe_id = id_of(ns.recipe) if ns.recipe else None
    if command == "status" and ns.live:
        from .status_live import live

        return live(recipe_id, ns.interval, ns.count)
    if command == "status":
        return _status(runners, recipe_id, ns.json)
    if command == "stop":
        return _stop(runners, recipe_id, ns.all)
    return _logs(runners, recipe_id, ns.node, ns.follow)


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"run-recipe {command}")
    p.add_argument("recipe", nargs=None if command == "logs" else "?",
                   help={"status": "only this recipe (default: everything runrecipe runs)",
                         "stop": "the recipe to stop; without it (and without --all) stop lists what runs",
                         "logs": "the recipe whose server log to show"}[command])
    p.add_argument("-n", "--nodes", metavar="IPS", help="nodes to look at (default: .env CLUSTER_NODES, else local)")
    p.add_argument("--config", type=Path, metavar="FILE", help="read nodes from FILE instead of .env")
    if command == "status":
        p.add_argument("--json", action="store_true", help="print JSON (with what each head's /metrics says now)")
        p.add_argument("--live", action="store_true", help="refresh what each server's vLLM /metrics says")
        p.add_argument("--interval", type=seconds, default=2.0, metavar="S", help="--live: seconds between frames")
        p.add_argument("--count", type=count(1_000_000), metavar="N", help="--live: stop after N frames")
    if command == "stop":
        p.add_argument("--all", action="store_true", help="stop every runrecipe container on every node")
    if command == "logs":
        p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
        p.add_argument("--node", metavar="NODE", help="which node's container (default: the head)")
    return p


def _status(runners: list[Any], recipe_id: str | None, as_json: bool) -> int:
    from . import launch

    answers, missed = on_each_node(lambda rn: launch.status(rn, recipe_id), runners)
    rows = [row for rs in answers for row in rs]
    if as_json:
        for row in rows:
            row["record"] = run_record.read(row["recipe"])
            row["metrics"] = _metrics(row)
        print(json.dumps(rows, indent=2))
        return report_unreached("status", missed, "its containers are not listed")
    if not rows:
        print("nothing running" + (f" for {recipe_id}" if recipe_id else "")
              + (" on the nodes that answered" if missed else ""))
    for stack, group in itertools.groupby(sorted(rows, key=lambda r: r["stack"]), key=lambda r: r["stack"]):
        if stack:  # a stack's entries and gateway together, under its name
            print(f"stack {stack}:")
        for row in group:
            print(f"{'  ' if stack else ''}{row['recipe']:<32} {row['node']:<16} {row['state']:<10} "
                  f"{row['endpoint']:<28} {row['container']} (since {row['started']})")
    for rid in dict.fromkeys([*(row["recipe"] for row in rows), *([recipe_id] if recipe_id else [])]):
        print(_supervision_line(rid, run_record.read(rid) or {}), end="")
    return report_unreached("status", missed, "its containers are not listed")


def _metrics(row: dict) -> dict | None:
    """What the head's vLLM says in /metrics now (None on a worker's row or when it does not answer)."""
    from .metrics import read

    record = row["record"] or {}
    heads = [n.get("container", "") for n in (record.get("nodes") or [])[:1]]
    if not record.get("base_url") or not any(h.startswith(row["id"]) for h in heads):
        return None
    snap = read(record["base_url"], 0.0)
    return {k: v for k, v in snap.items() if k != "at"} if snap else None


def _supervision_line(recipe_id: str, record: dict) -> str:
    """Readiness times and what the watcher did, from the run record ("" when it holds neither)."""
    ready, watch = record.get("readiness") or {}, record.get("watch") or {}
    parts = ([f"ready in {ready['ready_seconds']:.1f} s, first token in {ready['first_token_seconds']:.3f} s"]
             if ready.get("ready_seconds") is not None and ready.get("first_token_seconds") is not None else [])
    if watch:
        parts.append(f"watch: {watch.get('state')}, {watch.get('restarts', 0)} restart(s)"
                     + (f", last cause: {watch['last_cause']} ({watch.get('at')})" if watch.get("last_cause") else ""))
    return scrub(f"  {recipe_id}: {'; '.join(parts)}") + "\n" if parts else ""  # a record may hold log text


def _stop(runners: list[Any], recipe_id: str | None, every: bool) -> int:
    """One recipe's containers, or all of them with --all; without either, say what runs and stop nothing."""
    from . import launch

    if not recipe_id and not every:
        _status(runners, None, as_json=False)
        print("Error: stop: name the recipe to stop (one of the above), or use --all to stop every "
              "runrecipe container", file=sys.stderr)
        return 2
    run_record.mark_stopped(recipe_id)  # first: a watcher must not read the gone containers as a failure
    answers, missed = on_each_node(lambda rn: launch.stop(rn, recipe_id or "", every=every), runners)
    names = [f"{n}@{r.node}" for r, stopped in zip(runners, answers) for n in stopped]
    what = "every runrecipe container" if every else recipe_id
    print(f"stopped {', '.join(names)}" if names else f"nothing to stop for {what}"
          + (" on the nodes that answered" if missed else ""))
    again = "run-recipe stop " + ("--all" if every else str(recipe_id))
    if recipe_id and names:
        _wait_memory(runners, recipe_id)
    return report_unreached("stop", missed, f"run `{again}` again once it is back")


def _wait_memory(runners: list[Any], recipe_id: str, timeout: float | None = None) -> None:
    """After a stop, wait (bounded) on each node until the memory its launch needed is free again;
    say which processes hold it when it is not."""
    from .memory_check import RELEASE_WAIT, wait_released
    from .memory_guard import held_by, room
    from .units import human_bytes

    needs = {n["node"]: n.get("memory_need") for n in (run_record.read(recipe_id) or {}).get("nodes", [])}
    waiting = [r for r in runners if needs.get(r.node)]
    # every node at once: a stuck node would otherwise hold up the wait of each node after it
    wait = RELEASE_WAIT if timeout is None else timeout
    lefts, _ = on_each_node(lambda runner: [wait_released(runner, needs[runner.node], timeout=wait)], waiting)
    for runner, answer in zip(waiting, lefts):  # [] when the node did not answer: report_unreached names it
        if answer and answer[0] is not None:
            need, left = needs[runner.node], answer[0]
            print(f"Warning: {runner.node}: {human_bytes(need)} of memory not free again after "
                  f"{wait:.0f} s ({human_bytes(room(left))} available); "
                  f"held by {held_by(left.holders) or 'an unknown process'}", file=sys.stderr)


def _logs(runners: list[Any], recipe_id: str | None, node: str | None, follow: bool) -> int:
    from . import launch

    runner = next((r for r in runners if not node or node in (r.node, r.node.split("@")[-1])), None)
    rows = launch.status(runner, recipe_id) if runner else []
    if not rows:
        raise ConfigError(f"no container of recipe {recipe_id}" + (f" on {node}" if node else "")
                          + "; see `run-recipe status`")
    argv = ["docker", "logs", *(["-f"] if follow else []), rows[0]["id"]]
    if runner is runners[0]:
        import subprocess

        return subprocess.call(argv)
    return runner.run(argv, check=False).exit_code


def on_each_node(work: Callable[[Any], list], runners: Sequence[Any]) -> tuple[list[list], list[str]]:
    """`work` on every node at once; a node that cannot be reached costs only its own answer.

    Returns the answers in node order ([] for a missed node) and one `node: why` line per missed node."""
    from concurrent.futures import ThreadPoolExecutor

    def attempt(runner: Any) -> tuple[list, str]:
        try:
            return work(runner), ""
        except RunError as exc:
            return [], f"{runner.node}: {str(exc).splitlines()[0]}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        pairs = list(pool.map(attempt, runners))
    return [answer for answer, _ in pairs], [why for _, why in pairs if why]


def report_unreached(command: str, missed: list[str], consequence: str) -> int:
    """Exit code 1 and one line per node `command` could not reach, saying what that leaves undone."""
    for why in missed:
        print(f"Error: {command}: {scrub(why)} ({consequence})", file=sys.stderr)
    return 1 if missed else 0


def node_runners(nodes: str | None, config: Path | None) -> list[Any]:
    """This machine first, then the other nodes over SSH (verified host keys)."""
    from .nodes import load_env, parse_list
    from .plan import env_file
    from .connect import SshSettings
    from .remote import RemoteRunner
    from .runner import LocalRunner

    source = "-n/--nodes" if nodes is not None else f"{env_file(Options(config=config))}: CLUSTER_NODES"
    text = nodes if nodes is not None else load_env(env_file(Options(config=config))).get("CLUSTER_NODES", "")
    listed = parse_list(text, source)
    head = LocalRunner()
    if listed:
        head.node = listed[0].target  # rows and errors name the head as the node list does
    return [head] + [RemoteRunner(n, SshSettings()) for n in listed[1:]]


def id_of(name: str) -> str:
    """The id containers are labelled with; a name that is not a file is taken as the id itself."""
    from .recipe import find, id_for

    try:
        return id_for(find(name, settings.recipes_dir()), settings.recipes_dir())
    except RunRecipeError:
        return name
