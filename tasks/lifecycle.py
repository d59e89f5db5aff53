"""run-recipe status | stop | logs: what runs on every node (-n, else .env CLUSTER_NODES, else this machine).

Part of the command line (it prints); the work per node is tasks/launch.py's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import settings
from .errors import ConfigError, RunError, RunRecipeError
from .plan import Options


def main(command: str, args: list[str]) -> int:
    """status / stop / logs on every node of the cluster (-n, else .env CLUSTER_NODES), or this machine."""
    from . import launch

    p = argparse.ArgumentParser(prog=f"run-recipe {command}")
    p.add_argument("recipe", nargs="?" if command == "status" else None)
    p.add_argument("-n", "--nodes", metavar="IPS", help="nodes to look at (default: .env CLUSTER_NODES, else local)")
    p.add_argument("--config", type=Path, metavar="FILE", help="read nodes from FILE instead of .env")
    if command == "status":
        p.add_argument("--json", action="store_true")
    if command == "logs":
        p.add_argument("-f", "--follow", action="store_true")
        p.add_argument("--node", metavar="NODE", help="which node's container (default: the head)")
    ns = p.parse_args(args)
    runners = _node_runners(ns.nodes, ns.config)
    recipe_id = _recipe_id(ns.recipe) if ns.recipe else None
    if command == "status":
        answers, missed = _on_each_node(lambda rn: launch.status(rn, recipe_id), runners)
        rows = [row for rs in answers for row in rs]
        if ns.json:
            for row in rows:
                row["record"] = launch.read_record(row["recipe"])
            print(json.dumps(rows, indent=2))
        else:
            if not rows:
                print("nothing running" + (f" for {recipe_id}" if recipe_id else "")
                      + (" on the nodes that answered" if missed else ""))
            for row in rows:
                print(f"{row['recipe']:<32} {row['node']:<16} {row['state']:<10} {row['endpoint']:<28} "
                      f"{row['container']} (since {row['started']})")
        return _unreached("status", missed, "its containers are not listed")
    if command == "stop":
        answers, missed = _on_each_node(lambda rn: launch.stop(rn, recipe_id or ""), runners)
        names = [f"{n}@{r.node}" for r, stopped in zip(runners, answers) for n in stopped]
        print(f"stopped {', '.join(names)}" if names else f"nothing to stop for {recipe_id}"
              + (" on the nodes that answered" if missed else ""))
        return _unreached("stop", missed, f"run `run-recipe stop {recipe_id}` again once it is back")
    runner = next((r for r in runners if not ns.node or ns.node in (r.node, r.node.split("@")[-1])), None)
    rows = launch.status(runner, recipe_id) if runner else []
    if not rows:
        raise ConfigError(f"no container of recipe {recipe_id}" + (f" on {ns.node}" if ns.node else "")
                          + "; see `run-recipe status`")
    if runner is runners[0]:
        import subprocess

        return subprocess.call(["docker", "logs", *(["-f"] if ns.follow else []), rows[0]["id"]])
    res = runner.run(["docker", "logs", *(["-f"] if ns.follow else []), rows[0]["id"]], check=False)
    return res.exit_code


def _on_each_node(work: Callable[[Any], list], runners: Sequence[Any]) -> tuple[list[list], list[str]]:
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


def _unreached(command: str, missed: list[str], consequence: str) -> int:
    """Exit code 1 and one line per node `command` could not reach, saying what that leaves undone."""
    for why in missed:
        print(f"Error: {command}: {why} ({consequence})", file=sys.stderr)
    return 1 if missed else 0


def _node_runners(nodes: str | None, config: Path | None) -> list[Any]:
    """This machine first, then the other nodes over SSH (verified host keys)."""
    from .nodes import load_env, parse_list
    from .plan import env_file
    from .remote import RemoteRunner, SshSettings
    from .runner import LocalRunner

    source = "-n/--nodes" if nodes is not None else f"{env_file(Options(config=config))}: CLUSTER_NODES"
    text = nodes if nodes is not None else load_env(env_file(Options(config=config))).get("CLUSTER_NODES", "")
    listed = parse_list(text, source)
    head = LocalRunner()
    if listed:
        head.node = listed[0].target  # rows and errors name the head as the node list does
    return [head] + [RemoteRunner(n, SshSettings()) for n in listed[1:]]


def _recipe_id(name: str) -> str:
    """The id containers are labelled with; a name that is not a file is taken as the id itself."""
    from .recipe import find, id_for

    try:
        return id_for(find(name, settings.recipes_dir()), settings.recipes_dir())
    except RunRecipeError:
        return name
