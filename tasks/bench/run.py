"""`run-recipe bench`'s measuring and storing: vLLM's own load generator against what runs, results kept.

The client is `vllm bench serve` from the deployment's own image (so client and server are one vLLM
release and nothing new is installed), in a throw-away container on the head with the host's network
and a result folder mounted, started through the head's runner like the vLLM check's container. One
container per concurrency level; the stored result (bench/<recipe>/<time>.json under the state folder)
is written whole, once, after every level completed: a bench cut short leaves nothing that reads as
a finished one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .. import masking, settings, state
from ..connect import Connector, tail
from ..errors import RunError
from ..facts import docker
from ..ops import readiness, run_record
from . import results as bench
from .results import BenchError

RESULT_DIR = "/runrecipe-bench"  # the mounted result folder, inside the client's container
KEY_VAR = "OPENAI_API_KEY"  # what `vllm bench serve` sends as its bearer (vllm/benchmarks/lib/endpoint_request_func.py)
Note = Callable[[str], None]


@dataclass(frozen=True)
class Params:
    """How to measure: concurrency levels, requests per level, token lengths, and the whole bench's bound."""

    concurrency: tuple[int, ...] = (1, 4)
    requests: int = 32
    input_len: int = 128
    output_len: int = 64
    timeout: float = 1800.0

    def fingerprinted(self) -> dict[str, int]:
        """What makes two results comparable (the levels are the chart's x axis, not part of it)."""
        return {"requests": self.requests, "input_len": self.input_len, "output_len": self.output_len}


@dataclass(frozen=True)
class Target:
    """What runs and is ready: from the run record, checked against the head's containers and server."""

    recipe: str
    record: dict
    container: str   # the head's server: the client borrows its volumes (HF cache, local model folders); "" none
    image: str
    base_url: str
    model: str
    vllm: str
    key: str = field(default="", repr=False)   # the bearer the server (or gateway) wants; "" none
    mounts: tuple[str, ...] = ()               # `-v` mounts instead of the server's volumes (a server elsewhere)
    via: str = ""                              # how the load reaches the server, for progress lines


def start_hint(recipe_id: str) -> str:
    return f"start it with `run-recipe {recipe_id} -d` (add --solo or -n as you launch it), then bench again"


def target(runner: Connector, recipe_id: str, key: str = "", key_var: str = "VLLM_API_KEY") -> Target:
    """The recipe's running, ready server, or a BenchError naming what is missing and how to start it;
    `key` (from the variable `key_var`) is the bearer a server started with an API key wants."""
    record = run_record.read(recipe_id) or {}
    nodes = record.get("nodes") or []
    if not nodes or run_record.stop_mark(record):
        why = "was stopped" if run_record.stop_mark(record) else "has no run record (it was never started here)"
        raise BenchError(f"{recipe_id} {why}: nothing to measure; {start_hint(recipe_id)}")
    if not all(record.get(k) for k in ("base_url", "served_model", "argv")):
        raise BenchError(f"the run record of {recipe_id} was written by an older runrecipe (no served model, "
                         f"address or argv): stop it (`run-recipe stop {recipe_id}`) and {start_hint(recipe_id)}")
    head = nodes[0]
    running = {c.id for c in docker.containers(runner, recipe=recipe_id) if c.running}
    if head.get("container") not in running:
        raise BenchError(f"{recipe_id}'s server container {str(head.get('container'))[:12]} is not running on "
                         f"{runner.node}: {start_hint(recipe_id)}")
    base, model = record["base_url"], record["served_model"]
    if readiness.health(base) != 200 or readiness.served_model(base, model, key) is None:
        keyed = (f"or ${key_var} does not hold its API key" if key else
                 f"or it wants an API key: put it in ${key_var} (environment or .env) or name its variable with "
                 "--api-key-env")
        raise BenchError(f"{recipe_id} runs but {base} does not serve {model} (not ready yet, {keyed}): wait for "
                         "`run-recipe status` to show it ready")
    return Target(recipe_id, record, head["container"], head["image"], base, model, readiness.version(base), key)


def client_argv(tgt: Target, params: Params, concurrency: int, folder: Path, name: str) -> list[str]:
    """`docker run` of `vllm bench serve` for one level, from the deployment's own image, on the host's network.
    The random prompts are made with the served model's tokenizer, read offline from the server's own
    volumes (read-only), so nothing is downloaded."""
    tokenizer = tgt.record.get("model") or tgt.model
    volumes = ["--volumes-from", f"{tgt.container}:ro"] if tgt.container else []
    mounts = [word for mount in tgt.mounts for word in ("-v", mount)]
    key = ["-e", KEY_VAR] if tgt.key else []  # no value: docker takes it from its own environment (client_key)
    return ["docker", "run", "--rm", "--name", name, "--network", "host", *volumes,
            "-v", f"{folder}:{RESULT_DIR}", *mounts, "-e", "HF_HUB_OFFLINE=1", *key, "--entrypoint", "vllm", tgt.image,
            "bench", "serve", "--backend", "vllm", "--base-url", tgt.base_url, "--model", tgt.model,
            "--tokenizer", tokenizer,
            "--dataset-name", "random", "--random-input-len", str(params.input_len),
            "--random-output-len", str(params.output_len), "--num-prompts", str(params.requests),
            "--max-concurrency", str(concurrency), "--percentile-metrics", "ttft,tpot,itl",
            "--metric-percentiles", "90,99", "--save-result", "--result-dir", RESULT_DIR,
            "--result-filename", f"{name}.json"]  # one per client: a stack runs several per level


def measure(runner: Connector, tgt: Target, params: Params, note: Note,
            clock: Callable[[], float] = time.monotonic) -> dict:
    """Every level in turn, then the stored result's document; raises (storing nothing) when one fails."""
    started = now()
    levels = run_levels(runner, [tgt], params, note, clock)
    fp = bench.fingerprint(tgt.record, tgt.vllm, params.fingerprinted())
    return bench.document(tgt.recipe, fp, levels, started, now())


def run_levels(runner: Connector, targets: Sequence[Target], params: Params, note: Note,
               clock: Callable[[], float] = time.monotonic, by_model: bool = False) -> list[dict]:
    """Each target's levels in turn, within one --timeout (`by_model`: each level names its target's model);
    raises, storing nothing, when one fails or a request failed."""
    deadline = clock() + params.timeout
    folder = Path(tempfile.mkdtemp(prefix="rr-bench-", dir=settings.state_dir()))
    done: list[tuple[Target, dict]] = []
    try:
        for tgt in targets:
            for c in params.concurrency:
                note(f"{tgt.recipe}{f' ({tgt.model} {tgt.via})' if tgt.via else ''}: concurrency {c}, "
                     f"{params.requests} requests of {params.input_len} -> {params.output_len} tokens ...")
                lv = _level(runner, tgt, params, c, folder, deadline - clock())
                done.append((tgt, {"model": tgt.model, **lv} if by_model else lv))
                note(f"  {lv['completed']} completed, {lv['failed']} failed: {lv['output_tok_s']:.1f} output "
                     f"tokens/s, TTFT median {lv['ttft_median_ms']:.1f} ms")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    failed = [(tgt, lv) for tgt, lv in done if lv["failed"] or lv["completed"] < params.requests]
    if failed:
        where = ", ".join(f"{lv['concurrency']}" + (f" ({lv['model']})" if by_model else "") for _, lv in failed)
        logs = ", ".join(dict.fromkeys(f"run-recipe logs {t.recipe}" for t, _ in failed))
        raise BenchError(f"{'the stack' if by_model else failed[0][0].recipe}: requests failed at concurrency "
                         f"{where}; nothing stored (see the server's log: {logs})")
    return [lv for _, lv in done]


def _level(runner: Connector, tgt: Target, params: Params, concurrency: int, folder: Path, left: float) -> dict:
    """One client container; on a timeout or interrupt it is removed, not left generating load."""
    if left <= 0:
        raise BenchError(f"the bench ran out of its --timeout {params.timeout:.0f} s before concurrency "
                         f"{concurrency}; nothing stored (give a longer --timeout, or fewer --requests)")
    name = f"runrecipe-bench-{uuid.uuid4().hex[:12]}"
    try:
        with client_key(tgt.key):
            result = runner.run(client_argv(tgt, params, concurrency, folder, name), stream=False, timeout=left,
                                check=False)
    except (RunError, KeyboardInterrupt) as exc:
        runner.run(["docker", "rm", "-f", name], stream=False, check=False)
        if isinstance(exc, RunError) and "timed out" in str(exc):
            raise BenchError(f"the bench at concurrency {concurrency} did not finish within --timeout "
                             f"{params.timeout:.0f} s; nothing stored (give a longer --timeout, or fewer "
                             "--requests)") from None
        raise
    path = folder / f"{name}.json"
    if result.exit_code or not path.is_file():
        raise RunError(f"`vllm bench serve` at concurrency {concurrency} failed in {tgt.image[:19]}; nothing stored",
                       node=runner.node, exit_code=result.exit_code, tail=tail(_without_noise(result.stderr)
                                                                               or result.stdout))
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise BenchError(f"vLLM's bench result at concurrency {concurrency} is not JSON ({exc})") from None
    return bench.level(data, concurrency)


@contextmanager
def client_key(key: str) -> Iterator[None]:
    """The key in this process's environment while the client's `docker run -e OPENAI_API_KEY` starts: the
    docker CLI copies the value from there, so it is on no command line (ps, the run record, an error)."""
    if not key:
        yield
        return
    masking.remember_secret(key)
    before = os.environ.get(KEY_VAR)
    os.environ[KEY_VAR] = key
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(KEY_VAR, None)
        else:
            os.environ[KEY_VAR] = before


def _without_noise(text: str) -> str:
    """stderr without triton's exit-time `nanobind: leaked ...` lines, which hide the real error."""
    return "\n".join(ln for ln in text.splitlines() if "nanobind" not in ln and not ln.startswith("leaked"))


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- stored results -------------------------------------------------------------------------------------

def folder(recipe_id: str, stack: bool = False) -> Path:
    """bench/<recipe>/, or bench-stacks/<stack>/ for a stack's results (apart: a recipe may share its name)."""
    return settings.state_dir() / ("bench-stacks" if stack else "bench") / state.file_name(recipe_id)


def store(doc: dict) -> Path:
    """The result as bench/<recipe>/<start time>.json (bench-stacks/<stack>/...), written whole (state.write_json)."""
    where = folder(doc["stack"], stack=True) if doc.get("stack") else folder(doc["recipe"])
    stamp = doc["started"].replace("-", "").replace(":", "").replace("+0000", "Z")
    path = where / f"{stamp}.json"
    n = 1
    while path.exists():  # two benches in one second
        path, n = where / f"{stamp}-{n}.json", n + 1
    state.write_json(path, doc)
    return path


def stored(recipe_id: str, stack: bool = False) -> list[dict]:
    """Every complete result of the recipe (or stack); a file that does not read as one is left out."""
    docs = (state.read_json(p) for p in sorted(folder(recipe_id, stack).glob("*.json")))
    return [d for d in docs if isinstance(d, dict) and d.get("schema") == bench.SCHEMA and d.get("levels")]


def load(path: Path) -> dict:
    """A result file named on the command line."""
    doc = state.read_json(path)
    if not (isinstance(doc, dict) and doc.get("schema") == bench.SCHEMA and doc.get("levels")):
        raise BenchError(f"{path} is not a stored bench result (see `run-recipe bench --history RECIPE`)")
    return doc

