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
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import bench, docker, readiness, run_record, settings, state
from .bench import BenchError
from .docker import Runner
from .errors import RunError
from .connect import tail

RESULT_DIR = "/runrecipe-bench"  # the mounted result folder, inside the client's container
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
    container: str   # the head's server: the client borrows its volumes (HF cache, local model folders)
    image: str
    base_url: str
    model: str
    vllm: str


def start_hint(recipe_id: str) -> str:
    return f"start it with `run-recipe {recipe_id} -d` (add --solo or -n as you launch it), then bench again"


def target(runner: Runner, recipe_id: str) -> Target:
    """The recipe's running, ready server, or a BenchError naming what is missing and how to start it."""
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
    if readiness.health(base) != 200 or readiness.served_model(base, model) is None:
        raise BenchError(f"{recipe_id} runs but {base} does not serve {model} (not ready yet, or it wants an API "
                         "key, which bench does not send): wait for `run-recipe status` to show it ready")
    return Target(recipe_id, record, head["container"], head["image"], base, model, readiness.version(base))


def client_argv(tgt: Target, params: Params, concurrency: int, folder: Path, name: str) -> list[str]:
    """`docker run` of `vllm bench serve` for one level, from the deployment's own image, on the host's network.
    The random prompts are made with the served model's tokenizer, read offline from the server's own
    volumes (read-only), so nothing is downloaded."""
    tokenizer = tgt.record.get("model") or tgt.model
    return ["docker", "run", "--rm", "--name", name, "--network", "host", "--volumes-from", f"{tgt.container}:ro",
            "-v", f"{folder}:{RESULT_DIR}", "-e", "HF_HUB_OFFLINE=1", "--entrypoint", "vllm", tgt.image,
            "bench", "serve", "--backend", "vllm", "--base-url", tgt.base_url, "--model", tgt.model,
            "--tokenizer", tokenizer,
            "--dataset-name", "random", "--random-input-len", str(params.input_len),
            "--random-output-len", str(params.output_len), "--num-prompts", str(params.requests),
            "--max-concurrency", str(concurrency), "--percentile-metrics", "ttft,tpot,itl",
            "--metric-percentiles", "90,99", "--save-result", "--result-dir", RESULT_DIR,
            "--result-filename", f"c{concurrency}.json"]


def measure(runner: Runner, tgt: Target, params: Params, note: Note,
            clock: Callable[[], float] = time.monotonic) -> dict:
    """Every level in turn, then the stored result's document; raises (storing nothing) when one fails."""
    started = _now()
    deadline = clock() + params.timeout
    folder = Path(tempfile.mkdtemp(prefix="rr-bench-", dir=settings.state_dir()))
    levels = []
    try:
        for c in params.concurrency:
            note(f"{tgt.recipe}: concurrency {c}, {params.requests} requests of {params.input_len} -> "
                 f"{params.output_len} tokens ...")
            levels.append(_level(runner, tgt, params, c, folder, deadline - clock()))
            lv = levels[-1]
            note(f"  {lv['completed']} completed, {lv['failed']} failed: {lv['output_tok_s']:.1f} output tokens/s, "
                 f"TTFT median {lv['ttft_median_ms']:.1f} ms")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    failed = [lv for lv in levels if lv["failed"] or lv["completed"] < params.requests]
    if failed:
        raise BenchError(f"{tgt.recipe}: requests failed at concurrency "
                         f"{', '.join(str(lv['concurrency']) for lv in failed)}; nothing stored (see the server's "
                         f"log: run-recipe logs {tgt.recipe})")
    fp = bench.fingerprint(tgt.record, tgt.vllm, params.fingerprinted())
    return bench.document(tgt.recipe, fp, levels, started, _now())


def _level(runner: Runner, tgt: Target, params: Params, concurrency: int, folder: Path, left: float) -> dict:
    """One client container; on a timeout or interrupt it is removed, not left generating load."""
    if left <= 0:
        raise BenchError(f"the bench ran out of its --timeout {params.timeout:.0f} s before concurrency "
                         f"{concurrency}; nothing stored (give a longer --timeout, or fewer --requests)")
    name = f"runrecipe-bench-{uuid.uuid4().hex[:12]}"
    try:
        result = runner.run(client_argv(tgt, params, concurrency, folder, name), stream=False, timeout=left,
                            check=False)
    except (RunError, KeyboardInterrupt) as exc:
        runner.run(["docker", "rm", "-f", name], stream=False, check=False)
        if isinstance(exc, RunError) and "timed out" in str(exc):
            raise BenchError(f"the bench at concurrency {concurrency} did not finish within --timeout "
                             f"{params.timeout:.0f} s; nothing stored (give a longer --timeout, or fewer "
                             "--requests)") from None
        raise
    path = folder / f"c{concurrency}.json"
    if result.exit_code or not path.is_file():
        raise RunError(f"`vllm bench serve` at concurrency {concurrency} failed in {tgt.image[:19]}; nothing stored",
                       node=runner.node, exit_code=result.exit_code, tail=tail(_without_noise(result.stderr)
                                                                               or result.stdout))
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise BenchError(f"vLLM's bench result at concurrency {concurrency} is not JSON ({exc})") from None
    return bench.level(data, concurrency)


def _without_noise(text: str) -> str:
    """stderr without triton's exit-time `nanobind: leaked ...` lines, which hide the real error."""
    return "\n".join(ln for ln in text.splitlines() if "nanobind" not in ln and not ln.startswith("leaked"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- stored results -------------------------------------------------------------------------------------

def folder(recipe_id: str) -> Path:
    return settings.state_dir() / "bench" / state.file_name(recipe_id)


def store(doc: dict) -> Path:
    """The result as bench/<recipe>/<start time>.json, written whole (state.write_json)."""
    stamp = doc["started"].replace("-", "").replace(":", "").replace("+0000", "Z")
    path = folder(doc["recipe"]) / f"{stamp}.json"
    n = 1
    while path.exists():  # two benches in one second
        path, n = folder(doc["recipe"]) / f"{stamp}-{n}.json", n + 1
    state.write_json(path, doc)
    return path


def stored(recipe_id: str) -> list[dict]:
    """Every complete result of the recipe (a file that does not read as one is left out)."""
    docs = (state.read_json(p) for p in sorted(folder(recipe_id).glob("*.json")))
    return [d for d in docs if isinstance(d, dict) and d.get("schema") == bench.SCHEMA and d.get("levels")]


def load(path: Path) -> dict:
    """A result file named on the command line."""
    doc = state.read_json(path)
    if not (isinstance(doc, dict) and doc.get("schema") == bench.SCHEMA and doc.get("levels")):
        raise BenchError(f"{path} is not a stored bench result (see `run-recipe bench --history RECIPE`)")
    return doc
