"""A stack's plan: each entry an ordinary recipe Plan with its own port, container name and master port.

The stack adds only what spans entries: where each entry runs, the ports and names they must not
share on a node, the memory fractions that must fit on every node, and the order of start (by
descending memory: vLLM sizes its KV cache from the memory free when it starts). Plain data, no I/O
beyond reading files; the memory check against a node's size is budget's.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .. import render, settings
from . import keys as stack_keys
from ..errors import ConfigError, ModeError, RecipeError, RunRecipeError
from ..nodes import LOCAL, Node, is_loopback
from ..plan import Options, Plan, dotenv, make_plan
from ..recipe import Recipe, id_for, load, load_named, path_kind
from .files import Entry, Stack, entry_id, gateway_container

BASE_PORT = 8000
DEFAULT_GPU_MEM = 0.9          # vLLM's --gpu-memory-utilization when nothing sets it
GPU_MEM_FLAG = "--gpu-memory-utilization"


@dataclass(frozen=True)
class Placed:
    """One entry of a stack, planned: the recipe Plan (its id is `<stack>//<container>`) and its share."""

    entry: Entry
    plan: Plan
    fraction: float                  # of each of its nodes' memory
    on: tuple[Node, ...]             # the stack's nodes it runs on (a solo plan says `localhost` for the head)

    @property
    def node_targets(self) -> tuple[str, ...]:
        return tuple(n.target for n in self.on)

    def carrier(self, head: Node) -> Plan | None:
        """For a solo entry on a worker: the plan its image and weights travel by (head, then that worker),
        as for a cluster run; None for an entry the head serves or leads."""
        plan = self.plan
        if plan.mode != "solo" or plan.head.local or plan.head == head:
            return None
        return dataclasses.replace(plan, mode="cluster", nodes=(head, *plan.nodes))


@dataclass(frozen=True)
class StackPlan:
    stack: Stack
    nodes: tuple[Node, ...]          # head first
    entries: tuple[Placed, ...]      # in start order: descending memory
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.stack.name


def stack_nodes(stack: Stack, options: Options) -> tuple[Node, ...]:
    """The stack's `nodes`, else .env CLUSTER_NODES, else this machine."""
    if stack.nodes:
        return stack.nodes
    return dotenv(options).cluster_nodes() or (LOCAL,)


def make_stack_plan(stack: Stack, base: Options) -> StackPlan:
    """Plan every entry with assigned ports, names and master ports; refuse clashes and overcommit."""
    nodes = stack_nodes(stack, base)
    by_target = {n.target: n for n in nodes}
    placements = [_placement(stack, entry, nodes, by_target) for entry in stack.entries]
    recipes = [_recipe(stack, entry) for entry in stack.entries]
    names = _names(stack, recipes)
    taken: dict[str, dict[int, str]] = {n.target: {} for n in nodes}   # node -> port -> who holds it
    gateway_port = stack.gateway.port if stack.gateway else None
    if gateway_port:
        taken[nodes[0].target][gateway_port] = "the gateway"
    for entry, on in zip(stack.entries, placements):
        if entry.port is not None:
            _reserve(stack, taken, on, entry.port, names[entry.index], ("models", entry.index, "port"))
    planned, warnings, master = [], [], base.master_port
    secret = stack_keys.gateway_key(stack.gateway.api_key_env, dotenv(base).values) if stack.gateway else ""
    for entry, recipe, on in zip(stack.entries, recipes, placements):
        name = names[entry.index]
        port = entry.port
        if port is None:
            port = next(p for p in range(BASE_PORT, 65536) if all(p not in taken[n.target] for n in on))
            _reserve(stack, taken, on, port, name, ("models", entry.index))
        if len(on) > 1:
            while any(master in taken[n.target] for n in on):
                master += 1
            _reserve(stack, taken, on, master, f"{name} (master port)", ("models", entry.index))
        plan = _plan(stack, entry, recipe, on, base, name=name, port=port, master_port=master, head=nodes[0],
                     key=stack_keys.entry_key(secret, stack.name, name) if secret and on[0] != nodes[0] else "")
        fraction = _fraction(stack, entry, plan)
        warnings += [f"{stack.where(('models', entry.index))}: {w}" for w in plan.warnings]
        planned.append(Placed(entry, plan, fraction, on))
    _check_fractions(stack, nodes, planned)
    ordered = sorted(planned, key=lambda p: -p.fraction)   # stable: equal shares keep file order
    return StackPlan(stack, nodes, tuple(ordered), tuple(warnings))


def _placement(stack: Stack, entry: Entry, nodes: tuple[Node, ...], by_target: Mapping[str, Node]) -> tuple[Node, ...]:
    """The entry's nodes: `on` (each a node of the stack), `all`, or the head when it says nothing."""
    field = ("models", entry.index, "on")
    if entry.on is None:
        on = nodes
    elif not entry.on:
        on = nodes[:1]
    else:
        missing = [n.target for n in entry.on if n.target not in by_target]
        if missing:
            raise ConfigError(f"{stack.where(field)}: models[{entry.index}].on: {', '.join(missing)} is not a node of "
                              f"the stack ({', '.join(by_target)}); add it to the stack's nodes or fix the name",
                              file=str(stack.path), field=field, line=stack.positions.line(field))
        on = tuple(by_target[n.target] for n in entry.on)
    if len(on) > 1 and on[0] != nodes[0]:
        raise ConfigError(f"{stack.where(field)}: models[{entry.index}].on: an entry on several nodes has the "
                          f"stack's head ({nodes[0].target}, this machine) as its first node, which builds and "
                          f"copies; {on[0].target} first is not supported", file=str(stack.path), field=field,
                          line=stack.positions.line(field), fix=f"start the entry's `on` with {nodes[0].target}, "
                          "or place it on one node")
    return on


def _recipe(stack: Stack, entry: Entry) -> Recipe:
    """The entry's recipe (its id becomes `<stack>//<entry name>` in _plan: tasks, labels and records are per entry),
    with the entry's mods after the recipe's own."""
    field = ("models", entry.index, "recipe")
    try:
        path = _recipe_path(stack, entry.recipe)
        recipe = (load(path, id_for(path, settings.recipes_dir())) if path else
                  load_named(entry.recipe, settings.recipes_dir(), paths=False))
    except RunRecipeError as exc:
        raise ConfigError(f"{stack.where(field)}: models[{entry.index}].recipe: {exc}", file=str(stack.path),
                          field=field, line=stack.positions.line(field)) from None
    return dataclasses.replace(recipe, mods=recipe.mods + entry.mods)


def _recipe_path(stack: Stack, name: str) -> Path | None:
    """A path (`x.yaml`, `./x`, `../x`, `/x`, `~/x`) in a stack file is the stack file's: resolved from its
    folder only, never from the current one; None for a name (or id, `4x/minimax-m2.5`) of the catalogue."""
    if not (name.endswith((".yaml", ".yml")) or name.startswith(("/", "./", "../", "~"))):
        return None
    path = stack.path.parent / Path(name).expanduser()
    if path_kind(path) != "file":
        raise RecipeError(f"no recipe file at {path}: a path in a stack file is relative to the stack file's "
                          f"folder ({stack.path.parent}), not to the current one")
    return path


def _names(stack: Stack, recipes: list[Recipe]) -> dict[int, str]:
    """Each entry's container name: its `name`, else `<stack>-<recipe>` (numbered when a recipe repeats);
    `<stack>-gateway` is the gateway's when the stack has one."""
    out: dict[int, str] = {-1: gateway_container(stack.name)} if stack.gateway else {}
    seen: dict[str, int] = {}
    for entry, recipe in zip(stack.entries, recipes):
        if entry.name:
            name = entry.name
        else:
            base = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{stack.name}-{recipe.id}").strip("-")[:60]
            seen[base] = seen.get(base, 0) + 1
            name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        if name in out.values():
            field = ("models", entry.index, "name")
            raise ConfigError(f"{stack.where(field)}: models[{entry.index}].name: '{name}' is used by another "
                              "entry of the stack or its gateway; container names must differ", file=str(stack.path),
                              field=field, line=stack.positions.line(field), fix="give each entry its own name")
        out[entry.index] = name
    return out


def _reserve(stack: Stack, taken: dict[str, dict[int, str]], on: tuple[Node, ...], port: int, who: str,
             field: tuple[Any, ...]) -> None:
    for node in on:
        holder = taken[node.target].get(port)
        if holder:
            raise ConfigError(f"{stack.where(field)}: port {port} on {node.target} is taken twice: {holder} and "
                              f"{who}; ports must differ per node", file=str(stack.path), field=field,
                              line=stack.positions.line(field), fix="give one of them another port (or none)")
        taken[node.target][port] = who


def _plan(stack: Stack, entry: Entry, recipe: Recipe, on: tuple[Node, ...], base: Options, *, name: str,
          port: int, master_port: int, head: Node, key: str) -> Plan:
    """The entry as an ordinary recipe run: its port and memory share as overrides when the command has
    the placeholder, else as extra vLLM arguments; the stack's name on its containers. A solo entry on
    a worker keeps that worker as its one node (see `carrier`). Behind a gateway (stack_keys), an entry
    the head serves listens on loopback, and one on another node wants `key` (VLLM_API_KEY, secret)."""
    used = set(render.placeholders(recipe.command))
    overrides = {**entry.overrides}
    extra = list(entry.extra_args)
    added = []
    behind_on_head = stack.gateway is not None and on[0] == head
    for param, flag, value in (("port", "--port", str(port)),
                               ("gpu_memory_utilization", GPU_MEM_FLAG, entry.gpu_mem and f"{entry.gpu_mem:g}"),
                               ("host", "--host", stack_keys.LOOPBACK if behind_on_head else "")):
        if value and param not in overrides:
            if param in used:
                overrides[param] = value
            else:
                extra += [flag, value]
                added.append(f"extra argument '{flag}'")
    docker = base.docker
    if key:
        docker = dataclasses.replace(docker, env=(*docker.env, (stack_keys.ENTRY_KEY_VAR, key)))
    options = dataclasses.replace(
        base, overrides=overrides, extra_args=tuple(extra), solo=len(on) == 1,
        nodes=",".join(n.target for n in on) if len(on) > 1 else None, nodes_flag=f"{stack.path}: models[{entry.index}].on",
        name=name, master_port=master_port, stack=stack.name, docker=docker)
    field = ("models", entry.index)
    try:
        plan = make_plan(recipe, options)
    except ModeError as exc:
        why = "cluster_only: it needs several nodes" if recipe.cluster_only else "solo_only: it runs on one node"
        raise ModeError(f"{stack.where(field)}: models[{entry.index}]: recipe {recipe.id} is {why}, but the entry "
                        f"is placed on {len(on)} node(s) ({', '.join(n.target for n in on)})", file=str(stack.path),
                        field=field, line=stack.positions.line(field),
                        fix="change the entry's `on`", reason=str(exc).splitlines()[0]) from None
    except RunRecipeError as exc:
        raise type(exc)(f"{stack.where(field)}: models[{entry.index}] ({recipe.id}): {exc}", file=str(stack.path),
                        field=field, line=stack.positions.line(field)) from None
    if plan.port != port:
        raise ConfigError(f"{stack.where(field)}: models[{entry.index}]: its server would listen on port {plan.port}, "
                          f"not on {port}, the port the stack {'gave' if entry.port is None else 'was given'} for it "
                          "(overrides or extra_args set another)", file=str(stack.path), field=field,
                          line=stack.positions.line(field), fix="set the port with the entry's `port:` only")
    if stack.gateway:
        _behind_gateway(stack, entry, plan, loopback=behind_on_head, key=key)
    warnings = tuple(w for w in plan.warnings if not w.startswith(tuple(added)))  # the stack's own, on purpose
    entry_recipe = dataclasses.replace(recipe, id=entry_id(stack.name, name))
    plan = dataclasses.replace(plan, recipe=entry_recipe, warnings=warnings)
    return dataclasses.replace(plan, nodes=on) if len(on) == 1 and on[0] != head else plan


def _behind_gateway(stack: Stack, entry: Entry, plan: Plan, *, loopback: bool, key: str) -> None:
    """The gateway is the stack's one door: an entry keeps no key of its own, and one the head serves
    listens on loopback (overrides and extra_args cannot open it)."""
    field = ("models", entry.index)
    where = dict(file=str(stack.path), field=field, line=stack.positions.line(field))
    if plan.vllm.option("--api-key") or plan.recipe.env.get(stack_keys.ENTRY_KEY_VAR) or plan.api_key != key:
        raise ConfigError(f"{stack.where(field)}: models[{entry.index}]: its server wants an API key of its own "
                          "(vLLM's --api-key or VLLM_API_KEY); behind the gateway the stack sets the entries' keys",
                          fix="drop the entry's key and protect the stack with the gateway's api_key_env", **where)
    host = plan.vllm.option("--host")
    if loopback and not is_loopback(host):
        raise ConfigError(f"{stack.where(field)}: models[{entry.index}]: its server would listen on "
                          f"{host or 'every address'}, where clients could reach it without the gateway's key; "
                          f"behind a gateway an entry on the head listens on {stack_keys.LOOPBACK} only",
                          fix="remove the host from the entry's overrides and extra_args", **where)


def _fraction(stack: Stack, entry: Entry, plan: Plan) -> float:
    """The entry's share of memory as its command says it (the last --gpu-memory-utilization), checked."""
    text = plan.vllm.option(GPU_MEM_FLAG)
    try:
        value = float(text) if text is not None else DEFAULT_GPU_MEM
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        field = ("models", entry.index)
        raise ConfigError(f"{stack.where(field)}: models[{entry.index}]: the command's {GPU_MEM_FLAG} is '{text}', not "
                          "a fraction above 0 and at most 1", file=str(stack.path), field=field,
                          line=stack.positions.line(field), fix="set the entry's gpu_mem")
    return value


def _check_fractions(stack: Stack, nodes: tuple[Node, ...], planned: list[Placed]) -> None:
    """On every node the entries' memory fractions add up to at most 1.0; else refuse with the sums."""
    over = []
    for node in nodes:
        here = [p for p in planned if node.target in p.node_targets]
        total = sum(p.fraction for p in here)
        if total > 1.0 + 1e-9:
            parts = " + ".join(f"{p.plan.container_name} {p.fraction:g}" for p in here)
            over.append(f"{node.target}: {parts} = {total:.2f}")
    if over:
        raise ConfigError(f"{stack.path}: the memory fractions of the entries add up to more than 1.0 on "
                          f"{len(over)} node(s): " + "; ".join(over) + ". Nothing was started.",
                          file=str(stack.path), field=("models",), line=stack.positions.line(("models",)),
                          fix="lower some entries' gpu_mem or place them on other nodes")

