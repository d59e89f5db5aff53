"""One run, held from start to end: the lock, the facts asked ahead, the cluster preflight, the doit targets.

`run-recipe` (cli.execute, --download-only) and `doit` (dodo.py through loader.py) both hold their runs
here, so the two entry points lock, check and hand tasks to doit the same way. The session's steps do
not print: what a person should read is an event for the reporter the entry point installed; the
server's log after a foreground run stays with the CLI.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .. import state
from ..plan import Plan
from ..report import Note, Warn, emit

if TYPE_CHECKING:
    from ..cluster.roles import Fleet


@dataclass(frozen=True)
class Run:
    """What one run asks of doit: its plans, the tasks to run, and how it waits for the lock."""

    plans: list[Plan]
    targets: list[str]
    holder: str                  # who holds the lock, as `run-recipe status` shows it
    setup: bool = False          # the graph has the build and download tasks
    wait: bool = True            # wait for another run to finish, else fail at once
    engine: bool = False         # builds or launches here: ask the local engine ahead, warn without GPUs


def hold(holder: str, *, wait: bool = True) -> None:
    """The state lock for the rest of this process; a damaged doit state file is repaired under it."""
    state.lock(holder, wait=wait)
    note = state.repair_dep_file()
    if note:
        emit(Warn(note))


def preflight(plan: Plan) -> "Fleet | None":
    """A cluster plan's nodes all checked at once, one table shown; a failing node stops the run before any
    change (raises). Solo plans have nothing to check here: their steps ask the local engine."""
    if plan.mode != "cluster":
        return None
    from .preflight_run import check_cluster

    fleet, table = check_cluster(plan)
    emit(Note(table, to_stdout=True))
    return fleet


def ask_engine_ahead(plan: Plan) -> None:
    """Under the lock no other run changes this engine: what the checks will ask is asked now, side by side
    and in the background, while doit loads (~30 ms of imports the engine's answers hide)."""
    from ..connect import Local
    from ..facts import cache as facts, docker

    runner = Local()
    facts.gather([lambda: docker.image_info(runner, plan.build.tag),
                  lambda: docker.containers(runner, recipe=plan.recipe.id)])
    from . import doit_run
    if not plan.cpu and not docker.has_nvidia_runtime(runner):  # a CPU image asks for no GPU
        emit(Warn("this Docker engine has no NVIDIA runtime: vLLM will find no GPU "
                    "(install nvidia-container-toolkit)"))


def execute(run: Run) -> int:
    """Hold the run: lock, facts ahead, preflight, then doit's exit code for the run's targets."""
    from . import doit_run
    from .doit_tasks import fleet_for, namespace

    for plan in run.plans:
        if plan.mode == "cluster":
            fleet_for(plan)  # the head must be this machine: say so before touching anything
    hold(run.holder, wait=run.wait)
    if run.engine:
        for plan in run.plans:
            ask_engine_ahead(plan)
    for plan in run.plans:
        preflight(plan)
    default = [f"launch:{p.recipe.id}" for p in run.plans]
    return doit_run.run(namespace(run.plans, setup=run.setup, default=default), ["run", *run.targets])


def for_doit(argv: Sequence[str], load: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """dodo.py's namespace: the lock (named by doit's own words), then the loader's plans and tasks, which
    preflight through this module when doit runs tasks."""
    hold("doit " + " ".join(argv))
    return load()

