"""What a plan would do, printed for a person or as JSON: `--dry-run` (contacts nothing) and
`run-recipe plan` (asks every node, read-only). Front-end views: they print; the library decides."""
from __future__ import annotations

import json
from typing import Any

from .container import docker_view, print_docker
from ..masking import scrub
from ..ops.commands import as_json, shown
from ..plan import Plan


def dry_run(plan: Plan, as_json: bool) -> int:
    """What would run and why; on a cluster, each node's script (nothing is contacted)."""
    from ..cluster.roles import preview
    from ..graph.doit_tasks import explain

    answers = explain(plan, setup=plan.options.setup)
    rows = [(task, verdict) for task, verdict, _ in answers]
    backend, roles, notes = preview(plan) if plan.mode == "cluster" else ("", [], [])
    docker = docker_view(plan)  # the same on every node
    if as_json:
        print(json.dumps({"recipe": plan.recipe.id, "file": str(plan.recipe.path), "mode": plan.mode,
                          "nodes": [n.target for n in plan.nodes], "image": plan.build.tag,
                          "container": plan.container_name, "endpoint": plan.endpoint,
                          "models": [m.key for m in plan.models], "local_models": list(plan.local_mounts),
                          "mods": [str(m.path) for m in plan.mods],
                          "tasks": [{"task": t, "status": s} | _change(a) for t, s, a in answers],
                          "argv": [scrub(w) for w in plan.argv], "script": scrub(plan.script)}
                         | ({"backend": backend, "notes": notes,
                             "node_scripts": [{"node": r.node.target, "role": "head" if r.head else "worker",
                                               "rank": r.rank, "script": scrub(r.script), "docker": docker}
                                              for r in roles]} if roles else {"docker": docker}),
                         indent=2))
        return 0
    print(f"recipe:    {plan.recipe.name} ({plan.recipe.path})")
    print(f"mode:      {plan.mode}")
    print(f"nodes:     {', '.join(n.target for n in plan.nodes)} (head first)")
    built = "as it is on this machine: --no-build" if plan.options.no_build else plan.build.describe()
    print(f"image:     {plan.build.tag} ({built})")
    if plan.mods:
        print(f"mods:      {', '.join(str(m.path) for m in plan.mods)}")
    for model in plan.models:
        print(f"weights:   {model.key}" + (" (named by the command)" if model.role == "extra" else ""))
    for path in plan.local_mounts:
        print(f"weights:   {path} (local folder, mounted; no download)")
    print(f"container: {plan.container_name}")
    print(f"endpoint:  {plan.endpoint}")
    print("tasks:")
    width = max(len(t) for t, _ in rows)
    for task, verdict, answer in answers:
        print(f"  {task.ljust(width)}  {verdict}")
        _print_commands(answer, width + 2)
    if not roles:
        print_docker(docker, "  ")
        print("launch script:")
        print("  " + scrub(plan.script).rstrip().replace("\n", "\n  "))
        return 0
    print(f"backend:   {backend}" + (" (Ray: the head starts it, workers join)" if backend == "ray" else
                                     " (each node runs vLLM with its --node-rank)"))
    for note in notes:
        print(f"note:      {note}")
    for role in roles:
        print(f"node {role.node.target} ({'head' if role.head else 'worker'}, rank {role.rank}):")
        print_docker(docker, "    ")
        print("  node script:")
        print("    " + scrub(role.script).rstrip().replace("\n", "\n    "))
    return 0


def inspect_plan(plan: Plan, as_json: bool) -> int:
    """`run-recipe plan`: every step on every node, asked read-only: up to date because ..., or what
    would run, and the bytes a cluster run would copy to each node. Changes nothing."""
    from dataclasses import replace

    from ..graph.doit_tasks import explain, fleet_for
    from ..sizes import human_bytes

    plan = replace(plan, options=replace(plan.options, setup=True, download=True))
    rows = explain(plan, setup=True, contact=True)
    travel: dict[str, tuple[int, int]] = {}
    if plan.mode == "cluster":
        from ..ops.travel import bytes_to_copy

        travel = bytes_to_copy(plan, fleet_for(plan), image=True, weights_too=True)
        travel.pop(plan.head.target, None)  # the head's entry is room for `docker save`, not a copy
    if as_json:
        print(json.dumps({"recipe": plan.recipe.id, "mode": plan.mode, "nodes": [n.target for n in plan.nodes],
                          "tasks": [{"task": t, "status": v} | _change(a) for t, v, a in rows],
                          "copy": [{"node": n, "image_room": i, "weights_bytes": w} for n, (i, w) in travel.items()]},
                         indent=2))
        return 0
    width = max(len(t) for t, _, _ in rows)
    for task, verdict, answer in rows:
        print(f"{task.ljust(width)}  {verdict}")
        _print_commands(answer, width)
    for node, (image_room, weight_bytes) in travel.items():
        parts = ([f"the image (needs {human_bytes(image_room)} free while it loads)"] if image_room else []) + \
                ([f"{human_bytes(weight_bytes)} of weights"] if weight_bytes else [])
        print(f"copy to {node}: {', '.join(parts) or 'nothing'}")
    return 0


def _print_commands(answer: Any, indent: int) -> None:
    """The commands a step would run, each as the executor will record it (commands.shown)."""
    from ..ops.answers import Change  # the steps (and what they import) load only when a plan is shown

    for command in answer.commands if isinstance(answer, Change) else ():
        print(f"{'':{indent}}    $ {shown(command)}")


def _change(answer: Any) -> dict[str, Any]:
    """A step's Change as JSON fields (commands it would run, bytes it would send); {} for anything else."""
    from ..ops.answers import Change

    if not isinstance(answer, Change):
        return {}
    return {"commands": [as_json(c) for c in answer.commands], "bytes": answer.travels}

