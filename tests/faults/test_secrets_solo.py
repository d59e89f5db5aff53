"""Secrets, solo, on the real test dockerd: HF_TOKEN and secret-named .env keys never show up in output,
rendered scripts, docker inspect (Env, Cmd, Labels) or any host process's argv; --show-env masks them."""
from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid

from .conftest import Project, free_port

MARK = "rrsecret" + uuid.uuid4().hex


def test_secrets_never_leak(project: Project, standin_tag: str) -> None:
    port = free_port()
    env_file = project.root / ".env"
    env_file.write_text(env_file.read_text() + f"CONTAINER_HF_TOKEN={MARK}1\nMY_API_KEY={MARK}2\n"
                        f"DB_PASSWORD={MARK}3\nPLAIN_SETTING=visible\n")
    project.env["HF_TOKEN"] = MARK + "0"
    project.recipe("sec", f"""\
        recipe_version: "1"
        name: Secrets
        container: {standin_tag}
        defaults: {{port: {port}}}
        command: vllm serve org/m --port {{port}} --host 127.0.0.1
        """)
    outputs: list[str] = []

    shown = project.cli("--show-env")
    assert shown.returncode == 0, shown.stderr
    outputs.append(shown.stdout + shown.stderr)
    for key in ("CONTAINER_HF_TOKEN", "MY_API_KEY", "DB_PASSWORD"):
        assert f"{key}=****" in shown.stdout
    assert "PLAIN_SETTING=visible" in shown.stdout

    for args in (("sec", "--dry-run"), ("sec", "--dry-run", "--json")):
        res = project.cli(*args)
        assert res.returncode == 0, res.stderr
        outputs.append(res.stdout + res.stderr)

    # A real launch, with ps sampled on the host the whole time.
    argvs: list[str] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            argvs.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        res = project.cli("sec", "-d", "--ready-timeout", "30")
    finally:
        done.set()
        sampler.join()
    assert res.returncode == 0, res.stderr
    outputs.append(res.stdout + res.stderr)
    assert len(argvs) > 3

    (c,) = project.containers("sec")
    for args in (("status", "--json"), ("status",), ("logs", "sec")):
        res = project.cli(*args)
        assert res.returncode == 0, res.stderr
        outputs.append(res.stdout + res.stderr)
    assert json.loads(project.cli("status", "--json").stdout)

    script = project.docker("exec", c["Id"], "cat", "/runrecipe/launch.sh").stdout
    env_in = project.docker("exec", c["Id"], "sh", "-c", "cat /proc/1/environ; cat /proc/*/cmdline").stdout
    inspect = json.dumps({k: c["Config"].get(k) for k in ("Env", "Cmd", "Labels", "Entrypoint")})
    state = "".join(p.read_text(errors="replace") for p in (project.root / ".runrecipe").rglob("*")
                    if p.is_file() and p.stat().st_size < 10_000_000)

    places = {"cli output": "\n".join(outputs), "ps during the run": "\n".join(argvs), "launch.sh": script,
              "container environ/argv": env_in, "docker inspect": inspect, "state dir": state}
    leaked = [where for where, text in places.items() if MARK in text]
    assert not leaked, f"the marker leaked into: {leaked}"
