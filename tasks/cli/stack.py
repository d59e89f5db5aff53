"""run-recipe stack NAME|FILE [stop|status]: several models, placed, checked, converged entry by entry.

Part of the command line (it prints). The stack's plan is stack_plan's, the memory rule budget's,
the tasks stack_graph's; stop and status find containers by the `runrecipe.stack` label.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ..config import read_env, read_settings
from ..errors import RunError
from ..facts import docker
from ..ops import answers as steps, execute
from ..stacks import files as stack, gateway
from ..flagtypes import count, seconds
from ..masking import scrub
from ..stacks.gateway import GatewayPlan
from ..nodes import LOCAL, Node
from ..plan import Options
from ..stacks.plan import StackPlan, make_stack_plan


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run-recipe stack", description="Run several recipes together, each on "
                                "its nodes, within memory, behind one gateway (stacks/NAME.yaml or a path).")
    p.add_argument("stack", help="stack name (stacks/NAME.yaml) or a stack file's path")
    p.add_argument("action", nargs="?", choices=("up", "stop", "status", "bench"), default="up",
                   help="up (the default): converge every entry and the gateway; stop; status; bench: measure "
                   "through the gateway (its options: `run-recipe stack NAME bench --help`)")
    p.add_argument("-d", "--daemon", action="store_true", help="return once every entry and the gateway are ready")
    p.add_argument("--setup", action="store_true", help="build images and download weights first")
    p.add_argument("--dry-run", action="store_true", help="show each entry's placement and script; change nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run or status: print JSON (status: with what "
                   "each entry's vLLM /metrics says now)")
    p.add_argument("--live", action="store_true", help="with status: refresh what each entry's vLLM /metrics says")
    p.add_argument("--interval", type=seconds, default=2.0, metavar="S", help="--live: seconds between frames")
    p.add_argument("--count", type=count(1_000_000), metavar="N", help="--live: stop after N frames")
    p.add_argument("--ready-timeout", type=seconds, default=1800.0, metavar="SECONDS",
                   help="how long to wait for each entry to answer (default 1800)")
    p.add_argument("--no-wait", action="store_true", help="fail instead of waiting when another run is busy")
    return p


def main(args: list[str]) -> int:
    if args[1:2] == ["bench"] and not args[0].startswith("-"):  # `stack NAME bench ...`: bench's own options
        from .bench import stack_main

        return stack_main(args[0], args[2:])
    ns = parser().parse_args(args)
    if ns.action == "bench":
        parser().error("bench comes right after the stack's name: run-recipe stack NAME bench [its options]")
    if ns.live and ns.action != "status":
        parser().error("--live goes with status: run-recipe stack NAME status --live")
    if ns.live:
        from .status_live import live

        return live(None, ns.interval, ns.count, stack=stack.load(stack.find(ns.stack)).name)
    if ns.action in ("stop", "status"):  # the .env's launch values unchecked: a bad IB_IF must not block a stop
        return lifecycle(ns.action, stack.load(stack.find(ns.stack)), Options(settings=read_env(None)), ns.json)
    options = Options(setup=ns.setup, download=ns.setup, daemon=True, ready_timeout=ns.ready_timeout,
                      **read_settings(None).options())
    stack_plan, gw = load(ns.stack, options)
    for warning in stack_plan.warnings:
        print(f"Warning: {scrub(warning)}", file=sys.stderr)
    if ns.dry_run:
        return dry_run(stack_plan, gw, ns.json)
    code = up(stack_plan, gw, wait=not ns.no_wait)
    if code or ns.daemon:
        return code
    print("serving; Ctrl-C stops the stack", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop(stack_plan.name, stack_plan.nodes, [p.plan.recipe.id for p in stack_plan.entries])
        return 130


def lifecycle(action: str, file: stack.Stack, options: Options, as_json: bool) -> int:
    """stop or status from the file's name and nodes alone: a stack whose recipes no longer plan (a recipe
    removed, an entry broken) can still be looked at and stopped; its start order, when it plans, orders stop."""
    from ..errors import RunRecipeError
    from ..stacks.plan import stack_nodes

    nodes = stack_nodes(file, options)
    if action == "status":
        return status(file.name, nodes, as_json)
    try:
        order = [p.plan.recipe.id for p in make_stack_plan(file, options).entries]
    except RunRecipeError as exc:
        print(f"Warning: {scrub(str(exc).splitlines()[0])}; stopping every container of the stack by its label",
              file=sys.stderr)
        order = []
    return stop(file.name, nodes, order)


def load(name: str, options: Options) -> tuple[StackPlan, GatewayPlan | None]:
    """The stack's plan and gateway; the gateway's key variable, when only .env sets it, is exported to this
    process, where the gateway's steps read it."""
    from ..plan import dotenv
    from ..stacks.keys import gateway_key

    stack_plan = make_stack_plan(stack.load(stack.find(name)), options)
    gw = gateway.plan_gateway(stack_plan)
    if gw and gw.key_env and gw.key_env not in os.environ:
        value = gateway_key(gw.key_env, dotenv(options).values)
        if value:
            os.environ[gw.key_env] = value
    return stack_plan, gw


def preflight(stack_plan: StackPlan, gw: GatewayPlan | None) -> None:
    """Every check before any change: cluster heads first, then at once the memory of every node and each
    multi-node (or worker-placed) entry's preflight over SSH; then the gateway's key."""
    from concurrent.futures import ThreadPoolExecutor

    from ..graph.doit_tasks import fleet_for
    from ..graph.preflight_run import check_cluster
    from ..stacks import budget

    for placed in stack_plan.entries:
        if placed.plan.mode == "cluster":
            fleet_for(placed.plan)  # the head must be this machine: said before anything else
    spread = [p.carrier(stack_plan.nodes[0]) or p.plan for p in stack_plan.entries
              if p.plan.mode == "cluster" or p.carrier(stack_plan.nodes[0])]
    # not fanout.each: two kinds of work at once, and each table prints while the memory question runs on
    with ThreadPoolExecutor(max_workers=1 + len(spread)) as pool:  # SSH round trips overlap
        memory = pool.submit(budget.node_memory, stack_plan)
        tables = [pool.submit(check_cluster, plan) for plan in spread]
        for table in tables:
            print(table.result()[1])
        checked = budget.check(stack_plan, memory.result())
    for share in checked:
        print(f"memory: {share.entry} on {share.node} needs {share.needed >> 20} MiB of its {share.allowed >> 20} MiB")
    if gw is not None:
        gateway.api_key(gw)


def up(stack_plan: StackPlan, gw: GatewayPlan | None, *, wait: bool) -> int:
    """The checks, then the graph: every entry's tasks in start order, then the gateway."""
    from ..graph import doit_run, session
    from ..graph.stack_tasks import launch_targets, stack_namespace

    preflight(stack_plan, gw)
    session.hold(f"run-recipe stack {stack_plan.name}", wait=wait)
    ns = stack_namespace(stack_plan, gw, setup=stack_plan.entries[0].plan.options.setup)
    code = doit_run.run(ns, ["run", *launch_targets(stack_plan, gw)])
    if not code:
        print(f"stack {stack_plan.name}: " + ", ".join(f"{p.plan.served_model} at {p.plan.endpoint}"
                                                      for p in stack_plan.entries)
              + (f"; gateway at {gw.endpoint}" if gw else ""))
    return code


def dry_run(stack_plan: StackPlan, gw: GatewayPlan | None, as_json: bool) -> int:
    """Each entry's nodes, port, container and script(s), and the gateway's configuration; contacts nothing."""
    from ..cluster.roles import preview

    entries = []
    for placed in stack_plan.entries:
        plan = placed.plan
        row: dict[str, Any] = {"recipe": placed.entry.recipe, "id": plan.recipe.id, "nodes": list(placed.node_targets),
                               "port": plan.port, "container": plan.container_name, "gpu_mem": placed.fraction,
                               "served_model": plan.served_model, "endpoint": plan.endpoint}
        if plan.mode == "cluster":
            _, roles, _ = preview(plan)
            row["node_scripts"] = [{"node": r.node.target, "rank": r.rank, "script": r.script} for r in roles]
        else:
            row["script"] = plan.script
        entries.append(row)
    gw_row = None if gw is None else {
        "container": gw.name, "port": gw.port, "image": gw.image, "endpoint": gw.endpoint,
        "api_key_env": gw.key_env or None, "routes": [{"model": r.model, "api_base": r.api_base} for r in gw.routes],
        "config": gw.config}
    if as_json:
        print(json.dumps({"stack": stack_plan.name, "file": str(stack_plan.stack.path),
                          "nodes": [n.target for n in stack_plan.nodes], "entries": entries, "gateway": gw_row},
                         indent=2))
        return 0
    print(f"stack {stack_plan.name} ({stack_plan.stack.path}) on {', '.join(n.target for n in stack_plan.nodes)}; "
          "entries in start order:")
    for row in entries:
        print(f"  {row['container']:<28} {row['recipe']:<24} on {','.join(row['nodes']):<24} port {row['port']:<6} "
              f"gpu_mem {row['gpu_mem']:g}")
    if gw_row:
        print(f"  gateway {gw_row['container']} at {gw_row['endpoint']} ({gw_row['image']}):\n{gw_row['config']}")
    return 0


def _runners(nodes: tuple[Node, ...]) -> list[Any]:
    from ..serve.lifecycle import node_runners

    return node_runners(() if nodes == (LOCAL,) else nodes)


def stop(name: str, nodes: tuple[Node, ...], order: list[str]) -> int:
    """Remove every container labelled with the stack on each node in reverse start order (`order`: the entries'
    ids as they start; the gateway and anything else of the stack go first); nothing else is touched."""
    from ..serve.lifecycle import on_each_node, report_unreached

    found, missed = on_each_node(lambda rn: [(rn, c) for c in docker.containers(rn, stack=name)], _runners(nodes))
    rank = {rid: i for i, rid in enumerate(order)} | {stack.entry_id(name, gateway.container_name(name)): len(order) + 1}
    ours = sorted((pair for pairs in found for pair in pairs),
                  key=lambda rc: rank.get(rc[1].labels.get("runrecipe.recipe", ""), len(order)), reverse=True)
    names = []
    for runner, container in ours:
        try:
            execute.run_each(runner, steps.remove(runner.node, [container.id]))
            names.append(f"{container.name}@{runner.node}")
        except RunError as exc:
            missed.append(f"{runner.node}: {str(exc).splitlines()[0]}")
    print(f"stopped {', '.join(names)}" if names else f"nothing to stop for stack {name}")
    return report_unreached("stop", missed, f"run `run-recipe stack {name} stop` again once it is back")


def _metrics(row: dict[str, str]) -> dict | None:
    """An entry's head: what its vLLM's /metrics says now. None on a worker's row, for a server that does not
    answer, and for the gateway: the LiteLLM proxy serves /metrics only with its `prometheus` callback and
    prometheus_client installed, which the gateway's configuration does not ask for."""
    from ..ops import run_record
    from ..serve.lifecycle import head_metrics

    return head_metrics({**row, "record": run_record.read(row["recipe"])})


def status(name: str, nodes: tuple[Node, ...], as_json: bool) -> int:
    from ..ops import launch
    from ..serve.lifecycle import on_each_node, report_unreached

    answers, missed = on_each_node(lambda rn: [r for r in launch.status(rn) if r["stack"] == name], _runners(nodes))
    rows = [row for rs in answers for row in rs]
    if as_json:
        print(json.dumps([{**row, "metrics": _metrics(row)} for row in rows], indent=2))
    else:
        print(f"stack {name}: " + ("nothing running" if not rows else f"{len(rows)} container(s)"))
        for row in rows:
            print(f"  {row['container']:<28} {row['node']:<16} {row['state']:<10} {row['endpoint']}")
    return report_unreached("status", missed, "its containers are not listed")

