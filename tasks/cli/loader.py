"""dodo.py's loader: doit's `key=value` variables into plans, and plans into the task namespace.

`doit run recipe=X [key=value ...]` is the `--setup -d` path of run-recipe; without `recipe=`, every
recipe of the catalogue that can run here is listed. The options come from the same config module
as run-recipe's, so both entry points render the same scripts and neither restarts what the other
started.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

from .. import settings
from ..config import read_settings
from ..graph import session
from ..errors import ConfigError, RunRecipeError
from ..masking import scrub
from ..plan import Options, make_plan, parse_overrides
from ..report import Warn, emit

DOIT_OPTION_VARS = ("recipe", "nodes", "container", "name", "revision", "ray", "no_build", "stack")
# doit's on/off variables: what 1 and 0 mean (0 is the default)
SWITCHES = {"ray": "1 (Ray) or 0 (native multi-node, the default)",
            "no_build": "1 (use the image as it is, never build it) or 0 (build it when its inputs changed, "
                        "the default)"}


def doit_namespace() -> dict[str, Any]:
    """dodo.py's tasks: `recipe=NAME` plans that recipe (the --setup path); without it, the whole catalogue.

    Other `key=value` variables become parameter overrides, like -o. The session holds the run (dodo.py
    calls session.for_doit with this function), and checks a cluster's nodes when doit runs tasks.
    """
    from doit.doit_cmd import _CMDLINE_VARS  # doit exposes single names only (get_var); we need them all

    from ..graph.doit_tasks import namespace
    from ..recipe import catalogue, load_named

    variables = dict(_CMDLINE_VARS or {})
    overrides = parse_overrides([f"{k}={v}" for k, v in variables.items() if k not in DOIT_OPTION_VARS],
                                "doit variables")
    options = Options(overrides=overrides, nodes=variables.get("nodes"), nodes_flag="doit nodes=",
                      container=variables.get("container"),
                      name=variables.get("name"), setup=True, download=True, daemon=True,
                      revision=variables.get("revision"), ray=_switch(variables, "ray"),
                      no_build=_switch(variables, "no_build"),
                      **read_settings(None).options())
    if variables.get("stack"):
        return _stack_namespace(variables["stack"], options)
    if variables.get("recipe"):
        plan = make_plan(load_named(variables["recipe"], settings.recipes_dir()), options)
        for warning in plan.warnings:
            emit(Warn(scrub(warning)))
        if _doit_runs_tasks(sys.argv[1:]):
            session.preflight(plan)  # as run-recipe does: every node checked, one table, before any change
        return namespace([plan], setup=True, default=[f"launch:{plan.recipe.id}"]) | {"task_lint": _lint_task}
    from ..graph.doit_tasks import fleet_for, task_namespace, tasks_of

    plans = []
    for item in catalogue(settings.recipes_dir()):
        try:
            plan = make_plan(item.recipe, options) if item.recipe else None
            if plan and plan.mode == "cluster":
                fleet_for(plan)  # the head must be this machine
            plans.append(plan) if plan else None
        except RunRecipeError:
            continue  # e.g. cluster-only recipes without nodes: nothing to list for this machine
    return task_namespace([t for plan in plans for t in tasks_of(plan, setup=True)] + _stack_tasks(options),
                          ["usage"]) | {"task_usage": _usage_task, "task_lint": _lint_task}


def _stack_namespace(name: str, options: Options) -> dict[str, Any]:
    """`doit run stack=NAME`: the stack's tasks (every entry's, then its gateway), checked as run-recipe checks."""
    from .stack import load, preflight
    from ..graph.stack_tasks import stack_namespace

    stack_plan, gw = load(name, options)
    for warning in stack_plan.warnings:
        emit(Warn(scrub(warning)))
    if _doit_runs_tasks(sys.argv[1:]):
        preflight(stack_plan, gw)
    return stack_namespace(stack_plan, gw, setup=True) | {"task_lint": _lint_task}


def _stack_tasks(options: Options) -> list[dict[str, Any]]:
    """For `doit list`: the tasks of every stack in stacks/ that can run here."""
    from ..graph.stack_tasks import stack_tasks
    from .stack import load

    out: list[dict[str, Any]] = []
    folder = settings.project_root() / "stacks"
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):  # what `stack NAME` finds
        try:
            out += stack_tasks(*load(str(path), options), setup=True)
        except RunRecipeError:
            continue  # e.g. a stack whose nodes are not reachable from here: nothing to list
    return out


def _switch(variables: dict[str, str], name: str) -> bool:
    """`ray=1` is run-recipe's --ray (a cluster runs native otherwise), `no_build=1` its --no-build."""
    text = variables.get(name, "0")
    if text not in ("0", "1"):
        raise ConfigError(f"doit {name}=: '{text}' is not {SWITCHES[name]}")
    return text == "1"


def _doit_runs_tasks(argv: Sequence[str]) -> bool:
    """Whether doit was asked to run tasks (`run`, or no command at all), not to list, explain or forget them."""
    from doit.doit_cmd import DoitMain

    commands = {cmd.get_name() for cmd in DoitMain.DOIT_CMDS}
    return next((arg for arg in argv if arg in commands), "run") == "run"


def _lint_task() -> dict[str, Any]:
    """check every recipe of the catalogue (run-recipe lint)"""
    from .lint import main as lint

    return {"actions": [lambda: lint([]) == 0], "verbosity": 2, "uptodate": [False]}


def _usage_task() -> dict[str, Any]:
    """say which recipe to run: doit run recipe=NAME"""
    from doit.exceptions import TaskFailed

    return {"actions": [lambda: TaskFailed("name a recipe: doit run recipe=NAME [key=value ...] "
                                           "(doit list shows the tasks of every recipe)")],
            "verbosity": 2}

