"""A cluster plan's preflight as a run does it: the fleet, what would travel, every node checked at once.

Above both preflight (the checks, per node) and the graph's fleet, so that neither imports the other.
"""
from __future__ import annotations

import threading
from typing import Any

from ..connect.chain import open_hops
from ..facts import memory as memory_guard
from ..ops.travel import bytes_to_copy, copy_hops
from ..facts.hub_cache import hub_cache_dir
from ..interfaces import hca_names
from .doit_tasks import fleet_for
from ..cluster.preflight import preflight, render


def check_cluster(plan: Any) -> tuple[Any, str]:
    """A cluster plan's preflight: every node checked at once (raises RunError with the table when one
    fails), then the copy chains' worker-to-worker connections opened in the background. Returns the
    plan's Fleet and the table to show."""
    fleet = fleet_for(plan)
    needs = bytes_to_copy(plan, fleet, image=plan.options.setup, weights_too=plan.options.download)
    named = plan.options
    table = render(preflight(plan.nodes, fleet.runners, needs, hf_cache=str(hub_cache_dir()),
                             interfaces=[named.eth_if] if named.eth_if else [],
                             hcas=hca_names(named.ib_if, "--ib-if / IB_IF")))
    if plan.cpu:
        table += memory_guard.CPU_NOTE + "\n"
    if any(map(any, needs.values())):
        # Something will be copied: open the chains' worker-to-worker connections while the graph loads
        # and checks, so no stream waits on their handshakes. Only now: a failed preflight changes
        # nothing. A copy that starts first opens whatever it still lacks itself.
        chains = copy_hops(fleet.copy_workers(), needs)
        threading.Thread(target=open_hops, args=(chains,), name="open-hops").start()
    return fleet, table

