"""A stack's doit tasks: the union of its entries' ordinary tasks, plus `gateway:<stack>`.

Each entry's launch waits for the previous entry's (start order: descending memory, each once the one
before answers), and the gateway for every launch. An entry whose inputs did not change is up to date,
so changing one entry restarts that entry only, and the gateway only when its routes change.
"""
from __future__ import annotations

from typing import Any

from ..cluster.roles import Fleet
from ..connect import Local, SshSettings
from ..stacks import gateway
from ..stacks.gateway import GatewayPlan
from .doit_tasks import Check, _step, cluster_tasks, task_namespace, tasks_of
from ..cluster.roles import Placement
from ..plan import Plan
from ..stacks.plan import StackPlan


class WorkerFleet(Fleet):
    """A solo entry placed on a worker: its image and weights travel from the head as for a cluster of
    (head, worker), and its one container runs on the worker with the entry's own script."""

    def __init__(self, carrier: Plan, served: Plan) -> None:
        super().__init__(carrier, SshSettings(trust_new_hosts=carrier.options.trust_new_hosts), "native")
        self.served = served

    def placements(self) -> list[Placement]:
        return [Placement(self.runners[1], self.served.script, 0)]


def launch_targets(stack_plan: StackPlan, gw: GatewayPlan | None) -> list[str]:
    """The tasks a stack run asks doit for: every entry's launch, then the gateway."""
    return [f"launch:{p.plan.recipe.id}" for p in stack_plan.entries] + ([f"gateway:{gw.stack}"] if gw else [])


def stack_tasks(stack_plan: StackPlan, gw: GatewayPlan | None, *, setup: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    previous: list[str] = []
    head = stack_plan.nodes[0]
    for placed in stack_plan.entries:
        carrier = placed.carrier(head)
        entry_tasks = (cluster_tasks(carrier, WorkerFleet(carrier, placed.plan), setup=setup, serve=placed.plan)
                       if carrier else tasks_of(placed.plan, setup=setup))
        for task in entry_tasks:
            if task["basename"] == "launch":
                task = {**task, "task_dep": [*task.get("task_dep", []), *previous]}
            out.append(task)
        previous = [f"launch:{placed.plan.recipe.id}"]
    if gw is not None:
        out.append(gateway_task(gw, launch_targets(stack_plan, None)))
    return out


def gateway_task(gw: GatewayPlan, launches: list[str]) -> dict[str, Any]:
    runner = Local()
    return {"basename": "gateway", "name": gw.stack,
            "doc": f"serve {', '.join(r.model for r in gw.routes)} behind one endpoint at {gw.endpoint}",
            "actions": [(_step, [gateway.converge, runner, gw])], "task_dep": launches,
            "uptodate": [Check(lambda: gateway.answer(runner, gw))], "verbosity": 2}


def stack_namespace(stack_plan: StackPlan, gw: GatewayPlan | None, *, setup: bool) -> dict[str, Any]:
    return task_namespace(stack_tasks(stack_plan, gw, setup=setup), launch_targets(stack_plan, gw))

