"""What a cluster run will send to each worker: the bytes its image and weights copies need there (for
preflight's disk check and the hops it opens), asked of the nodes before anything travels."""
from __future__ import annotations

from typing import Mapping

from ..cluster.roles import Fleet
from ..connect.chain import Worker
from ..errors import RunError
from ..fanout import each
from ..facts import docker, hub_cache
from ..nodes import Node
from ..plan import Plan
from . import image_copy, weights, weights_state


def bytes_to_copy(plan: Plan, fleet: Fleet, *, image: bool, weights_too: bool) -> dict[str, tuple[int, int]]:
    """(image bytes, weight bytes) of disk this run needs on each worker, for preflight's disk check;
    and on the head, what its `docker save` writes out first when some worker lacks the image.

    Only what is missing counts: a worker that already has the image, or part of the weights,
    needs room only for the rest. An image needs twice its size on a worker while it loads
    (image_copy.image_room). A worker that cannot be asked gets 0 here; preflight reports it."""
    head = fleet.runners[0]
    info = docker.image_info(head, plan.build.tag) if image else None
    size = int(info.get("size") or 0) if info else 0
    on_head, on_worker = image_copy.image_room(size)
    cache = hub_cache.hub_cache_dir()
    models = []
    for model in plan.models if weights_too else ():
        try:
            commit = weights.resolve_commit(model.repo, model.revision, offline=True, cache_dir=cache)
        except weights.WeightsError:
            continue
        state = hub_cache.snapshot_state(cache, model.repo, commit, allow_patterns=model.patterns or None)
        if state.complete:
            models.append((model, commit, state.bytes))

    runners = {n.target: r for n, r in fleet.workers}

    def need(node: Node) -> tuple[int, int]:
        link = fleet.link(node)
        try:
            there = docker.image_id(runners[node.target], plan.build.tag) if info else None
            image_need = on_worker if info and there != info["id"] else 0
            weight_need = 0
            for model, commit, total in models:
                have = weights_state.remote_manifest(link, str(cache), model.repo, commit)
                present = sum(v for k, v in have.items() if k.startswith("snapshots/"))
                weight_need += max(0, total - present)
        except RunError:
            return 0, 0
        return image_need, weight_need

    workers = [n for n, _ in fleet.workers]
    needs = dict(zip((n.target for n in workers), each(need, workers)))
    if any(image for image, _ in needs.values()):
        needs[plan.head.target] = (on_head, 0)
    return needs


def copy_hops(workers: list[Worker], needs: Mapping[str, tuple[int, int]]) -> list[list[Worker]]:
    """The chains this run's copies will stream through: the workers lacking the image, and those lacking
    weights (bytes_to_copy), in chain order. A run opens their hops right after preflight."""
    return [[w for w in workers if needs.get(w.name, (0, 0))[what]] for what in (0, 1)]



