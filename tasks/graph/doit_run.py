"""Handing a graph to doit: our namespace of task creators, run through doit's command line.

doit's ModuleTaskLoader, made for dodo.py files, orders a module's creators by their source line,
reading every creator's source with inspect (~3 ms of a ~150 ms no-op run). Ours are made at run
time, already in order, so they go through doit's documented loader API (TaskLoader2) as they are.
"""
from __future__ import annotations

from typing import Any

from doit.cmd_base import TaskLoader2
from doit.doit_cmd import DoitMain
from doit.loader import generate_tasks
from doit.task import Task

PREFIX = "task_"


class GraphLoader(TaskLoader2):
    """The tasks of a namespace built by graph.task_namespace, in its order."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        super().__init__()
        self.namespace = namespace

    def load_doit_config(self) -> dict[str, Any]:
        return dict(self.namespace["DOIT_CONFIG"])

    def load_tasks(self, cmd: Any, pos_args: list[str]) -> list[Task]:
        return [task for name, creator in self.namespace.items() if name.startswith(PREFIX)
                for task in generate_tasks(name[len(PREFIX):], creator(), creator.__doc__)]


def run(namespace: dict[str, Any], argv: list[str]) -> int:
    """doit's exit code for `argv` (e.g. ["run", "launch:NAME"]) over the namespace's tasks."""
    return DoitMain(GraphLoader(namespace)).run(argv)

