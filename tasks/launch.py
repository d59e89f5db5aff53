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
import re
import resource
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, TypeVar

from . import docker, hub_cache, mods, settings, steps, vllm_check, weights
from .docker import LABEL, Container, Runner
from .errors import ConfigError, NotReadyError, RunError
from .plan import Plan

T = TypeVar("T")
SCRIPT_DIR = "/runrecipe"
CONTAINER_HF_HOME = "/root/.cache/huggingface"
NOFILE = 1048576
POLL_SECONDS = 0.5


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def image_ref(runner: Runner, plan: Plan) -> str:
    """The image ID the server runs: the recipe's image, or its mods-derived image."""
    tag = plan.build.tag
    base = docker.image_id(runner, tag)
    if not base:
        raise RunError(f"image '{tag}' is not on {runner.node}.\n"
                       f"Build it first: ./run-recipe.sh {plan.recipe.id} --setup "
                       f"(or doit run recipe={plan.recipe.id})")
    if not plan.mods:
        return base
    derived = docker.image_id(runner, mods.derived_tag(base, plan.mods))
    if not derived:
        raise RunError(f"the mods of {plan.recipe.id} are not applied to {tag} on {runner.node}; "
                       f"run the mods task: doit run recipe={plan.recipe.id}")
    return derived


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
    """`docker create` arguments that define the server (labels excluded: they describe it).

    With every model verified in the cache the server runs with HF_HUB_OFFLINE=1, so it loads
    exactly what was checked and cannot fetch anything else."""
    nofile = nofile_limit()
    args = ["--name", plan.container_name, "--network", "host", "--ipc", "host", "--init",
            "--ulimit", f"nofile={nofile}:{nofile}", "-v", f"{settings.hf_home()}:{CONTAINER_HF_HOME}"]
    hub = hub_cache.hub_cache_dir()
    if hub != settings.hf_home() / "hub":
        args += ["-v", f"{hub}:{CONTAINER_HF_HOME}/hub"]
    for path in plan.local_mounts:
        args += ["-v", f"{path}:{path}:ro"]
    if offline:
        args += ["-e", "HF_HUB_OFFLINE=1"]
    if plan.options.privileged:
        args += ["--privileged"]
    else:  # the origin's --non-privileged set, minus memory caps that depend on the machine
        args += ["--cap-add", "IPC_LOCK", "--shm-size", "64g", "--pids-limit", "4096"]
        if Path("/dev/infiniband").exists():
            args += ["--device", "/dev/infiniband"]
    if gpus:
        args += ["--gpus", "all"]
    if plan.options.restart:
        args += ["--restart", "unless-stopped"]
    for key, value in plan.docker_env.items():
        args += ["-e", f"{key}={value}"]
    return [*args, "--entrypoint", "bash", image, f"{SCRIPT_DIR}/launch.sh"]


def inputs_hash(args: list[str], script: str, weights_record: str) -> str:
    """What makes a server the same: its docker arguments, its script and the weights' commits."""
    return hashlib.sha256(json.dumps([args, script, weights_record]).encode()).hexdigest()


@dataclass(frozen=True)
class Placement:
    """One container of a run: the node it runs on (through its runner) and the script it runs."""

    runner: Runner
    script: str
    rank: int = 0


@dataclass(frozen=True)
class Wanted:
    args: list[str]
    digest: str
    record: str


def solo(runner: Runner, plan: Plan) -> list[Placement]:
    return [Placement(runner, plan.script)]


def wanted(place: Placement, plan: Plan, record: list[str] | None) -> Wanted:
    """The create arguments and inputs hash of the container this plan asks for on one node, now."""
    runner = place.runner
    args = create_args(plan, image_ref(runner, plan), docker.has_nvidia_runtime(runner), record is not None)
    text = ",".join(record or [])
    return Wanted(args, inputs_hash(args, place.script, text), text)


def serving(runner: Runner, plan: Plan, digest: str) -> Container | None:
    for c in docker.containers(runner, recipe=plan.recipe.id):
        if c.running and c.labels.get(f"{LABEL}.inputs") == digest:
            return c
    return None


def _each(places: list[Placement], fn: Callable[[Placement], T]) -> list[T]:
    """fn on every node at once (SSH round trips overlap); results in placement order."""
    if len(places) == 1:
        return [fn(places[0])]
    with ThreadPoolExecutor(max_workers=min(8, len(places))) as pool:
        return list(pool.map(fn, places))


def answer(places: list[Placement], plan: Plan) -> steps.Answer:
    """The launch step over every node: Noop only when each node runs this recipe's container with
    exactly the wanted inputs and the head answers. Running is not serving: a run killed while it
    waited for readiness leaves a running container with the right labels that may never answer."""
    record = verified_weights(plan) if plan.models else []
    try:
        digests = _each(places, lambda p: wanted(p, plan, record).digest)
        found = _each(places, lambda p: docker.containers(p.runner, recipe=plan.recipe.id))
    except RunError as exc:
        return steps.Change(f"cannot start yet: {str(exc).splitlines()[0]}")
    for place, digest, running in zip(places, digests, found):
        step = steps.launch(plan.container_name, digest, running, answering=True)
        if isinstance(step, steps.Change):
            return steps.Change(f"{place.runner.node}: {step.why}", step.commands) if place.rank else step
    return steps.launch(plan.container_name, digests[0], found[0],
                        answering=_models_ready(base_url(plan), plan.served_model))


def is_current(places: list[Placement], plan: Plan) -> bool:
    """Up to date: the launch step answers Noop."""
    return isinstance(answer(places, plan), steps.Noop)


def converge(places: list[Placement], plan: Plan, ray_first: bool = True) -> dict[str, str]:
    """Start (or replace) the server on every node and wait until the head answers.

    A failed start removes every container this run started, on every node."""
    record = verified_weights(plan) if plan.models else []
    if plan.models and record is None:
        say(f"Warning: the weights of {', '.join(m.key for m in plan.models)} are not complete in "
            f"{hub_cache.hub_cache_dir()}; vLLM will download them itself at start, unverified "
            "(add --setup to download and verify them first)")
    wants = _each(places, lambda p: wanted(p, plan, record))
    same = _each(places, lambda p: serving(p.runner, plan, wants[p.rank].digest))
    if all(same):  # the containers this plan asks for run already; count them only once the head answers
        if not _models_ready(base_url(plan), plan.served_model):
            say(f"{same[0].name} runs with the current inputs but does not answer yet (an earlier run "
                f"stopped waiting for it); waiting for {plan.endpoint} ...")
            try:
                wait_ready(places[0].runner, plan, same[0].id, [(p.runner, same[p.rank].id) for p in places if p.rank])
            except RunError:
                for place in places:  # never ready: not left behind as if it served
                    try:
                        docker.remove(place.runner, [same[place.rank].id])
                    except RunError as exc:
                        say(f"Warning: could not remove {same[place.rank].id[:12]} on {place.runner.node}: {exc}")
                raise
            write_record(plan, [(p, wants[p.rank], same[p.rank].id) for p in places])
        say(f"already serving at {plan.endpoint} (container {same[0].name})")
        return {"container_id": same[0].id, "inputs": wants[0].digest}
    _each(places, lambda p: _clear(p.runner, plan))
    order = places if ray_first else places[1:] + places[:1]   # native: workers, then the head
    started: list[tuple[Placement, str]] = []
    try:
        for place in order:
            started.append((place, _start(place, plan, wants[place.rank])))
        head_cid = next(cid for p, cid in started if p.rank == 0)
        say(f"started {plan.container_name} on {len(started)} node(s); waiting for {plan.endpoint} ...")
        wait_ready(places[0].runner, plan, head_cid, [(p.runner, cid) for p, cid in started if p.rank])
    except BaseException:
        for place, cid in started:
            try:
                docker.remove(place.runner, [cid])
            except RunError as exc:
                say(f"Warning: could not remove {cid[:12]} on {place.runner.node}: {exc}")
        raise
    say(f"serving {plan.served_model or plan.recipe.name} at {plan.endpoint}")
    write_record(plan, [(p, wants[p.rank], cid) for p, cid in sorted(started, key=lambda pc: pc[0].rank)])
    return {"container_id": head_cid, "inputs": wants[0].digest}


def record_path(recipe_id: str) -> Path:
    return settings.state_dir() / "runs" / (re.sub(r"[^A-Za-z0-9_.-]+", "-", recipe_id) + ".json")


def write_record(plan: Plan, nodes: list[tuple[Placement, Wanted, str]]) -> None:
    """What runs where after a successful launch: image, weights commits, mods, script hash per node."""
    data = {"recipe": plan.recipe.id, "file": str(plan.recipe.path), "mode": plan.mode,
            "endpoint": plan.endpoint, "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "nodes": [{"node": place.runner.node, "rank": place.rank, "container": cid,
                       "image": want.args[-2],  # create_args ends with the image and the script path
                       "script_sha256": hashlib.sha256(place.script.encode()).hexdigest(),
                       "weights": want.record.split(",") if want.record else [],
                       "mods": [{"name": m.name, "sha256": mods.content_hash((m,))} for m in plan.mods],
                       "inputs": want.digest}
                      for place, want, cid in nodes],
            "vllm_check": vllm_check.read_record(plan.recipe.id)}
    path = record_path(plan.recipe.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)  # a reader never sees half a record


def read_record(recipe_id: str) -> dict | None:
    try:
        return json.loads(record_path(recipe_id).read_text())
    except (OSError, ValueError):
        return None


def _clear(runner: Runner, plan: Plan) -> None:
    """Remove this recipe's old containers; refuse to touch a same-named container we did not start."""
    ours = docker.containers(runner, recipe=plan.recipe.id)
    named = docker.container_named(runner, plan.container_name)
    if named and named.id not in {c.id for c in ours}:
        raise RunError(f"a container named '{plan.container_name}' exists on {runner.node} and was not "
                       f"started for recipe {plan.recipe.id}; remove it or choose --name")
    if ours:
        say(f"replacing {', '.join(c.name for c in ours)} on {runner.node}: its inputs changed")
        docker.remove(runner, [c.id for c in ours])


def _start(place: Placement, plan: Plan, want: Wanted) -> str:
    """docker create, copy the script in (as a tar on stdin: works the same over SSH), docker start."""
    runner = place.runner
    labels = {"recipe": plan.recipe.id, "inputs": want.digest, "file": str(plan.recipe.path),
              "endpoint": plan.endpoint, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "weights": want.record}
    label_args = [a for k, v in labels.items() for a in ("--label", f"{LABEL}.{k}={v}")]
    cid = runner.read(["docker", "create", *label_args, *want.args]).stdout.strip()
    try:
        runner.feed(["docker", "cp", "-", f"{cid}:/"], _script_tar(place.script))
        runner.read(["docker", "start", cid])
    except BaseException:
        docker.remove(runner, [cid])
        raise
    return cid


def _script_tar(script: str) -> bytes:
    buf = io.BytesIO()
    data = script.encode()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        folder = tarfile.TarInfo(SCRIPT_DIR.strip("/"))
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        info = tarfile.TarInfo(f"{SCRIPT_DIR.strip('/')}/launch.sh")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def wait_ready(runner: Runner, plan: Plan, cid: str, workers: list[tuple[Runner, str]] = (),  # type: ignore[assignment]
               clock: Callable[[], float] = time.monotonic) -> None:
    """Wait for /health, then for the model in /v1/models; fail fast if any container exits."""
    base = base_url(plan)
    start = clock()
    deadline = start + plan.options.ready_timeout
    next_note = start + 15
    while True:
        status, code = docker.state(runner, cid)
        if status in ("exited", "dead", "gone"):
            raise NotReadyError(f"the server container exited (code {code}) before it was ready",
                                node=runner.node, command=f"{SCRIPT_DIR}/launch.sh",
                                exit_code=code, tail=docker.logs_tail(runner, cid))
        for worker, wcid in workers:
            wstatus, wcode = docker.state(worker, wcid)
            if wstatus in ("exited", "dead", "gone"):
                raise NotReadyError(f"the container on {worker.node} exited (code {wcode}) before the "
                                    "server was ready", node=worker.node, exit_code=wcode,
                                    tail=docker.logs_tail(worker, wcid))
        if _models_ready(base, plan.served_model):
            return
        now = clock()
        if now > deadline:
            raise NotReadyError(f"the server was not ready after {plan.options.ready_timeout:.0f} s "
                                f"({base}/health, then {plan.served_model or 'a model'} in /v1/models)",
                                node=runner.node, tail=docker.logs_tail(runner, cid))
        if now > next_note:
            say(f"  still waiting for {base} ({now - start:.0f} s)")
            next_note = now + 30
        time.sleep(POLL_SECONDS)


def base_url(plan: Plan) -> str:
    """Where the head's server answers, as seen from this machine (the head)."""
    host = "127.0.0.1" if plan.head.local else plan.head.host
    return f"http://{host}:{plan.port}"


def _models_ready(base: str, model: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
            if resp.status != 200:
                return False
        with urllib.request.urlopen(f"{base}/v1/models", timeout=2) as resp:
            data = json.loads(resp.read() or b"{}")
    except (OSError, ValueError, urllib.error.URLError):
        return False
    ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)]
    return bool(ids) and (not model or model in ids)


def follow(runner: Runner, plan: Plan, cid: str) -> int:
    """Foreground mode: stream the server's logs; Ctrl-C stops the container."""
    proc = subprocess.Popen(["docker", "logs", "-f", cid])
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        say(f"\nstopping {plan.container_name} ...")
        runner.run(["docker", "stop", cid], stream=False, check=False)
        return 130


def status(runner: Runner, recipe_id: str | None = None) -> list[dict[str, str]]:
    """One row per runrecipe container: recipe, container, state, endpoint, started, image."""
    found = docker.containers(runner, **({"recipe": recipe_id} if recipe_id else {}))
    return [{"recipe": c.labels.get(f"{LABEL}.recipe", ""), "container": c.name, "id": c.id[:12],
             "state": c.state, "endpoint": c.labels.get(f"{LABEL}.endpoint", ""),
             "started": c.labels.get(f"{LABEL}.started", ""), "image": c.image,
             "weights": c.labels.get(f"{LABEL}.weights", ""),
             "node": runner.node} for c in found]


def stop(runner: Runner, recipe_id: str, *, every: bool = False) -> list[str]:
    """Remove every container of this recipe (of any recipe only when `every` says so); returns their names.

    An empty recipe id is refused: as a label filter it would match every runrecipe container."""
    if not recipe_id.strip() and not every:
        raise ConfigError("stop: no recipe named: name one, or ask for every runrecipe container (--all)")
    found = docker.containers(runner, **({} if every else {"recipe": recipe_id}))
    docker.remove(runner, [c.id for c in found])
    return [c.name for c in found]
