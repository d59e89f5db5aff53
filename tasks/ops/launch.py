"""Launch: one server container per recipe, replaced only when one of its inputs changed.

A container is "the same" when it is running and its inputs label (image ID,
launch script, docker arguments) equals what we would start now. Containers are
found by their runrecipe labels, never by a name substring. The script is copied
into the container before it starts, so nothing about it rides on argv.
"""
from __future__ import annotations

import hashlib
import io
import json
import resource
import subprocess
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping

from .. import container_flags, masking
from ..cluster import roles as cluster
from ..cluster.roles import Placement
from ..facts import docker, hub_cache, memory as memory_guard
from . import answers as steps, container_create, crash_logs, execute, mods, readiness, run_record, vllm_check, weights
from .commands import Command, Input
from ..facts.docker import LABEL, Container
from ..connect import Connector
from ..errors import ConfigError, NotReadyError, RunError
from ..fanout import each
from ..plan import Plan
from ..report import Ready, StepStarted, Warn, emit, say
from .served import hf_mounts, image_ref

SCRIPT_DIR = "/runrecipe"
NOFILE = 1048576
POLL_SECONDS = 0.2  # readiness is noticed within this of the server answering
STATE_SECONDS = 1.0  # how often readiness asks each node's container state (a docker call; SSH for workers)
TOKEN_WAIT = 10.0  # seconds of silence before a streamed completion counts as no token (then asked again)


def nofile_limit() -> int:
    """The origin raises open files to 1048576; a daemon whose own hard limit is lower refuses
    that, and on one machine the daemon's limit is at most what this process may have."""
    return min(NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def verified_weights(plan: Plan) -> list[str] | None:
    """`repo@commit` of every model when all are complete in the cache (stat only, no network), else None."""
    cache = hub_cache.hub_cache_dir()
    found = []
    for model in plan.models:
        try:
            commit = weights.resolve_commit(model.repo, model.revision, offline=True, cache_dir=cache)
        except weights.WeightsError:
            return None
        state = hub_cache.snapshot_state(cache, model.repo, commit, allow_patterns=model.patterns or None)
        if not state.complete:
            return None
        found.append(f"{model.repo}@{commit}")
    return found


def create_args(plan: Plan, image: str, gpus: bool, offline: bool) -> list[str]:
    """`docker create` arguments that define the server (labels excluded: they describe it; compile cache
    mounts and the secret env file excluded: container_create adds them on the node).

    With every model verified in the cache the server runs with HF_HUB_OFFLINE=1, so it loads
    exactly what was checked and cannot fetch anything else."""
    side = plan.options.docker
    nofile = nofile_limit()
    args = ["--name", plan.container_name, *container_flags.network_args(side), "--init",
            "--ulimit", f"nofile={nofile}:{nofile}", *(a for m in hf_mounts(plan) for a in ("-v", m))]
    if offline:
        args += ["-e", "HF_HUB_OFFLINE=1"]
    args += container_flags.privilege_args(side, plan.options.privileged, Path("/dev/infiniband").exists())
    if gpus:
        args += ["--gpus", "all"]
    if plan.options.restart:
        args += ["--restart", "unless-stopped"]
    for key, value in plan.docker_env.items():
        args += ["-e", f"{key}={value}"]
    return [*args, *container_flags.user_args(side),
            *container_flags.entry_args(side, image, f"{SCRIPT_DIR}/launch.sh")]


def inputs_hash(args: list[str], script: str, weights_record: str, secrets: str = "") -> str:
    """What makes a server the same: its docker arguments, its script, the weights' commits, and the
    digest of its secret env (container_flags.secrets_digest; left out when there is none)."""
    return hashlib.sha256(json.dumps([args, script, weights_record] + ([secrets] if secrets else []))
                          .encode()).hexdigest()


@dataclass(frozen=True)
class Wanted:
    args: list[str]
    digest: str
    record: str
    image: str


def solo(runner: Connector, plan: Plan) -> list[Placement]:
    return [Placement(runner, plan.script)]


def wanted(place: Placement, plan: Plan, record: list[str] | None) -> Wanted:
    """The create arguments and inputs hash of the container this plan asks for on one node, now."""
    runner = place.runner
    image = image_ref(runner, plan)
    args = create_args(plan, image, not plan.cpu and docker.has_nvidia_runtime(runner), record is not None)
    text = ",".join(record or [])
    return Wanted(args, inputs_hash(args, place.script, text, container_flags.secrets_digest(plan.options.docker)),
                  text, image)


def serving(runner: Connector, plan: Plan, digest: str) -> Container | None:
    for c in docker.containers(runner, recipe=plan.recipe.id):
        if c.running and c.labels.get(f"{LABEL}.inputs") == digest:
            return c
    return None


def answer(places: list[Placement], plan: Plan, ask_server: bool = True, ray_first: bool = True) -> steps.Answer:
    """The launch step over every node: Noop only when each node runs this recipe's container with
    exactly the wanted inputs and the head answers. Running is not serving: a run killed while it
    waited for readiness leaves a running container with the right labels that may never answer.
    `ask_server` False (--dry-run): no request is sent; the run record says whether it was seen ready.
    A Change carries the commands converge then runs (`commands`): every node's, in their order."""
    record = verified_weights(plan) if plan.models else []
    try:
        wants = each(lambda p: wanted(p, plan, record), places)
        found = each(lambda p: docker.containers(p.runner, recipe=plan.recipe.id), places)
    except RunError as exc:
        return steps.Change(f"cannot start yet: {str(exc).splitlines()[0]}")
    for place, want, running in zip(places, wants, found):
        step = steps.launch(plan.container_name, want.digest, running, answering=True, node=place.runner.node)
        if isinstance(step, steps.Change):
            clears, starts = commands(places, plan, wants, found, ray_first)
            return steps.Change(f"{place.runner.node}: {step.why}" if place.rank else step.why,
                                (*(c for cs in clears for c in cs), *(c for _, cs in starts for c in cs)))
    return steps.launch(plan.container_name, wants[0].digest, found[0],
                        answering=_models_ready(base_url(plan), plan.served_model, plan.api_key) if ask_server
                        else None if _seen_ready(plan, wants[0].digest, found[0]) else False)


def commands(places: list[Placement], plan: Plan, wants: list[Wanted], found: list[list[Container]],
             ray_first: bool = True) -> tuple[list[tuple[Command, ...]], list[tuple[Placement, list[Command]]]]:
    """What a (re)start runs, as data: per node (placement order) the removal of its old containers, then
    per node in start order (ray: the head first; native: workers, then the head) create, copy script, start."""
    clears = [steps.clear(p.runner.node, running) for p, running in zip(places, found)]
    order = places if ray_first else places[1:] + places[:1]
    return clears, [(p, start_commands(p, plan, wants[p.rank])) for p in order]


def _seen_ready(plan: Plan, digest: str, running: list[Container]) -> bool:
    """--dry-run's stand-in for asking the server: the run that started this very container saw it
    ready (only then is the run record written), so a run killed while waiting does not count."""
    record = run_record.read(plan.recipe.id) or {}
    seen = {n.get("container") for n in record.get("nodes", []) if n.get("inputs") == digest}
    return any(c.id in seen for c in running)


def converge(places: list[Placement], plan: Plan, ray_first: bool = True) -> dict[str, str]:
    """Start (or replace) the server on every node and wait until the head answers.

    A failed start removes every container this run started, on every node, and so does a
    `run-recipe stop` that lands meanwhile (see run_record)."""
    begun = run_record.begin(plan.recipe.id)
    stop_seen = run_record.stop_mark(begun)
    if plan.options.reform:
        run_record.refuse_if_stopped(plan.recipe.id, begun, stop_seen, reform=True)
    record = verified_weights(plan) if plan.models else []
    if plan.models and record is None:
        emit(Warn(f"the weights of {', '.join(m.key for m in plan.models)} are not complete in "
                  f"{hub_cache.hub_cache_dir()}; vLLM will download them itself at start, unverified "
                  "(add --setup to download and verify them first)"))
    wants = each(lambda p: wanted(p, plan, record), places)
    same = each(lambda p: serving(p.runner, plan, wants[p.rank].digest), places)
    if all(same):  # the containers this plan asks for run already; count them only once the head answers
        return _already_running(places, plan, wants, same, stop_seen)  # type: ignore[arg-type]
    from . import memory_check

    found = each(lambda p: docker.containers(p.runner, recipe=plan.recipe.id), places)
    clears, starts = commands(places, plan, wants, found, ray_first)
    replaced = each(lambda p: _clear(p.runner, plan, found[p.rank], clears[p.rank]), places)
    verdicts = memory_check.guard([p.runner for p in places], plan, replaced)
    if plan.cpu:
        say(f"{memory_guard.CPU_NOTE}: " + "; ".join(v.message() for v in verdicts))
    started: list[tuple[Placement, str]] = []
    try:
        for place, start in starts:  # in start order (native: workers, then the head)
            started.append((place, _start(place.runner, start)))
        head_cid = next(cid for p, cid in started if p.rank == 0)
        emit(StepStarted(f"started {plan.container_name} on {len(started)} node(s); waiting for {plan.endpoint} ...",
                         plan.container_name, plan.endpoint, tuple(p.runner.node for p, _ in started)))
        progress = wait_ready(places[0].runner, plan, head_cid, [(p.runner, cid) for p, cid in started if p.rank])
        write_record(plan, [(p, wants[p.rank], cid) for p, cid in sorted(started, key=lambda pc: pc[0].rank)],
                     stop_seen, progress, {v.node: v.need for v in verdicts if v.fits is not None})
    except BaseException:
        for place, cid in started:
            try:
                execute.run_each(place.runner, steps.remove(place.runner.node, [cid]))
            except RunError as exc:
                emit(Warn(f"could not remove {cid[:12]} on {place.runner.node}: {exc}"))
        raise
    emit(Ready(f"serving {plan.served_model or plan.recipe.name} at {plan.endpoint}: {_timings(progress)}",
               plan.endpoint, plan.served_model or plan.recipe.name))
    return {"container_id": head_cid, "inputs": wants[0].digest}


def _already_running(places: list[Placement], plan: Plan, wants: list[Wanted], same: list[Container],
                     stop_seen: str | None) -> dict[str, str]:
    """The wanted containers run on every node: wait for the head to answer when it does not yet (an earlier
    run stopped waiting), removing them when they never do; nothing is started."""
    if not _models_ready(base_url(plan), plan.served_model, plan.api_key):
        say(f"{same[0].name} runs with the current inputs but does not answer yet (an earlier run "
            f"stopped waiting for it); waiting for {plan.endpoint} ...")
        try:
            progress = wait_ready(places[0].runner, plan, same[0].id,
                                  [(p.runner, same[p.rank].id) for p in places if p.rank])
        except RunError:
            for place in places:  # never ready: not left behind as if it served
                try:
                    execute.run_each(place.runner, steps.remove(place.runner.node, [same[place.rank].id]))
                except RunError as exc:
                    emit(Warn(f"could not remove {same[place.rank].id[:12]} on {place.runner.node}: {exc}"))
            raise
        write_record(plan, [(p, wants[p.rank], same[p.rank].id) for p in places], stop_seen, progress)
    emit(Ready(f"already serving at {plan.endpoint} (container {same[0].name})", plan.endpoint,
               plan.served_model or plan.recipe.name))
    return {"container_id": same[0].id, "inputs": wants[0].digest}


def _timings(progress: readiness.Progress) -> str:
    t = progress.record()
    return (f"ready in {t['ready_seconds']:.2f} s (port {t['port_seconds']:.2f} s, /health {t['health_seconds']:.2f} s), "
            f"first token in {t['first_token_seconds']:.3f} s")


def write_record(plan: Plan, nodes: list[tuple[Placement, Wanted, str]], stop_seen: str | None,
                 progress: readiness.Progress | None = None, memory_need: dict[str, int] | None = None) -> None:
    """What runs where after a successful launch: image, weights commits, mods, script hash per node,
    and how long readiness took. What the watcher keeps there (restarts, last cause) survives a relaunch;
    a stop mark does not, unless it came after `stop_seen` (then StoppedError: the caller removes what it started)."""
    run_record.update(plan.recipe.id, lambda earlier: _record(plan, nodes, earlier, stop_seen, progress, memory_need))


def _record(plan: Plan, nodes: list[tuple[Placement, Wanted, str]], earlier: dict, stop_seen: str | None,
            progress: readiness.Progress | None, memory_need: dict[str, int] | None) -> dict:
    run_record.refuse_if_stopped(plan.recipe.id, earlier, stop_seen, reform=False)
    kept = {k: v for k, v in earlier.items() if k == "watch"}
    if memory_need is None:  # a server found running and waited for: its launch's need still holds
        memory_need = {n.get("node"): n.get("memory_need") for n in earlier.get("nodes", [])}
    check = vllm_check.read_record(plan.recipe.id)
    if plan.options.skip_vllm_check or not check or check.get("image") != nodes[0][1].image:
        check = None  # a verdict about another image (or a skipped check) is not this launch's
    data = {"recipe": plan.recipe.id, "file": str(plan.recipe.path), "mode": plan.mode,
            "endpoint": plan.endpoint, "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            # what `run-recipe bench` needs without the launch's options: where to ask, what, and what runs
            "base_url": base_url(plan), "served_model": plan.served_model, "model": plan.vllm.model,
            "argv": [masking.scrub(word) for word in plan.vllm.argv],  # --api-key's value never reaches a file
            "backend": cluster.backend(plan.options.ray) if plan.mode == "cluster" else "solo",
            **({"readiness": progress.record()} if progress else {}), **kept,
            "nodes": [{"node": place.runner.node, "rank": place.rank, "container": cid,
                       "image": want.image,
                       "script_sha256": hashlib.sha256(place.script.encode()).hexdigest(),
                       "weights": want.record.split(",") if want.record else [],
                       "mods": [{"name": m.name, "sha256": mods.content_hash((m,))} for m in plan.mods],
                       "inputs": want.digest, "memory_need": (memory_need or {}).get(place.runner.node)}
                      for place, want, cid in nodes],
            "vllm_check": check}
    return data


def _clear(runner: Connector, plan: Plan, ours: list[Container], clear: tuple[Command, ...]) -> bool:
    """Remove this recipe's old containers (`clear`: the commands that do it; True when there were some);
    refuse to touch a same-named container we did not start."""
    named = docker.container_named(runner, plan.container_name)
    if named and named.id not in {c.id for c in ours}:
        raise RunError(f"a container named '{plan.container_name}' exists on {runner.node} and was not "
                       f"started for recipe {plan.recipe.id}; remove it or choose --name")
    if ours:
        say(f"replacing {', '.join(c.name for c in ours)} on {runner.node}: its inputs changed")
        for command in clear:
            execute.run(runner, command)
    return bool(ours)


def start_commands(place: Placement, plan: Plan, want: Wanted) -> list[Command]:
    """docker create (with the node's compile caches, and the secret env file on stdin: container_create),
    copy the script in (as a tar on stdin: works the same over SSH), docker start. The container is named
    by its name, so the commands are known before it exists; `create` prints its ID."""
    node, side, name = place.runner.node, plan.options.docker, plan.container_name
    labels = {"recipe": plan.recipe.id, "inputs": want.digest, "file": str(plan.recipe.path),
              "endpoint": plan.endpoint, "weights": want.record} | \
        ({"stack": plan.options.stack} if plan.options.stack else {})
    label_args = [a for k, v in labels.items() for a in ("--label", f"{LABEL}.{k}={v}")]
    secret = sorted(container_flags.secret_env(side))
    env = Input(f"env file: {', '.join(secret)}" if secret else "env file: empty",
                lambda: container_flags.env_file_text(side).encode(), secret=True)
    script = place.script
    tar = Input(f"tar: {SCRIPT_DIR}/launch.sh (sha256 {hashlib.sha256(script.encode()).hexdigest()[:12]})",
                lambda: script_tar({"launch.sh": script}))
    create = container_create.create_argv(container_flags.cache_mounts(side), [*label_args, *want.args])
    return [Command(tuple(create), node, env, timeout=120), Command(("docker", "cp", "-", f"{name}:/"), node, tar),
            Command(("docker", "start", name), node, timeout=60)]


def _start(runner: Connector, start: list[Command]) -> str:
    """Run the start commands (create, copy, start) through the executor; the new container's ID.
    A failed copy or start removes the container it created."""
    create, *rest = start
    cid = execute.run(runner, create).stdout.strip()
    try:
        for command in rest:
            execute.run(runner, command)
    except BaseException:
        execute.run_each(runner, steps.remove(runner.node, [cid]))
        raise
    return cid


def script_tar(files: Mapping[str, str]) -> bytes:
    """A tar of SCRIPT_DIR/<name> for each file, for `docker cp -` (works the same over SSH, nothing on argv)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        folder = tarfile.TarInfo(SCRIPT_DIR.strip("/"))
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{SCRIPT_DIR.strip('/')}/{name}")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def wait_ready(runner: Connector, plan: Plan, cid: str, workers: list[tuple[Connector, str]] = (),  # type: ignore[assignment]
               clock: Callable[[], float] = time.monotonic) -> readiness.Progress:
    """Wait through the three readiness stages (port, /health, first streamed token); fail fast, with
    the root cause and every node's log kept (crash_logs), when any container exits or /health answers 5xx."""
    base = base_url(plan)
    every = [(runner, cid), *workers]
    progress = readiness.Progress(clock())
    deadline = progress.started + plan.options.ready_timeout
    next_note, next_state = progress.started + 15, progress.started
    while True:
        # each node's container state is a docker call (over SSH for workers): once a second is fast enough
        # to fail fast; the cheap HTTP stages are polled every POLL_SECONDS
        for index, (node, ncid) in enumerate(every if clock() >= next_state else []):
            status, code = docker.state(node, ncid)
            if status in ("exited", "dead", "gone"):
                what = ("the server container exited (code {}) before it was ready" if index == 0 else
                        f"the container on {node.node} exited (code {{}}) before the server was ready")
                raise _died(plan, every, index, what.format(code), code)
        try:
            stage = readiness.advance(progress, _head_host(plan), plan.port, base, plan.served_model,
                                      token_wait=max(0.5, min(TOKEN_WAIT, deadline - clock())), clock=clock,
                                      key=plan.api_key)
        except readiness.HealthFailed as exc:
            raise _died(plan, every, 0, f"{base}/health answered {exc.status} (vLLM's engine is dead)", None) from None
        if stage == "ready":
            return progress
        now = clock()
        if now >= next_state:
            next_state = now + STATE_SECONDS
        if now > deadline:
            raise crash_logs.failure(plan, every, 0, f"the server was not ready after "
                                     f"{plan.options.ready_timeout:.0f} s: {READY_WAITS[stage].format(base=base)}")
        if now > next_note:
            say(f"  still waiting for {base}: {READY_WAITS[stage].format(base=base)} ({now - progress.started:.0f} s)")
            next_note = now + 30
        time.sleep(POLL_SECONDS)


# what the wait is stuck on, per stage
READY_WAITS = {"port": "nothing listens on {base}",
               "health": "{base}/health does not answer 200",
               "token": "{base}/health answers but a streamed completion returned no token"}


def _died(plan: Plan, every: list[tuple[Connector, str]], failing: int, what: str, code: int | None) -> NotReadyError:
    """The error for a server that cannot become ready: what happened, the root cause its log shows, the
    tail, and where every node's whole log is kept (before the containers go)."""
    return crash_logs.failure(plan, every, failing, what, command=f"{SCRIPT_DIR}/launch.sh", code=code)


def _head_host(plan: Plan) -> str:
    return "127.0.0.1" if plan.head.local or plan.loopback_only else plan.head.host


def base_url(plan: Plan) -> str:
    """Where the head's server answers, as seen from this machine (the head)."""
    return f"http://{_head_host(plan)}:{plan.port}"


def _models_ready(base: str, model: str, key: str) -> bool:
    """The cheap check of a server that was ready once: /health 200 and the model listed (no generation)."""
    return readiness.health(base) == 200 and readiness.served_model(base, model, key) is not None


def follow(runner: Connector, plan: Plan, cid: str) -> int:
    """Foreground mode: stream the server's logs; Ctrl-C stops the container."""
    proc = subprocess.Popen(["docker", "logs", "-f", cid])
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        say(f"\nstopping {plan.container_name} ...")
        execute.run(runner, steps.halt(runner.node, cid))
        return 130


def status(runner: Connector, recipe_id: str | None = None) -> list[dict[str, str]]:
    """One row per runrecipe container: recipe, container, state, endpoint, started, image."""
    found = docker.containers(runner, **({"recipe": recipe_id} if recipe_id else {}))
    return [{"recipe": c.labels.get(f"{LABEL}.recipe", ""), "container": c.name, "id": c.id[:12],
             "state": c.state, "endpoint": c.labels.get(f"{LABEL}.endpoint", ""),
             "started": c.labels.get(f"{LABEL}.started", ""), "image": c.image,
             "weights": c.labels.get(f"{LABEL}.weights", ""), "stack": c.labels.get(f"{LABEL}.stack", ""),
             "node": runner.node} for c in found]


def stop(runner: Connector, recipe_id: str, *, every: bool = False) -> list[str]:
    """Remove every container of this recipe (of any recipe only when `every` says so); returns their names.

    An empty recipe id is refused: as a label filter it would match every runrecipe container."""
    if not recipe_id.strip() and not every:
        raise ConfigError("stop: no recipe named: name one, or ask for every runrecipe container (--all)")
    found = docker.containers(runner, **({} if every else {"recipe": recipe_id}))
    execute.run_each(runner, steps.remove(runner.node, [c.id for c in found]))
    return [c.name for c in found]

