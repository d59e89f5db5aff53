"""Plans -> doit tasks: one task per (step, resource), each with a cheap up-to-date check.

    build:<image>      the recipe's image, from the Dockerfile its build_args select
    mods:<recipe>      the image with the recipe's mods applied (derived image)
    launch:<recipe>    the server container, ready and answering

Checks read facts (image labels, container labels), never weight bytes. Each
check knows how to say why it is false, which `--dry-run` and `doit info` show.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from . import docker, image, launch, mods, weights
from .errors import RunError, RunRecipeError
from .plan import Model, Plan
from .runner import LocalRunner


@dataclass
class Check:
    """A doit `uptodate` callable: true when the fact already holds."""

    question: Callable[[], bool]
    why_not: str

    def __call__(self) -> bool:
        try:
            return bool(self.question())
        except RunRecipeError as exc:  # doit would print a traceback; the action reports it instead
            self.why_not = f"cannot tell: {str(exc).splitlines()[0]}"
            return False

    def __repr__(self) -> str:  # doit info prints this
        return self.why_not


def _forced() -> bool:
    return False


def _step(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a step; a RunRecipeError becomes doit's TaskFailed: the user reads a message, not a traceback."""
    from doit.exceptions import TaskFailed

    try:
        return fn(*args)
    except RunRecipeError as exc:
        return TaskFailed(str(exc))


def build_task(plan: Plan, runner: LocalRunner) -> dict[str, Any]:
    spec = plan.build
    check = (Check(_forced, "--force-build asks for a rebuild") if plan.options.force_build else
             Check(lambda: image.is_current(runner, spec),
                   f"image {spec.tag} is missing or was built from other inputs"))
    return {"basename": "build", "name": spec.tag,
            "doc": f"build image {spec.tag} from {spec.describe()}",
            "actions": [(_step, [image.build, runner, spec])],
            "uptodate": [check], "verbosity": 2}


class Weights:
    """Up-to-date check and action for one model: resolved once per run, checked by stat (or hash with --verify)."""

    def __init__(self, model: Model, *, force: bool, verify: bool) -> None:
        self.model, self.force, self.verify = model, force, verify
        self.cache = weights.hub_cache_dir()
        self._commit: str | None = None
        self.why = f"{model.key} is not complete in {self.cache}"

    def commit(self) -> str:
        """One API call for a branch or tag, none for a commit pin or offline."""
        if self._commit is None:
            self._commit = weights.resolve_commit(self.model.repo, self.model.revision, cache_dir=self.cache)
        return self._commit

    def complete(self) -> bool:
        try:
            return self._complete()
        except RunRecipeError as exc:  # e.g. hub unreachable: the download action reports it
            self.why = f"cannot tell: {str(exc).splitlines()[0]}"
            return False

    def _complete(self) -> bool:
        if self.force:
            self.why = "--force-download asks for a new download"
            return False
        m = self.model
        state = weights.snapshot_state(self.cache, m.repo, self.commit(), allow_patterns=m.patterns or None,
                                       revision=m.revision)
        if not state.complete:
            self.why = f"{m.key}: {state.reason}"
            return False
        if self.verify:
            bad = weights.verify_blobs(self.cache, m.repo, self.commit(), allow_patterns=m.patterns or None)
            if bad:
                self.why = f"{m.key}: {len(bad)} files do not match their hash ({', '.join(bad[:3])})"
                print(f"verify: {self.why}; they will be fetched again", file=sys.stderr)
                weights.discard(self.cache, m.repo, self.commit(), bad)
                return False
        return True

    def fetch(self) -> dict[str, Any]:
        m = self.model
        commit = self.commit()
        if self.force:
            listing = weights.read_tree_listing(self.cache, m.repo, commit) or {}
            weights.discard(self.cache, m.repo, commit, list(listing))
        summary = weights.download(m.repo, commit, cache_dir=self.cache, allow_patterns=m.patterns or None,
                                   revision=m.revision)
        return {"commit": commit, "files": str(summary.files), "bytes": str(summary.bytes)}

    __call__ = complete  # doit's uptodate protocol; repr() says why it is false

    def __repr__(self) -> str:
        return self.why


def download_task(plan: Plan, model: Model) -> dict[str, Any]:
    step = Weights(model, force=plan.options.force_download, verify=plan.options.verify)
    return {"basename": "download", "name": model.key,
            "doc": f"download {model.key} into the HF cache and prove it complete"
                   + (" (draft/tokenizer named by the command)" if model.role == "extra" else ""),
            "actions": [(_step, [step.fetch])],
            "uptodate": [step], "verbosity": 2}


def mods_task(plan: Plan, runner: LocalRunner, deps: list[str]) -> dict[str, Any]:
    def current() -> bool:
        base = docker.image_id(runner, plan.build.tag)
        return bool(base) and docker.image_id(runner, mods.derived_tag(base, plan.mods)) is not None

    def apply() -> dict[str, str]:
        base = docker.image_id(runner, plan.build.tag)
        if not base:
            raise RunError(f"image '{plan.build.tag}' is not on {runner.node}; add --setup to build it")
        return mods.apply(runner, base, plan.mods)

    names = ", ".join(m.name for m in plan.mods)
    return {"basename": "mods", "name": plan.recipe.id,
            "doc": f"apply mods {names} to {plan.build.tag}",
            "actions": [(_step, [apply])], "task_dep": deps,
            "uptodate": [Check(current, f"mods {names} not yet applied to the current {plan.build.tag}")],
            "verbosity": 2}


def launch_task(plan: Plan, runner: LocalRunner, deps: list[str]) -> dict[str, Any]:
    return {"basename": "launch", "name": plan.recipe.id,
            "doc": f"serve {plan.recipe.name} ({plan.mode}) at {plan.endpoint}",
            "actions": [(_step, [launch.converge, launch.solo(runner, plan), plan])], "task_dep": deps,
            "uptodate": [Check(lambda: launch.is_current(launch.solo(runner, plan), plan),
                               f"no container of {plan.recipe.id} runs with the current image, script and settings")],
            "verbosity": 2}


def recipe_tasks(plan: Plan, *, setup: bool, launch_too: bool = True) -> list[dict[str, Any]]:
    """The tasks of one plan, in dependency order."""
    runner = LocalRunner()
    out: list[dict[str, Any]] = []
    deps: list[str] = []
    if setup:
        out.append(build_task(plan, runner))
        deps = [f"build:{plan.build.tag}"]
    if setup or plan.options.download:
        for model in plan.models:
            out.append(download_task(plan, model))
            deps.append(f"download:{model.key}")
    if plan.mods:
        out.append(mods_task(plan, runner, [d for d in deps if d.startswith("build:")]))
        deps = [d for d in deps if not d.startswith("build:")] + [f"mods:{plan.recipe.id}"]
    if launch_too:
        out.append(launch_task(plan, runner, deps))
    return out


def namespace(plans: Iterable[Plan], *, setup: bool, default: list[str]) -> dict[str, Any]:
    """A dodo-like namespace (task_* creators + DOIT_CONFIG) for doit's ModuleTaskLoader."""
    from .state import doit_config

    by_base: dict[str, dict[str, dict[str, Any]]] = {"build": {}, "download": {}, "mods": {}, "launch": {}}
    for plan in plans:
        for task in recipe_tasks(plan, setup=setup):
            by_base[task["basename"]].setdefault(task["name"], task)

    def creator(base: str, doc: str) -> Callable[[], Iterable[dict[str, Any]]]:
        def create() -> Iterable[dict[str, Any]]:
            yield {"basename": base, "name": None, "doc": doc}
            for task in by_base[base].values():
                yield {k: v for k, v in task.items() if k != "basename"}
        create.__doc__ = doc
        return create

    return {
        "task_build": creator("build", "build container images from docker/ (only when their inputs changed)"),
        "task_download": creator("download", "download model weights into the HF cache (only when incomplete)"),
        "task_mods": creator("mods", "apply recipe mods as a derived image (only when base or mods changed)"),
        "task_launch": creator("launch", "start or replace the server container, wait until it is ready"),
        "DOIT_CONFIG": {**doit_config(), "default_tasks": default},
    }


def explain(plan: Plan, *, setup: bool) -> list[tuple[str, str]]:
    """For --dry-run: each task with 'up to date' or 'would run: <why>', without changing anything."""
    rows: list[tuple[str, str]] = []
    ran: list[str] = []
    for task in recipe_tasks(plan, setup=setup):
        name = f"{task['basename']}:{task['name']}"
        upstream = [d for d in task.get("task_dep", []) if d in ran]
        if upstream:
            verdict = f"would run: {upstream[0]} runs before it"
        else:
            try:
                stale = [c for c in task["uptodate"] if not c()]
                verdict = f"would run: {stale[0]!r}" if stale else "up to date"
            except RunError as exc:
                verdict = f"would run: cannot tell ({str(exc).splitlines()[0]})"
        if verdict != "up to date":
            ran.append(name)
        rows.append((name, verdict))
    return rows
