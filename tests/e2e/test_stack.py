"""A two-entry stack on one node (the test dockerd) behind the real LiteLLM proxy, end to end.

One stack run per module (the gateway's start costs ~15 s): the entries serve, the gateway lists and
routes them, a changed entry restarts alone, an over-budget stack starts nothing, and `stop` removes the
stack and nothing else. The stand-in vLLM answers as its served model name; LiteLLM is real.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from .conftest import CODE_ROOT, Project, free_port, get_json

sys.path.insert(0, str(CODE_ROOT / "tests"))
from harness import gatewayimage  # noqa: E402

KEY = "sk-stack-e2e-not-a-secret"


def recipe(project: Project, rid: str, model: str, gpu_placeholder: bool) -> None:
    gpu = " --gpu-memory-utilization {gpu_memory_utilization}" if gpu_placeholder else ""
    project.recipe(rid, f"""\
        recipe_version: "1"
        name: Stack {rid}
        container: rr-e2e-stack
        defaults: {{port: 8000, host: 0.0.0.0, gpu_memory_utilization: 0.2}}
        command: vllm serve {model} --port {{port}} --host {{host}}{gpu}
        """)


def stack_file(project: Project, name: str, body: str) -> Path:
    path = project.root / "stacks" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(body))
    return path


def ids(project: Project, stack: str) -> dict[str, str]:
    out = project.docker("ps", "--no-trunc", "--filter", f"label=runrecipe.stack={stack}",
                         "--format", "{{.Names}} {{.ID}}").stdout
    return dict(line.split() for line in out.splitlines())


def post(url: str, body: dict, key: str | None = KEY) -> tuple[int, bytes]:
    auth = {} if key is None else {"Authorization": f"Bearer {key}"}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **auth})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def gateway_image(docker_host: str) -> str:
    """The real LiteLLM proxy image (Debian rootfs + wheels; built once per input hash, ~8 min cold here)."""
    if not shutil.which("debootstrap"):
        pytest.skip("the gateway image needs debootstrap (apt-get install debootstrap)")
    return gatewayimage.build_gateway_image(gatewayimage.Daemon(docker_host), log=lambda m: print(f"[gateway] {m}"))


@pytest.fixture(scope="module")
def duo(tmp_path_factory: pytest.TempPathFactory, docker_host: str, standin_docker_dir: Path,
        gateway_image: str) -> dict:
    root = tmp_path_factory.mktemp("stack") / "project"
    (root / "recipes").mkdir(parents=True)
    (root / ".env").write_text("NON_PRIVILEGED=1\n")
    env = {**os.environ, "DOCKER_HOST": docker_host, "RUNRECIPE_HOME": str(root), "DOCKER_BUILDKIT": "0",
           "RUNRECIPE_DOCKER_DIR": str(standin_docker_dir), "HF_HOME": str(root / "hf"), "PYTHONPATH": str(CODE_ROOT),
           "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_DISABLE_TELEMETRY": "1",
           "RUNRECIPE_GATEWAY_IMAGE": gateway_image, "DUO_KEY": KEY}
    project = Project(root, env)
    recipe(project, "chat", "org/chat", gpu_placeholder=True)
    recipe(project, "code", "org/code", gpu_placeholder=False)
    ports = {"chat": free_port(), "code": free_port(), "gateway": free_port()}
    body = """\
        name: e2e-duo
        models:
          - {{recipe: chat, port: {chat}, gpu_mem: 0.3}}
          - {{recipe: code, port: {code}, gpu_mem: {code_mem}, extra_args: [--served-model-name, coder]}}
        gateway: {{port: {gateway}, api_key_env: DUO_KEY}}
        """
    stack_file(project, "duo", body.format(**ports, code_mem=0.4))
    first = project.cli("stack", "duo", "-d", "--setup", "--ready-timeout", "120", timeout=600)
    yield {"project": project, "ports": ports, "body": body, "first": first}
    project.cli("stack", "duo", "stop")
    for rid in project.recipes:
        stray = [c["Id"] for c in project.containers(rid)]
        if stray:
            project.docker("rm", "-f", *stray, check=False)
    project.remove_test_images()


def test_both_entries_serve_and_the_gateway_lists_them(duo: dict) -> None:
    project, ports, first = duo["project"], duo["ports"], duo["first"]
    assert first.returncode == 0, first.stdout + first.stderr
    # start order: descending memory (code 0.4 first), each after the one before was ready; the gateway last
    launches = [ln.split()[1] for ln in first.stdout.splitlines() if ln.startswith(".  ") and
                ln.split()[1].startswith(("launch:", "gateway:"))]
    assert launches == ["launch:e2e-duo//e2e-duo-code", "launch:e2e-duo//e2e-duo-chat", "gateway:e2e-duo"]
    assert get_json(f"http://127.0.0.1:{ports['chat']}/v1/models")["data"][0]["id"] == "org/chat"
    assert get_json(f"http://127.0.0.1:{ports['code']}/v1/models")["data"][0]["id"] == "coder"
    running = ids(project, "e2e-duo")
    assert sorted(running) == ["e2e-duo-chat", "e2e-duo-code", "e2e-duo-gateway"]
    req = urllib.request.Request(f"http://127.0.0.1:{ports['gateway']}/v1/models",
                                 headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert sorted(m["id"] for m in json.loads(resp.read())["data"]) == ["coder", "org/chat"]
    assert KEY not in first.stdout + first.stderr
    inspect = json.loads(project.docker("inspect", running["e2e-duo-gateway"]).stdout)[0]
    assert KEY not in json.dumps(inspect["Args"]) and KEY not in json.dumps(inspect["Config"]["Cmd"])
    status = project.cli("status")
    assert status.returncode == 0 and "stack e2e-duo:" in status.stdout
    rows = [ln for ln in status.stdout.splitlines() if ln.startswith("  e2e-duo//") and " running " in ln]
    assert len(rows) == 3, status.stdout  # entries and gateway under the stack (readiness lines aside)


def stream(url: str, body: dict) -> list[dict]:
    """The JSON chunks of a streamed answer (server-sent events), up to `data: [DONE]`."""
    req = urllib.request.Request(url, data=json.dumps({**body, "stream": True}).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    chunks = []
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        for raw in resp:
            line = raw.decode().strip()
            if line == "data: [DONE]":
                return chunks
            if line.startswith("data: "):
                chunks.append(json.loads(line[6:]))
    raise AssertionError(f"no [DONE] after {chunks}")


@pytest.mark.parametrize("model", ["coder", "org/chat"])
def test_requests_reach_the_right_entry_by_model_name_streamed_and_not(duo: dict, model: str) -> None:
    base = f"http://127.0.0.1:{duo['ports']['gateway']}/v1"
    code, raw = post(f"{base}/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert code == 200, raw
    assert json.loads(raw)["choices"][0]["message"]["content"] == f"standin reply from {model}"
    code, raw = post(f"{base}/completions", {"model": model, "prompt": "hi"})
    assert code == 200, raw
    assert json.loads(raw)["choices"][0]["text"] == f"standin reply from {model}"
    chunks = stream(f"{base}/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert len(chunks) > 2  # passed on as chunks, not one block
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == \
        f"standin reply from {model}"
    chunks = stream(f"{base}/completions", {"model": model, "prompt": "hi"})
    assert "".join(c["choices"][0].get("text") or "" for c in chunks if c["choices"]) == f"standin reply from {model}"
    code, raw = post(f"{base}/chat/completions", {"model": model, "messages": []}, key="sk-wrong")
    assert code == 401 and "wrong API key" in json.loads(raw)["error"]["message"], raw
    for missing in (None, ""):
        code, raw = post(f"{base}/chat/completions", {"model": model, "messages": []}, key=missing)
        assert code == 401 and "no API key" in json.loads(raw)["error"]["message"], raw


def local_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback: where a client on the network would knock."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines() if line.split()[1] != "lo"]


def test_entries_answer_only_through_the_gateway(duo: dict) -> None:
    """The recipes say host 0.0.0.0; behind the gateway the stack binds them to loopback, where only the
    gateway (on this machine) reaches them, so no one on the network walks around its key."""
    addresses = local_addresses()
    assert addresses, "no address but loopback to knock on"
    for entry in ("chat", "code"):
        port = duo["ports"][entry]
        for address in addresses:
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=3).close()
        assert get_json(f"http://127.0.0.1:{port}/v1/models")["data"]  # the gateway's way in


def test_an_unknown_model_is_refused_by_the_gateway(duo: dict) -> None:
    code, raw = post(f"http://127.0.0.1:{duo['ports']['gateway']}/v1/chat/completions",
                     {"model": "nobody", "messages": [{"role": "user", "content": "hi"}]})
    assert code == 400 and b"nobody" in raw


def test_a_rerun_changes_nothing_and_a_changed_entry_restarts_alone(duo: dict) -> None:
    project, ports = duo["project"], duo["ports"]
    before = ids(project, "e2e-duo")
    again = project.cli("stack", "duo", "-d")
    assert again.returncode == 0, again.stdout + again.stderr
    assert [ln for ln in again.stdout.splitlines() if ln.startswith(".  ")] == []
    assert ids(project, "e2e-duo") == before
    through_doit = project.doit("run", "stack=duo")  # the same graph: nothing to do either
    assert through_doit.returncode == 0, through_doit.stdout + through_doit.stderr
    assert [ln for ln in through_doit.stdout.splitlines() if ln.startswith(".  ")] == []
    listed = project.doit("list", "--all")
    assert "gateway:e2e-duo" in listed.stdout and "launch:e2e-duo//e2e-duo-chat" in listed.stdout, listed.stdout
    assert ids(project, "e2e-duo") == before
    stack_file(project, "duo", duo["body"].format(**ports, code_mem=0.35))  # the code entry only
    changed = project.cli("stack", "duo", "-d")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    after = ids(project, "e2e-duo")
    assert after["e2e-duo-chat"] == before["e2e-duo-chat"]
    assert after["e2e-duo-gateway"] == before["e2e-duo-gateway"]  # its routes did not change
    assert after["e2e-duo-code"] != before["e2e-duo-code"]
    argv = project.argv_in(after["e2e-duo-code"])
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.35"


def test_an_over_budget_stack_starts_nothing(duo: dict) -> None:
    project = duo["project"]
    stack_file(project, "over", """\
        name: e2e-over
        models:
          - {recipe: chat, gpu_mem: 0.6}
          - {recipe: code, gpu_mem: 0.5}
        """)
    res = project.cli("stack", "over", "-d", "--setup")
    assert res.returncode == 1
    assert "localhost: e2e-over-chat 0.6 + e2e-over-code 0.5 = 1.10" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and ids(project, "e2e-over") == {}


def test_stop_removes_the_stack_and_nothing_else(duo: dict) -> None:
    project = duo["project"]
    port = free_port()
    project.recipe("alone", f"""\
        recipe_version: "1"
        name: Alone
        container: rr-e2e-stack
        command: vllm serve org/alone --port {port} --host 127.0.0.1
        """)
    alone = project.cli("alone", "--solo", "-d")
    assert alone.returncode == 0, alone.stderr
    (project.root / "recipes" / "code.yaml").unlink()  # the stack no longer plans
    stopped = project.cli("stack", "duo", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopping every container of the stack by its label" in stopped.stderr
    assert ids(project, "e2e-duo") == {}
    # reverse start order: the gateway first
    assert stopped.stdout.split("stopped ")[1].split(", ")[0].startswith("e2e-duo-gateway@")
    assert [c["Name"] for c in project.containers("alone")] == ["/runrecipe-alone"]
