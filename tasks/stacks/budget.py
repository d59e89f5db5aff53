"""The memory rule of a stack, against each node's size: does every entry fit in the share it asks for?

An entry asks for `fraction` of each of its nodes' memory (vLLM's --gpu-memory-utilization). Within it,
vLLM must hold the entry's slice of the weights (weights bytes / (tensor parallel x pipeline parallel))
and still have room for a KV cache (KV_BUDGET at least). Where the weights' size is known (complete in
the HF cache, stat only) and the node's memory is known (preflight's facts), an entry that cannot fit is
refused with the numbers, before any container starts. Unknown sizes are not guessed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..errors import ConfigError
from ..fanout import each
from ..facts import hub_cache
from ..ops import weights
from ..plan import Model, Plan
from ..sizes import human_bytes
from .plan import StackPlan

KV_BUDGET = 1 << 30    # the least KV cache an entry should get: 1 GiB


@dataclass(frozen=True)
class Share:
    entry: str           # container name
    node: str
    weights: int         # bytes of weights this node holds for the entry
    allowed: int         # fraction x node memory

    @property
    def needed(self) -> int:
        return self.weights + KV_BUDGET

    @property
    def fits(self) -> bool:
        return self.needed <= self.allowed


def model_bytes(model: Model) -> int | None:
    """Size of a model complete in the HF cache (stat only, no network); None when not (yet) known."""
    cache = hub_cache.hub_cache_dir()
    try:
        commit = weights.resolve_commit(model.repo, model.revision, offline=True, cache_dir=cache)
    except weights.WeightsError:
        return None
    state = hub_cache.snapshot_state(cache, model.repo, commit, allow_patterns=model.patterns or None)
    return state.bytes if state.complete else None


def weights_bytes(plan: Plan) -> int | None:
    """All the weights the server loads (model, drafts, tokenizers), when every one is known."""
    sizes = [model_bytes(m) for m in plan.models]
    return sum(sizes) if sizes and None not in sizes else None  # type: ignore[arg-type]


def split(plan: Plan) -> int:
    """How many ways the weights are split: tensor x pipeline parallel, as the command sets them."""
    sizes = plan.vllm.parallel_sizes()
    out = 1
    for flag in ("--tensor-parallel-size", "--pipeline-parallel-size"):
        value = sizes.get(flag, "1")
        out *= int(value) if value.isascii() and value.isdigit() and int(value) > 0 else 1
    return out


def shares(stack_plan: StackPlan, memory: Mapping[str, int | None]) -> list[Share]:
    """Each entry's share on each of its nodes, where both the weights and the node's memory are known."""
    out = []
    for placed in stack_plan.entries:
        total = weights_bytes(placed.plan)
        if total is None:
            continue
        for node in placed.node_targets:
            size = memory.get(node)
            if size:
                out.append(Share(placed.plan.container_name, node, total // split(placed.plan),
                                 int(placed.fraction * size)))
    return out


def check(stack_plan: StackPlan, memory: Mapping[str, int | None]) -> list[Share]:
    """Raise ConfigError naming every entry that cannot fit, with its numbers; return the shares checked."""
    found = shares(stack_plan, memory)
    short = [s for s in found if not s.fits]
    if short:
        lines = [f"  {s.entry} on {s.node}: weights {human_bytes(s.weights)} + KV cache {human_bytes(KV_BUDGET)} = "
                 f"{human_bytes(s.needed)}, but its gpu_mem gives it {human_bytes(s.allowed)}" for s in short]
        raise ConfigError(f"{stack_plan.stack.path}: {len(short)} entr{'y does' if len(short) == 1 else 'ies do'} "
                          "not fit in the memory share asked for; nothing was started:\n" + "\n".join(lines),
                          file=str(stack_plan.stack.path), fix="raise the entry's gpu_mem, or spread it over more "
                          "nodes (tensor or pipeline parallel)")
    return found


def node_memory(stack_plan: StackPlan) -> dict[str, int | None]:
    """Memory a model can use on every node of the stack (preflight's facts: GPU memory, else RAM), asked
    at once; a node that cannot be asked is None here (its preflight says why)."""
    from ..connect import Local, Ssh, SshSettings
    from ..cluster.preflight import gather

    def ask(index: int) -> int | None:
        node = stack_plan.nodes[index]
        runner = Local() if index == 0 else Ssh(node, SshSettings())
        try:
            facts = gather(runner)
        finally:
            if index:
                runner.close()
        return facts.model_memory or facts.mem_total

    sizes = each(ask, range(len(stack_plan.nodes)))
    return {n.target: size for n, size in zip(stack_plan.nodes, sizes)}


