"""The head's image and weights sent to the cluster's workers: per worker, an answer and an action.

graph.cluster_tasks wraps these into the `image:<tag>@<node>` and `weights:<model>@<node>` doit tasks;
here is what each asks and does, so the graph only wires dependencies."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..connect.chain import Worker
from ..errors import RunError
from ..facts import docker, hub_cache
from ..nodes import Node
from . import answers as steps, image_copy, weights, weights_copy as distribute
from .copy_chain import Report
from ..plan import Model, Plan
from ..cluster.preflight import check_room

if TYPE_CHECKING:
    from ..cluster.roles import Fleet


class WorkerCopies:
    """One cluster plan's copies from the head to its workers (the chain order is COPY_HOSTS's)."""

    def __init__(self, plan: Plan, fleet: "Fleet") -> None:
        self.plan, self.fleet = plan, fleet
        self.head, self.tag = fleet.runners[0], plan.build.tag
        self.cache = str(hub_cache.hub_cache_dir())
        self.runner_of = {n.target: r for n, r in fleet.workers}

    def copy_chain(self, node: Node, what: str) -> list[Worker]:
        """`node` and the workers after it, each reached at its copy address (COPY_HOSTS or its own)."""
        chain = self.fleet.copy_workers()
        names = [w.name for w in chain]
        if node.target not in names:
            raise RunError(f"{node.target} lacks {what}, and COPY_HOSTS (.env) has no address of it, so nothing is "
                           "copied there: add its address to COPY_HOSTS, or put it there yourself", node=node.target)
        return chain[names.index(node.target):]

    def room_for_image(self, stale: list[Worker], size: int | None) -> None:
        """Room on the head and the stale workers: preflight ran before the build, when the size was unknown."""
        on_head, on_worker = image_copy.image_room(size or 0)
        check_room([self.head], on_head, f"`docker save {self.tag}`, which writes the image out first")
        check_room([self.runner_of[w.name] for w in stale], on_worker,
                   f"the image {self.tag} (`docker load` unpacks its whole tar first: twice its size)")

    def same_image(self, node: Node) -> steps.Answer:
        """The image step's answer for `node`: the IDs decide; a stale node's answer names the stream that
        brings the image to it and the stale workers after it, or the earlier worker whose stream does."""
        info = docker.image_info(self.head, self.tag)
        head_id, size = (info["id"], info.get("size") or 0) if info else (None, 0)
        there = docker.image_id(self.runner_of[node.target], self.tag) if info else None  # a fact: launch asks it too
        chain = self.fleet.copy_workers()
        if not head_id or there == head_id:
            return steps.image_copy(self.tag, node.target, head_id, there, size)
        if node.target not in [w.name for w in chain]:
            return steps.Change(f"{node.target} lacks {self.tag}, and COPY_HOSTS (.env) has no address of it: "
                                "nothing is copied there")
        ids = {w.name: docker.image_id(self.runner_of[w.name], self.tag) for w in chain}
        return image_copy.answer(self.tag, node.target, head_id, size, chain, ids)

    def send_image(self, node: Node) -> tuple[Report, list[Worker]]:
        """Stream the head's image to `node` and the workers after it that lack it."""
        head_id = docker.image_id(self.head, self.tag)
        if not head_id:
            raise RunError(f"image '{self.tag}' is not on the head; add --setup to build it")
        chain = self.copy_chain(node, f"the image {self.tag}")
        report = image_copy.distribute_image(self.tag, head_id, chain, before_send=self.room_for_image)
        return report, chain  # the executor forgot the facts of every node the stream reached

    def weights_synced(self, model: Model, node: Node) -> steps.Answer:
        commit = weights.resolve_commit(model.repo, model.revision, offline=True, cache_dir=self.cache)
        chain = self.fleet.copy_workers()
        if node.target in [w.name for w in chain]:
            return distribute.weights_answer(self.cache, self.cache, model.repo, commit, chain, node.target,
                                             verify=self.plan.options.verify)
        alone = distribute.weights_answer(self.cache, self.cache, model.repo, commit,
                                          [Worker(node.target, self.fleet.link(node))], node.target)
        if isinstance(alone, steps.Noop):
            return alone
        return steps.Change(f"{alone.why}, and COPY_HOSTS (.env) has no address of it: nothing is copied there")

    def sync_weights(self, model: Model, node: Node) -> tuple[str, Report, list[Worker]]:
        """This worker and the ones after it: what several lack leaves the head once (a chain);
        --verify hashes per node, so each task then looks at its own node only."""
        rest = self.copy_chain(node, f"files of {model.key}")
        targets = rest[:1] if self.plan.options.verify else rest
        commit = weights.resolve_commit(model.repo, model.revision, offline=True, cache_dir=self.cache)
        report = distribute.sync_weights(self.cache, self.cache, model.repo, commit, targets,
                                         verify=self.plan.options.verify)
        return commit, report, targets

