"""Plans -> doit tasks: one task per (step, resource), each with a cheap up-to-date check.

    build:<image>      the recipe's image, from the Dockerfile its build_args select
    mods:<recipe>      the image with the recipe's mods applied (derived image)
    check:<recipe>     the image's own vLLM accepts every node's serve argv (before any download or copy)
    launch:<recipe>    the server container, ready and answering

Checks read facts (image labels, container labels), never weight bytes. Each
check knows how to say why it is false, which `--dry-run` and `doit info` show.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..facts import docker, hub_cache
from ..ops import answers as steps, image, launch, mods, vllm_check, weights
from ..errors import RunError, RunRecipeError
from ..masking import scrub
from ..nodes import Node
from ..plan import Model, Plan
from ..connect import Local
from ..report import BytesMoved, Failed, Note, emit

if TYPE_CHECKING:
    from ..cluster.roles import Fleet
    from ..connect.chain import Worker
    from ..ops.copy_chain import Report
    from ..ops.worker_copies import WorkerCopies


@dataclass
class Check:
    """A doit `uptodate` callable: asks the step, up to date when it answers Noop.

    The answer is kept: `doit info` and --dry-run print why it is not up to date (repr), and
    `run-recipe plan` prints the reason, or the commands and bytes the Change would need."""

    step: Callable[[], steps.Answer]
    answer: steps.Answer = steps.Change("not checked yet")

    def __call__(self) -> bool:
        try:
            self.answer = self.step()
        except RunRecipeError as exc:  # doit would print a traceback; the action reports it instead
            self.answer = steps.Change(f"cannot tell: {str(exc).splitlines()[0]}")
        return isinstance(self.answer, steps.Noop)

    def __repr__(self) -> str:  # doit info prints this
        return self.answer.reason if isinstance(self.answer, steps.Noop) else self.answer.why


def _forced(why: str) -> Check:
    return Check(lambda: steps.Change(why))


def _step(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a step; a RunRecipeError becomes doit's TaskFailed: the user reads a message, not a traceback."""
    from doit.exceptions import TaskFailed

    try:
        return fn(*args)
    except RunRecipeError as exc:
        message = scrub(str(exc))
        emit(Failed(message))
        return TaskFailed(message.splitlines()[0])


def build_task(plan: Plan, runner: Local) -> dict[str, Any]:
    """Build the image when its inputs changed; with --no-build only prove it is here (the copies follow)."""
    spec, as_is = plan.build, plan.options.no_build
    check = (Check(lambda: steps.as_is(spec, docker.image_info(runner, spec.tag))) if as_is else
             _forced("--force-build asks for a rebuild") if plan.options.force_build else
             Check(lambda: steps.build(spec, docker.image_info(runner, spec.tag))))
    return {"basename": "build", "name": spec.tag,
            "doc": f"use image {spec.tag} as it is on this machine (--no-build)" if as_is else
                   f"build image {spec.tag} from {spec.describe()}",
            "actions": [(_step, [image.as_is if as_is else image.build, runner, spec])],
            "uptodate": [check], "verbosity": 2}


class Weights:
    """Up-to-date check and action for one model: resolved once per run, checked by stat (or hash with --verify)."""

    def __init__(self, model: Model, *, force: bool, verify: bool, offline: bool = False) -> None:
        self.model, self.force, self.verify, self.offline = model, force, verify, offline
        self.cache = hub_cache.hub_cache_dir()
        self._commit: str | None = None
        self.why = f"{model.key} is not complete in {self.cache}"
        self.answer: steps.Answer = steps.Change(self.why)

    def commit(self) -> str:
        """One API call for a branch or tag, none for a commit pin or offline (--dry-run: the cache's refs only)."""
        if self._commit is None:
            try:
                self._commit = weights.resolve_commit(self.model.repo, self.model.revision, cache_dir=self.cache,
                                                      offline=True if self.offline else None)
            except weights.OfflineIncomplete:
                if not self.offline:
                    raise
                raise weights.OfflineIncomplete(
                    f"revision '{self.model.revision}' of {self.model.repo} left unresolved: --dry-run asks no "
                    "hub and the HF cache has no ref for it (a run asks the hub once)") from None
        return self._commit

    def complete(self) -> bool:
        try:
            done = self._complete()
        except RunRecipeError as exc:  # e.g. hub unreachable: the download action reports it
            self.why = f"cannot tell: {str(exc).splitlines()[0]}"
            done = False
        self.answer = steps.Noop(f"{self.model.key}: every file of its commit is in the HF cache") if done else \
            steps.Change(self.why)
        return done

    def _complete(self) -> bool:
        if self.force:
            self.why = "--force-download asks for a new download"
            return False
        m = self.model
        state = hub_cache.snapshot_state(self.cache, m.repo, self.commit(), allow_patterns=m.patterns or None,
                                       revision=m.revision)
        if not state.complete:
            self.why = f"{m.key}: {state.reason}"
            return False
        if self.verify:
            bad = hub_cache.verify_blobs(self.cache, m.repo, self.commit(), allow_patterns=m.patterns or None)
            if bad:
                self.why = f"{m.key}: {len(bad)} files do not match their hash ({', '.join(bad[:3])})"
                emit(Note(f"verify: {self.why}; they will be fetched again"))
                hub_cache.discard(self.cache, m.repo, self.commit(), bad)
                return False
        return True

    def fetch(self) -> dict[str, Any]:
        m = self.model
        commit = self.commit()
        if self.force:
            listing = hub_cache.read_tree_listing(self.cache, m.repo, commit) or {}
            hub_cache.discard(self.cache, m.repo, commit, list(listing))
        summary = weights.download(m.repo, commit, cache_dir=self.cache, allow_patterns=m.patterns or None,
                                   revision=m.revision)
        return {"commit": commit, "files": str(summary.files), "bytes": str(summary.bytes)}

    __call__ = complete  # doit's uptodate protocol; repr() says why it is false

    def __repr__(self) -> str:
        return self.why


def download_task(plan: Plan, model: Model, dry: bool = False) -> dict[str, Any]:
    """`dry`: the up-to-date check reads only the cache (--dry-run makes no network call)."""
    step = Weights(model, force=plan.options.force_download, verify=plan.options.verify, offline=dry)
    return {"basename": "download", "name": model.key,
            "doc": f"download {model.key} into the HF cache and prove it complete"
                   + (" (draft/tokenizer named by the command)" if model.role == "extra" else ""),
            "actions": [(_step, [step.fetch])],
            "uptodate": [step], "verbosity": 2}


def mods_task(plan: Plan, runner: Local, deps: list[str]) -> dict[str, Any]:
    def current() -> steps.Answer:
        base = docker.image_id(runner, plan.build.tag)
        derived = mods.derived_tag(base or "", plan.mods)
        return steps.mods([m.name for m in plan.mods], base, derived, base and docker.image_id(runner, derived),
                          node=runner.node)

    def apply() -> dict[str, str]:
        base = docker.image_id(runner, plan.build.tag)
        if not base:
            raise RunError(f"image '{plan.build.tag}' is not on {runner.node}; add --setup to build it")
        return mods.apply(runner, base, plan.mods)

    names = ", ".join(m.name for m in plan.mods)
    return {"basename": "mods", "name": plan.recipe.id,
            "doc": f"apply mods {names} to {plan.build.tag}",
            "actions": [(_step, [apply])], "task_dep": deps,
            "uptodate": [Check(current)],
            "verbosity": 2}


def check_task(plan: Plan, runner: Local, deps: list[str]) -> list[dict[str, Any]]:
    """`check:<recipe>` in the image that will run (on the head); none with --skip-vllm-check.

    Callers list it before downloads and copies in the launch's task_dep: doit runs those in order and
    stops at the first failure, so a refused command costs no transfer."""
    if plan.options.skip_vllm_check:
        return []
    return [{"basename": "check", "name": plan.recipe.id,
             "doc": f"ask the vLLM in {plan.build.tag}{' + mods' if plan.mods else ''} whether it accepts "
                    "every node's serve argv",
             "actions": [(_step, [vllm_check.run, runner, plan])], "task_dep": deps,
             "uptodate": [Check(lambda: vllm_check.answer(runner, plan))], "verbosity": 2}]


def launch_task(plan: Plan, runner: Local, deps: list[str], dry: bool = False) -> dict[str, Any]:
    return {"basename": "launch", "name": plan.recipe.id,
            "doc": f"serve {plan.recipe.name} ({plan.mode}) at {plan.endpoint}",
            "actions": [(_step, [launch.converge, launch.solo(runner, plan), plan])], "task_dep": deps,
            "uptodate": [Check(lambda: launch.answer(launch.solo(runner, plan), plan, ask_server=not dry))],
            "verbosity": 2}


def cluster_tasks(plan: Plan, fleet: "Fleet", *, setup: bool, dry: bool = False,
                  serve: Plan | None = None) -> list[dict[str, Any]]:
    """Build and download on the head, then per worker: image, weights, mods; then one launch over all nodes.

    `serve`: the plan the launch serves when it is not `plan` itself (a stack entry placed on a worker only:
    copies go as for `plan`'s nodes, the server runs where fleet.placements says)."""
    from ..ops.worker_copies import WorkerCopies

    out: list[dict[str, Any]] = [build_task(plan, fleet.runners[0])] if setup else []
    built = [f"build:{plan.build.tag}"] if setup else []
    models = plan.models if setup or plan.options.download else ()
    out += [download_task(plan, model, dry) for model in models]
    per_node = _worker_copy_tasks(WorkerCopies(plan, fleet), out, built, setup, models)
    downloads = [f"download:{m.key}" for m in models]
    launch_deps = _node_tasks(plan, fleet, per_node, out, (built, downloads), serve)
    places, served = fleet.placements, serve or plan
    out.append({"basename": "launch", "name": plan.recipe.id,
                "doc": f"serve {plan.recipe.name} on {len(served.nodes)} nodes ({fleet.mode}) at {served.endpoint}",
                "actions": [(_step, [lambda: launch.converge(places(), served, ray_first=fleet.mode == "ray")])],
                "task_dep": list(dict.fromkeys(launch_deps)),
                "uptodate": [Check(lambda: launch.answer(places(), served, ray_first=fleet.mode == "ray"))],
                "verbosity": 2})
    return out


def _worker_copy_tasks(copies: "WorkerCopies", out: list[dict[str, Any]], built: list[str], setup: bool,
                       models: Iterable[Model]) -> dict[str, list[str]]:
    """Per worker, the image copy (after the build, one worker after another: a chain) and each model's
    weights copy (after its download); appended to `out`, returns each worker's task names."""
    tag, per_node, previous = copies.tag, {copies.plan.head.target: list(built)}, list(built)
    weights_before: dict[str, list[str]] = {}  # per model, the previous worker's weights task
    for node, _runner in copies.fleet.workers:
        deps: list[str] = []
        if setup:
            def send(n: Node = node) -> dict[str, str]:
                report, chain = copies.send_image(n)
                emit(_copied(report, chain))
                return {"sent_to": ",".join(report.sent_to), "bytes": str(report.bytes_sent)}

            out.append({"basename": "image", "name": f"{tag}@{node.target}",
                        "doc": f"copy image {tag} to {node.target} (streamed, chained through the workers)",
                        "actions": [(_step, [send])], "task_dep": previous,
                        "uptodate": [Check(lambda n=node: copies.same_image(n))],
                        "verbosity": 2})
            previous = [f"image:{tag}@{node.target}"]
            deps += previous
        for model in models:
            def sync(m: Model = model, n: Node = node) -> dict[str, str]:
                commit, report, targets = copies.sync_weights(m, n)
                emit(_copied(report, targets))
                return {"commit": commit, "strategy": report.strategy,
                        "files": str(sum(n.files for n in report.nodes))}

            out.append({"basename": "weights", "name": f"{model.key}@{node.target}",
                        "doc": f"copy {model.key} to {node.target}'s HF cache (only missing or changed files)",
                        "actions": [(_step, [sync])],
                        "task_dep": [f"download:{model.key}"] + weights_before.get(model.key, []),
                        "uptodate": [Check(lambda m=model, n=node: copies.weights_synced(m, n))]
                        + ([_forced("--verify hashes every file")] if copies.plan.options.verify else []),
                        "verbosity": 2})
            weights_before[model.key] = [f"weights:{model.key}@{node.target}"]
            deps += weights_before[model.key]
        per_node[node.target] = deps
    return per_node


def _node_tasks(plan: Plan, fleet: "Fleet", per_node: dict[str, list[str]], out: list[dict[str, Any]],
                head_deps: tuple[list[str], list[str]], serve: Plan | None) -> list[str]:
    """Per node, mods over its image; on the head, the vLLM check before anything travels, and the
    downloads (`head_deps` = the build, the downloads) after it. Returns the launch's dependencies."""
    launch_deps, downloads = list(head_deps[0]), head_deps[1]
    for rank, (node, runner) in enumerate(zip(plan.nodes, fleet.runners)):
        image_deps = [d for d in per_node[node.target] if d.startswith(("image:", "build:"))]
        if plan.mods:
            task = mods_task(plan, runner, image_deps)
            task["name"] = f"{plan.recipe.id}@{node.target}"
            launch_deps.append(f"mods:{task['name']}")
            out.append(task)
        else:
            launch_deps += image_deps
        launch_deps += [d for d in per_node[node.target] if d.startswith("weights:")]  # after the image, as plan lists
        if rank == 0:  # the head's image (and mods) exist now: ask its vLLM before anything travels
            checks = check_task(serve or plan, runner, list(dict.fromkeys(launch_deps)))
            out += checks
            launch_deps += [f"check:{t['name']}" for t in checks] + downloads
    return launch_deps


def _copied(report: "Report", chain: list["Worker"]) -> BytesMoved:
    """One line (on stdout): who got what, over which address when COPY_HOSTS gave another, and how."""
    from ..sizes import human_bytes

    via = {w.name: w.link.dest for w in chain}
    who = ", ".join(n + (f" (via {via[n]})" if via.get(n, n) != n else "") for n in report.sent_to)
    line = (f"  {report.what} -> {who or 'nobody: up to date'}; {report.strategy}; "
            f"{human_bytes(report.bytes_sent)} left the head in {report.seconds:.1f} s")
    return BytesMoved(line, report.what, tuple(report.sent_to), report.bytes_sent)


def recipe_tasks(plan: Plan, *, setup: bool, dry: bool = False) -> list[dict[str, Any]]:
    """The tasks of one plan, in dependency order."""
    runner = Local()
    out: list[dict[str, Any]] = []
    deps: list[str] = []
    if setup:
        out.append(build_task(plan, runner))
        deps = [f"build:{plan.build.tag}"]
    if setup or plan.options.download:
        for model in plan.models:
            out.append(download_task(plan, model, dry))
            deps.append(f"download:{model.key}")
    image_deps = [d for d in deps if d.startswith("build:")]
    if plan.mods:
        out.append(mods_task(plan, runner, image_deps))
        image_deps = [f"mods:{plan.recipe.id}"]
    checks = check_task(plan, runner, image_deps)
    out += checks
    downloads = [d for d in deps if d.startswith("download:")]  # after the check: a refusal downloads nothing
    out.append(launch_task(plan, runner, image_deps + [f"check:{t['name']}" for t in checks] + downloads, dry))
    return out


def tasks_of(plan: Plan, *, setup: bool, dry: bool = False) -> list[dict[str, Any]]:
    """Solo plans get the local graph; cluster plans the per-node one (their Fleet made once per plan)."""
    if plan.mode != "cluster":
        return recipe_tasks(plan, setup=setup, dry=dry)
    return cluster_tasks(plan, fleet_for(plan, dry=dry), setup=setup, dry=dry)


def fleet_for(plan: Plan, dry: bool = False) -> "Fleet":
    """The plan's Fleet, made once per process so every task shares its SSH connections."""
    from ..cluster.roles import Fleet, backend
    from ..connect import SshSettings

    if id(plan) not in _FLEETS:
        _FLEETS[id(plan)] = Fleet(plan, SshSettings(trust_new_hosts=plan.options.trust_new_hosts),
                                  backend(plan.options.ray), check_head=not dry)
    return _FLEETS[id(plan)]


_FLEETS: dict[int, Any] = {}  # one Fleet (runners, SSH connections) per plan and process


def namespace(plans: Iterable[Plan], *, setup: bool, default: list[str]) -> dict[str, Any]:
    """A dodo-like namespace (task_* creators + DOIT_CONFIG): dodo.py's globals, or doit_run's loader."""
    return task_namespace([task for plan in plans for task in tasks_of(plan, setup=setup)], default)


def task_namespace(tasks: Iterable[dict[str, Any]], default: list[str]) -> dict[str, Any]:
    """The namespace of given tasks (a stack adds its own to its entries'); a task repeated by name counts once."""
    from ..state import doit_config

    by_base: dict[str, dict[str, dict[str, Any]]] = {
        "build": {}, "download": {}, "image": {}, "weights": {}, "mods": {}, "check": {}, "launch": {}, "gateway": {}}
    for task in tasks:
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
        "task_image": creator("image", "copy the image to each worker (only when its image ID differs)"),
        "task_weights": creator("weights", "copy model weights to each worker (only missing or changed files)"),
        "task_mods": creator("mods", "apply recipe mods as a derived image (only when base or mods changed)"),
        "task_check": creator("check", "ask the image's vLLM whether it accepts the command (only when the "
                              "image or the argvs changed)"),
        "task_launch": creator("launch", "start or replace the server container, wait until it is ready"),
        "task_gateway": creator("gateway", "start or replace a stack's gateway, wait until it lists every model"),
        "DOIT_CONFIG": {**doit_config(), "default_tasks": default},
    }


def explain(plan: Plan, *, setup: bool, contact: bool = False) -> list[tuple[str, str, steps.Answer | None]]:
    """Each task with 'up to date: <because>' or 'would run: <why>', and the step's answer when it was
    asked, without changing anything. --dry-run contacts no node (contact=False); `run-recipe plan`
    asks every node, read-only."""
    rows: list[tuple[str, str, steps.Answer | None]] = []
    ran: list[str] = []
    for task in tasks_of(plan, setup=setup, dry=not contact):
        name = f"{task['basename']}:{task['name']}"
        upstream = [d for d in task.get("task_dep", []) if d in ran]
        answer = None
        if not contact and plan.mode == "cluster" and task["basename"] not in ("build", "download"):
            verdict = "not checked: --dry-run does not contact the nodes"
        elif upstream:
            verdict = f"would run: {upstream[0]} runs before it"
        else:
            try:
                stale = [c for c in task["uptodate"] if not c()]
                answer = stale[0].answer if stale else task["uptodate"][0].answer
                verdict = f"would run: {stale[0]!r}" if stale else \
                    "up to date: " + "; ".join(c.answer.reason for c in task["uptodate"])
            except RunError as exc:
                verdict = f"would run: cannot tell ({str(exc).splitlines()[0]})"
        if not verdict.startswith("up to date"):
            ran.append(name)
        rows.append((name, verdict, answer))
    return rows

