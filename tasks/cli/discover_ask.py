"""run-recipe --discover: asking which of the found nodes to use, and where copies go.

Part of the command line (it prompts): tasks/cluster/discover.py finds and confirms the candidates and says
what a choice means; this module asks a person with checkboxes, or takes every confirmed node (--yes).
"""
from __future__ import annotations

import sys
from typing import Sequence

from ..cluster.discover import Candidate, every_confirmed, nodes_picked, usable
from ..errors import ConfigError


def choose(candidates: Sequence[Candidate], yes: bool) -> tuple[list[str], list[str]]:
    """(CLUSTER_NODES, COPY_HOSTS): with `yes`, every confirmed node; else ask with checkboxes.

    This machine comes first (the head). Workers are copied to by default.
    """
    if yes:
        return every_confirmed(candidates)
    if not sys.stdin.isatty():
        raise ConfigError("--discover needs a terminal to ask which nodes to use; pass --yes to take "
                          "every confirmed node")
    import questionary

    def title(c: Candidate) -> str:
        who = "this machine" if c.is_self else (c.hostname or "?")
        return f"{c.ip:<15}  {who:<20}  {c.status}"

    ordered = usable(candidates) + [c for c in candidates if not c.confirmed]
    picked = questionary.checkbox(
        "Nodes of the cluster (the first is the head):",
        choices=[questionary.Choice(title(c), value=c.ip, checked=c.confirmed,
                                    disabled=None if c.confirmed else c.status) for c in ordered]).ask()
    if picked is None:
        raise ConfigError("--discover cancelled; .env unchanged")
    nodes, workers = nodes_picked(candidates, picked)
    if not workers:
        return nodes, []
    copy = questionary.checkbox(
        "Copy the image and weights to:",
        choices=[questionary.Choice(ip, value=ip, checked=True) for ip in workers]).ask()
    if copy is None:
        raise ConfigError("--discover cancelled; .env unchanged")
    return nodes, list(copy)

