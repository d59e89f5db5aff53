"""`run-recipe stack NAME bench`: the load goes through the stack's gateway, as its users' requests do.

Per model the gateway routes, `vllm bench serve` runs from that entry's own image (its tokenizer read
from the entry's volumes, or its HF folders when the entry runs on another node) against the gateway's
address, with the gateway's master key when it has one (handed over by bench_run.client_key, never on a
command line). The stored result's fingerprint is every entry's (from its run record) by model name, the
gateway's image and configuration hash, and the bench's parameters. The gateway must run with what the
stack file says now and list every model: otherwise the numbers would belong to another configuration.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Callable

from ..facts import docker
from ..ops import readiness, run_record
from ..stacks import files as stack, gateway, keys as stack_keys
from . import results as bench, run as bench_run
from .results import BenchError
from .run import Note, Params, Target
from ..config import Settings, read_settings
from ..facts.docker import LABEL
from ..connect import Connector
from ..errors import RunError
from ..stacks.gateway import GatewayPlan
from ..plan import Options
from ..ops.served import hf_mounts
from ..stacks.plan import Placed, StackPlan, make_stack_plan


@dataclass(frozen=True)
class StackTarget:
    """A running, ready stack: its gateway (image ID) and one client target per model it routes."""

    name: str
    gateway: GatewayPlan
    gateway_image: str
    targets: tuple[Target, ...]


def start_hint(name: str) -> str:
    return f"start it with `run-recipe stack {name} -d`, then bench again"


def plan(name: str, settings: Settings | None = None) -> tuple[StackPlan, GatewayPlan]:
    """The stack's plan and gateway as its file says now (what `stack NAME -d` would run)."""
    settings = settings or read_settings(None)
    stack_plan = make_stack_plan(stack.load(stack.find(name)), Options(daemon=True, **settings.options()))
    gw = gateway.plan_gateway(stack_plan)
    if gw is None:
        raise BenchError(f"stack {stack_plan.name} has no gateway, which `stack NAME bench` sends the load through: "
                         f"add `gateway: {{port: 4000}}` to {stack_plan.stack.path} and run `run-recipe stack {name} "
                         f"-d`, or bench each entry's recipe with `run-recipe bench`")
    return stack_plan, gw


def target(runner: Connector, name: str) -> StackTarget:
    """The stack's gateway running with the current configuration and listing every model, and each entry
    recorded and not stopped; else a BenchError naming what is missing and how to start it."""
    settings = read_settings(None)  # the .env read once: the plan and the gateway's key both come from it
    stack_plan, gw = plan(name, settings)
    key = stack_keys.gateway_key(gw.key_env, settings.values)
    if gw.key_env and not key:
        raise BenchError(f"stack {gw.stack}: its gateway's key variable {gw.key_env} (api_key_env) is not set here "
                         f"(environment or .env): bench presents that key; export {gw.key_env}=sk-... as the stack "
                         "was started with")
    image = _running_gateway(runner, gw, key, name)
    found = gateway.listed(gw.port, key)
    missing = sorted({r.model for r in gw.routes} - (found or set()))
    if missing:
        why = "does not answer" if found is None else f"does not list {', '.join(missing)}"
        raise BenchError(f"stack {gw.stack}'s gateway at {gw.endpoint} {why} (not ready yet, or {gw.key_env or 'its'} "
                         f"key is not the one it started with): wait for `run-recipe stack {name} status`, or "
                         f"{start_hint(name)}")
    by_entry = {p.plan.container_name: p for p in stack_plan.entries}
    targets = tuple(_entry(runner, by_entry[r.entry], r.model, gw, key, name) for r in gw.routes)
    return StackTarget(gw.stack, gw, image, targets)


def _running_gateway(runner: Connector, gw: GatewayPlan, key: str, name: str) -> str:
    """The gateway's image ID, once its container runs with the inputs the stack file gives now."""
    running = [c for c in docker.containers(runner, recipe=gw.id) if c.running]
    if not running:
        raise BenchError(f"stack {gw.stack}'s gateway ({gw.name}) is not running on {runner.node}: nothing to "
                         f"measure; {start_hint(name)}")
    try:
        image = gateway.image_id(runner, gw)
    except RunError as exc:
        raise BenchError(str(exc).splitlines()[0]) from None
    if not any(c.labels.get(f"{LABEL}.inputs") == gateway.digest(gw, image, key) for c in running):
        raise BenchError(f"stack {gw.stack}'s gateway runs with other routes, image or key than {name} says now: "
                         f"run `run-recipe stack {name} -d` to bring it in line, then bench again")
    return image


def _entry(runner: Connector, placed: Placed, model: str, gw: GatewayPlan, key: str, name: str) -> Target:
    """The client target of one entry: the gateway's address and key, the entry's image and tokenizer."""
    rid = placed.plan.recipe.id
    record = run_record.read(rid) or {}
    nodes = record.get("nodes") or []
    if not nodes or run_record.stop_mark(record) or not record.get("base_url"):
        why = "was stopped" if run_record.stop_mark(record) else "has no run record (never started here)"
        raise BenchError(f"stack {gw.stack}: the entry {placed.plan.container_name} ({model}) {why}; "
                         f"{start_hint(name)}")
    head = nodes[0]
    local = {c.id for c in docker.containers(runner, recipe=rid) if c.running}
    container = head.get("container") if head.get("container") in local else ""
    if not container and placed.plan.head.local:
        raise BenchError(f"stack {gw.stack}: the server of {placed.plan.container_name} ({model}) is not running on "
                         f"{runner.node}; {start_hint(name)}")
    mounts = () if container else tuple(_read_only(m) for m in hf_mounts(placed.plan))
    return Target(rid, record, container, head["image"], f"http://127.0.0.1:{gw.port}", model,
                  readiness.version(record["base_url"]), key, mounts, "through the gateway")


def _read_only(mount: str) -> str:
    return mount if mount.endswith(":ro") else f"{mount}:ro"


def measure(runner: Connector, tgt: StackTarget, params: Params, note: Note,
            clock: Callable[[], float] = time.monotonic) -> dict:
    """Every model's levels through the gateway, then the stored result's document (nothing when one fails)."""
    started = bench_run.now()
    levels = bench_run.run_levels(runner, tgt.targets, params, note, clock, by_model=True)
    entries = {t.model: bench.fingerprint(t.record, t.vllm, {}) for t in tgt.targets}
    gw = {"image": tgt.gateway_image, "config": hashlib.sha256(tgt.gateway.config.encode()).hexdigest()}
    fp = bench.stack_fingerprint(tgt.name, entries, gw, params.fingerprinted())
    return {**bench.document(f"stack {tgt.name}", fp, levels, started, bench_run.now()), "stack": tgt.name}

