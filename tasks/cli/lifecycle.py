"""run-recipe status | stop | logs: the command line over tasks/serve/lifecycle.py.

Part of the command line (it prints): parses the flags, asks lifecycle for rows and names, and prints
them (tables on stdout, errors on stderr; `status --json` prints only JSON on stdout).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..ops import run_record
from ..flagtypes import count, seconds
from ..serve.lifecycle import (id_of, listed_nodes, node_runners, report_unreached, status_rows, stop,
                               supervision_line, wait_memory)


def main(command: str, args: list[str]) -> int:
    """status / stop / logs on every node of the cluster (-n, else .env CLUSTER_NODES), or this machine."""
    p = parser(command)
    ns = p.parse_args(args)
    if ns.recipe is not None and not ns.recipe.strip():
        # an empty name would match every runrecipe container (the label filter without a value)
        p.error("the recipe name is empty: name a recipe (see `run-recipe status`)"
                + (", or use --all to stop every runrecipe container" if command == "stop" else ""))
    if command == "stop" and ns.all and ns.recipe:
        p.error(f"name a recipe ({ns.recipe}) or use --all, not both")
    runners = node_runners(listed_nodes(ns.nodes, ns.config))  # the .env read once, here
    recipe_id = id_of(ns.recipe) if ns.recipe else None
    if command == "status" and ns.live:
        from .status_live import live

        return live(recipe_id, ns.interval, ns.count)
    if command == "status":
        return _status(runners, recipe_id, ns.json)
    if command == "stop":
        return _stop(runners, recipe_id, ns.all)
    return _logs(runners, recipe_id, ns.node, ns.follow)


def parser(command: str) -> argparse.ArgumentParser:
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
    rows, missed = status_rows(runners, recipe_id, details=as_json)
    if as_json:
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
        print(supervision_line(rid, run_record.read(rid) or {}), end="")
    return report_unreached("status", missed, "its containers are not listed")


def _stop(runners: list[Any], recipe_id: str | None, every: bool) -> int:
    """One recipe's containers, or all of them with --all; without either, say what runs and stop nothing."""
    if not recipe_id and not every:
        _status(runners, None, as_json=False)
        print("Error: stop: name the recipe to stop (one of the above), or use --all to stop every "
              "runrecipe container", file=sys.stderr)
        return 2
    names, missed = stop(runners, recipe_id, every)
    what = "every runrecipe container" if every else recipe_id
    print(f"stopped {', '.join(names)}" if names else f"nothing to stop for {what}"
          + (" on the nodes that answered" if missed else ""))
    again = "run-recipe stop " + ("--all" if every else str(recipe_id))
    if recipe_id and names:
        wait_memory(runners, recipe_id)  # after the line: the user sees the stop before the wait
    return report_unreached("stop", missed, f"run `{again}` again once it is back")


def _logs(runners: list[Any], recipe_id: str | None, node: str | None, follow: bool) -> int:
    from ..ops import launch

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

