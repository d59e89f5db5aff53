"""The stand-in vLLM image keeps the contract other tests code against.

Runs real containers on the test dockerd (network host, loopback only).
"""
from __future__ import annotations

import http.client
import json
import shlex
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

LABEL = "runrecipe.test=1"
Docker = Callable[..., "subprocess.CompletedProcess[str]"]
Start = Callable[..., str]


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], object], timeout: float = 10.0) -> object:
    """Poll check() until it returns something truthy; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def http_get(port: int, path: str) -> tuple[int, bytes] | None:
    """(status, body) from 127.0.0.1:port (error statuses too), or None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError):
        return None


def port_open(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def start(docker: Docker, standin_image: str) -> Iterator[Start]:
    """start(*run_opts, cmd=[...]) -> container ID; labelled, removed after the test."""
    started: list[str] = []

    def run(*opts: str, cmd: list[str]) -> str:
        cid = docker("run", "-d", "--label", LABEL, "--network", "host", *opts,
                     standin_image, *cmd).stdout.strip()
        started.append(cid)
        return cid

    yield run
    if started:
        docker("rm", "-f", *started)


def exit_code(docker: Docker, cid: str, timeout: float = 10.0) -> int:
    """Wait (bounded, unlike `docker wait`) for the container to stop; return its exit code."""
    def stopped() -> str:
        state = docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", cid).stdout
        running, code = state.split()
        return code if running == "false" else ""
    return int(wait_for(f"container {cid[:12]} to exit", stopped, timeout))  # type: ignore[arg-type]


def logs(docker: Docker, cid: str) -> str:
    """stdout and stderr of the container so far."""
    proc = docker("logs", cid)
    return proc.stdout + proc.stderr


def test_image_basics(docker: Docker, standin_image: str) -> None:
    """WORKDIR, vllm --version and the bash wrapper honour what the product relies on."""
    out = docker("run", "--rm", "--label", LABEL, standin_image, "/bin/bash", "-c",
                 "set -euo pipefail; pwd; vllm --version").stdout.split()
    assert out == ["/workspace/vllm", "0.0.0-standin"]


def test_serve_records_argv_and_answers_http(docker: Docker, start: Start) -> None:
    """argv reaches vllm intact through bash -c, and /health + /v1/models answer."""
    port = free_port()
    argv = ["serve", "org/model", "--port", str(port), "--served-model-name", "x",
            "--max-model-len", "5", "a b", "$(touch /tmp/pwned)"]
    # Through the bash wrapper, as the product runs commands, so quoting is exercised.
    cid = start(cmd=["/bin/bash", "-c", "exec " + shlex.join(["vllm", *argv])])

    status, _ = wait_for("/health", lambda: http_get(port, "/health"))
    assert status == 200
    status, body = http_get(port, "/v1/models") or (0, b"")
    assert status == 200
    assert [m["id"] for m in json.loads(body)["data"]] == ["x"]

    raw = docker("exec", cid, "cat", "/tmp/vllm-argv").stdout
    assert raw.endswith("\0")
    assert raw[:-1].split("\0") == argv
    assert docker("exec", cid, "sh", "-c", "test -e /tmp/pwned && echo yes || echo no"
                  ).stdout.strip() == "no"
    assert "standin-vllm: serving org/model" in logs(docker, cid)


def test_option_forms_last_wins_and_delay(docker: Docker, start: Start) -> None:
    """--opt=value forms, last occurrence wins, --host binds, STANDIN_DELAY delays readiness."""
    port = free_port()
    cid = start("-e", "STANDIN_DELAY=1", "-e", "STANDIN_ARGV_FILE=/tmp/argv2",
                cmd=["vllm", "serve", "org/model", "--port", "1", f"--port={port}",
                     "--host=127.0.0.1", "--served-model-name=first",
                     "--served-model-name", "second"])
    t0 = time.monotonic()
    wait_for("/health", lambda: http_get(port, "/health"))
    assert time.monotonic() - t0 >= 0.8, "answered before STANDIN_DELAY elapsed"
    _, body = http_get(port, "/v1/models") or (0, b"")
    assert json.loads(body)["data"][0]["id"] == "second"
    assert docker("exec", cid, "cat", "/tmp/argv2").stdout.split("\0")[:2] == ["serve", "org/model"]
    # Stops promptly on SIGTERM (docker stop) instead of waiting out the 10 s timeout.
    t0 = time.monotonic()
    docker("stop", "-t", "5", cid)
    assert time.monotonic() - t0 < 3
    assert exit_code(docker, cid) == 0


def test_standin_exit_fails_on_purpose(docker: Docker, start: Start) -> None:
    """STANDIN_EXIT=3 makes the container exit 3 with the message in docker logs."""
    cid = start("-e", "STANDIN_EXIT=3", cmd=["vllm", "serve", "org/model"])
    assert exit_code(docker, cid) == 3
    assert "standin-vllm: failing on purpose" in docker("logs", cid).stderr


def test_headless_serves_no_http(docker: Docker, start: Start) -> None:
    """--headless keeps running as a worker but never listens."""
    port = free_port()
    cid = start(cmd=["vllm", "serve", "org/model", "--port", str(port), "--headless"])
    wait_for("headless log line", lambda: "standin-vllm: headless worker" in logs(docker, cid))
    time.sleep(0.5)
    assert docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true"
    assert not port_open(port)


def test_weights_check(docker: Docker, start: Start, tmp_path: Path) -> None:
    """Hub ids are checked against the HF cache layout; local paths need config.json."""
    repo = tmp_path / "hub" / "models--org--model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123\n")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    mount = ["-v", f"{tmp_path}:/root/.cache/huggingface", "-e", "STANDIN_CHECK_WEIGHTS=1"]
    serve = ["vllm", "serve", "org/model", "--headless"]

    ok = start(*mount, "-e", "HF_HUB_OFFLINE=1", cmd=serve)
    wait_for("weights ok", lambda: "standin-vllm: weights ok abc123" in logs(docker, ok))

    online = start(*mount, cmd=serve)
    assert exit_code(docker, online) == 2
    assert "HF_HUB_OFFLINE" in docker("logs", online).stderr

    bad_rev = start(*mount, "-e", "HF_HUB_OFFLINE=1", cmd=[*serve, "--revision", "nope"])
    assert exit_code(docker, bad_rev) == 2
    assert "snapshots/nope/config.json" in docker("logs", bad_rev).stderr

    local = start(cmd=["vllm", "serve", "/models/none", "--headless"])
    assert exit_code(docker, local) == 2
    assert "/models/none/config.json" in docker("logs", local).stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.mxfp4", "Dockerfile.wheels"])
def test_build_info_records_dockerfile_and_build_arg(
        docker: Docker, standin_docker_dir: Path, dockerfile: str) -> None:
    """Each Dockerfile leaves its name and PRE_TRANSFORMERS in /build-info, as the product builds."""
    def build_info(*build_args: str) -> str:
        image = docker("build", "-q", *build_args, "-f", str(standin_docker_dir / dockerfile),
                       str(standin_docker_dir)).stdout.strip()
        return docker("run", "--rm", "--label", LABEL, image, "cat", "/build-info").stdout.strip()

    assert build_info() == f"dockerfile={dockerfile} pre_transformers=0"
    assert build_info("--build-arg", "PRE_TRANSFORMERS=1") == \
        f"dockerfile={dockerfile} pre_transformers=1"


def http_post(port: int, path: str, body: dict[str, object], timeout: float = 5) -> tuple[int, bytes]:
    """(status, body) of a JSON POST to 127.0.0.1:port; HTTP errors are answers, not raised."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def stream_events(port: int, path: str, body: dict[str, object],
                  timeout: float = 5) -> tuple[list[str], float]:
    """The `data:` payloads of a streamed POST, and seconds between the first one and the end."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type", "").startswith("text/event-stream")
        events: list[str] = []
        first = 0.0
        for line in resp:
            if line.startswith(b"data: "):
                first = first or time.monotonic()
                events.append(line[6:].decode().strip())
        return events, time.monotonic() - first
    finally:
        conn.close()


def serving(start: Start, *opts: str, name: str = "org/model") -> tuple[str, int]:
    """Start a stand-in with `opts` (docker run options), wait for /health; (container ID, port)."""
    port = free_port()
    cid = start(*opts, cmd=["vllm", "serve", "org/model", "--port", str(port), "--served-model-name", name])
    wait_for("/health", lambda: http_get(port, "/health"))
    return cid, port


def test_completions_answer_with_the_served_name(start: Start) -> None:
    """Both endpoints, streamed and not, in OpenAI format; the first chunk comes before the end."""
    _, port = serving(start, name='m "1"')
    want = 'standin reply from m "1"'
    prompt = {"model": 'm "1"', "prompt": "x" * 5000, "max_tokens": 4}  # body bigger than one read
    chat = {"model": 'm "1"', "messages": [{"role": "user", "content": "hi"}]}

    status, raw = http_post(port, "/v1/completions", prompt)
    answer = json.loads(raw)
    assert (status, answer["model"], answer["choices"][0]["text"]) == (200, 'm "1"', want)
    assert answer["usage"]["completion_tokens"] == 4
    status, raw = http_post(port, "/v1/chat/completions", chat)
    answer = json.loads(raw)
    assert (status, answer["model"]) == (200, 'm "1"')
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": want}

    events, after_first = stream_events(port, "/v1/completions", {**prompt, "stream": True})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["model"] for c in chunks} == {'m "1"'}
    assert "".join(c["choices"][0]["text"] for c in chunks) == want
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert after_first >= 0.2, "the first chunk arrived only with the end of the stream"

    events, _ = stream_events(port, "/v1/chat/completions", {**chat, "stream": True})
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == want
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}

    assert http_post(port, "/v1/embeddings", {})[0] == 404
    assert (http_get(port, "/v1/completions") or (0,))[0] == 405


def test_an_api_key_guards_v1_as_vllms_does(start: Start) -> None:
    """--api-key (or VLLM_API_KEY): /v1/ paths answer 401 without `Authorization: Bearer KEY`; /health stays open."""
    for opts, extra in ((), ["--api-key", "k-1"]), (("-e", "VLLM_API_KEY=k-1"), []):
        port = free_port()
        start(*opts, cmd=["vllm", "serve", "org/model", "--port", str(port), *extra])
        wait_for("/health", lambda: http_get(port, "/health"))
        assert (http_get(port, "/health") or (0,))[0] == 200
        assert http_get(port, "/v1/models") == (401, b'{"error":"Unauthorized"}')
        assert http_post(port, "/v1/completions", {"model": "org/model", "prompt": "x"})[0] == 401
        keyed = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer k-1"})
        with urllib.request.urlopen(keyed, timeout=5) as r:
            assert json.loads(r.read())["data"][0]["id"] == "org/model"


def test_no_tokens_hangs_completions_but_stops_at_once(docker: Docker, start: Start) -> None:
    """STANDIN_NO_TOKENS=1: healthy and listed, completions time out; docker stop is still quick."""
    cid, port = serving(start, "-e", "STANDIN_NO_TOKENS=1")
    assert (http_get(port, "/v1/models") or (0,))[0] == 200
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        http_post(port, "/v1/completions", {"prompt": "x"}, timeout=1)
    with pytest.raises(TimeoutError):
        stream_events(port, "/v1/chat/completions", {"messages": [], "stream": True}, timeout=1)
    t0 = time.monotonic()
    docker("stop", "-t", "5", cid)  # with two handlers still hanging
    assert time.monotonic() - t0 < 3
    assert exit_code(docker, cid) == 0


def test_health_503_is_a_dead_engine(docker: Docker, start: Start) -> None:
    """STANDIN_HEALTH_503=1: healthy at first, then /health 503, completions 500, cause logged."""
    cid, port = serving(start, "-e", "STANDIN_HEALTH_503=1")
    assert http_post(port, "/v1/completions", {"prompt": "x"})[0] == 200
    wait_for("/health 503", lambda: (http_get(port, "/health") or (0,))[0] == 503)
    status, raw = http_post(port, "/v1/chat/completions", {"messages": []})
    assert status == 500 and "EngineCore" in json.loads(raw)["message"]
    assert "EngineDeadError" in docker("logs", cid).stderr


def test_engine_error_kills_the_engine_at_the_first_completion(docker: Docker, start: Start) -> None:
    """STANDIN_ENGINE_ERROR=LINE: healthy until a completion; that one gets 500 and the log reads as the
    real CPU build's death: LINE early on stdout, the API server's traceback on stderr, EngineDeadError last."""
    line = "Unsupported CPU attention configuration: head_dim=16"
    cid, port = serving(start, "-e", f"STANDIN_ENGINE_ERROR={line}")
    assert (http_get(port, "/health") or (0,))[0] == 200
    assert http_post(port, "/v1/completions", {"prompt": "x"})[0] == 500
    assert (http_get(port, "/health") or (0,))[0] == 503
    out, err = docker("logs", cid).stdout, docker("logs", cid).stderr
    assert f"] {line}" in out and line not in err
    assert err.splitlines()[-1] == ("(APIServer pid=1) vllm.v1.engine.exceptions.EngineDeadError: EngineCore "
                                    "encountered an issue. See stack trace (above) for the root cause.")
    assert "non-default args: {'model_tag': 'org/model'" in out


CRASHES = {"oom": (1, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate"),
           "cuda": (1, "RuntimeError: CUDA error:"),
           "nccl": (1, "torch.distributed.DistBackendError: NCCL error"),
           "weights": (1, "OSError: org/model does not appear to have a file named config.json"),
           "arg": (2, "vllm: error: unrecognized arguments: --foo"),
           "port": (1, "OSError: [Errno 98] Address already in use")}


def test_crash_kinds_log_the_cause_last(docker: Docker, start: Start) -> None:
    """STANDIN_CRASH=KIND exits at start with vLLM's error for KIND as the last stderr line."""
    started = {kind: start("-e", f"STANDIN_CRASH={kind}", cmd=["vllm", "serve", "org/model"])
               for kind in CRASHES}
    for kind, (code, line) in CRASHES.items():
        assert exit_code(docker, started[kind]) == code, kind
        assert docker("logs", started[kind]).stderr.splitlines()[-1].startswith(line), kind


def test_die_after_exits_1_serving_or_headless(docker: Docker, start: Start) -> None:
    """STANDIN_DIE_AFTER=1: serves (or idles headless), then logs a dead worker and exits 1."""
    cid, port = serving(start, "-e", "STANDIN_DIE_AFTER=1")
    headless = start("-e", "STANDIN_DIE_AFTER=1", cmd=["vllm", "serve", "org/model", "--headless"])
    for c in (cid, headless):
        assert exit_code(docker, c) == 1
        assert "died unexpectedly" in docker("logs", c).stderr.splitlines()[-1]
    assert not port_open(port)
