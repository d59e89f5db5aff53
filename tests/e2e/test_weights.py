"""Weights end to end: the real huggingface_hub client against the local test hub, through the CLI,
into a container that checks (offline) that it got exactly the verified snapshot."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.hub import LocalHub, fake_safetensors

from .conftest import Project, free_port, get_json


def files(version: str = "v1") -> dict[str, bytes]:
    return {"config.json": json.dumps({"model_type": "standin", "version": version}).encode(),
            "tokenizer.json": b'{"tokens": []}',
            "model-00001-of-00002.safetensors": fake_safetensors(40_000, seed=1),
            "model-00002-of-00002.safetensors": fake_safetensors(40_000, seed=2)}


@pytest.fixture
def hub(project: Project) -> LocalHub:
    with LocalHub() as h:
        project.env["HF_ENDPOINT"] = h.endpoint
        yield h


def recipe(project: Project, rid: str, port: int, model: str = "org/model", extra: str = "",
           revision: str = "", command_tail: str = "") -> None:
    project.recipe(rid, f"""\
        recipe_version: "1"
        name: Weights {rid}
        container: rr-e2e-{rid}
        model: {model}
        {f"revision: '{revision}'" if revision else ""}
        {extra}
        defaults:
          port: {port}
          host: 127.0.0.1
        env:
          STANDIN_CHECK_WEIGHTS: "1"
        command: |
          vllm serve {model} --port {{port}} --host {{host}} {command_tail}
        """)


def executed(output: str) -> list[str]:
    return [ln.split()[1] for ln in output.splitlines() if ln.startswith(".  ")]


def gets(hub: LocalHub) -> list[str]:
    return sorted(p.split("/resolve/")[1].split("/", 1)[1] for m, p in hub.requests if m == "GET" and "/resolve/" in p)


def test_setup_downloads_verifies_and_launches_offline_then_reruns_with_one_request(
        project: Project, hub: LocalHub) -> None:
    sha1 = hub.create_repo("org/model", files())
    port = free_port()
    recipe(project, "wts", port)
    first = project.cli("wts", "--setup", "-d")
    assert first.returncode == 0, first.stdout + first.stderr
    assert executed(first.stdout) == ["build:rr-e2e-wts", "check:wts", "download:org/model@main", "launch:wts"]
    assert sorted(gets(hub)) == sorted(files())
    (c,) = project.containers("wts")
    logs = project.docker("logs", c["Id"]).stdout
    assert f"standin-vllm: weights ok {sha1}" in logs  # offline, from the mounted cache
    assert c["Config"]["Labels"]["runrecipe.weights"] == f"org/model@{sha1}"
    assert "HF_HUB_OFFLINE=1" in c["Config"]["Env"]
    assert get_json(f"http://127.0.0.1:{port}/v1/models")["data"][0]["id"] == "org/model"

    before = len(hub.requests)
    again = project.cli("wts", "--setup", "-d")
    assert again.returncode == 0 and executed(again.stdout) == []
    assert len(hub.requests) - before == 1  # one revision lookup, no file traffic

    # A new commit: only the changed file is fetched, and the server moves to the new revision.
    sha2 = hub.commit("org/model", files={"config.json": files("v2")["config.json"]})
    third = project.cli("wts", "--setup", "-d")
    assert third.returncode == 0, third.stderr
    assert executed(third.stdout) == ["download:org/model@main", "launch:wts"]
    new_gets = [p for m, p in hub.requests[before:] if m == "GET" and "/resolve/" in p]
    assert [p.rsplit("/", 1)[1] for p in new_gets] == ["config.json"]
    (c2,) = project.containers("wts")
    assert f"standin-vllm: weights ok {sha2}" in project.docker("logs", c2["Id"]).stdout
    assert c2["Config"]["Labels"]["runrecipe.weights"] == f"org/model@{sha2}"


def test_commit_pin_makes_no_request_once_present(project: Project, hub: LocalHub) -> None:
    sha = hub.create_repo("org/pinned", files())
    recipe(project, "pin", free_port(), model="org/pinned", revision=sha)
    assert project.cli("pin", "--setup", "-d").returncode == 0
    (c,) = project.containers("pin")
    assert project.argv_in(c["Id"])[-2:] == ["--revision", sha]
    before = len(hub.requests)
    again = project.cli("pin", "--setup", "-d")
    assert again.returncode == 0 and executed(again.stdout) == []
    assert len(hub.requests) == before


def test_draft_model_downloaded_local_path_model_is_not(project: Project, hub: LocalHub,
                                                        tmp_path: Path) -> None:
    hub.create_repo("org/main", files())
    hub.create_repo("org/draft", {"config.json": b"{}", "draft.safetensors": fake_safetensors(1000)})
    recipe(project, "spec", free_port(), model="org/main",
           command_tail="--speculative-config '{{\"method\": \"eagle\", \"model\": \"org/draft\", "
                        "\"num_speculative_tokens\": 2}}'")
    dry = project.cli("spec", "--setup", "--dry-run")
    assert "weights:   org/draft@main (named by the command)" in dry.stdout
    res = project.cli("spec", "--download-only")
    assert res.returncode == 0, res.stderr
    assert executed(res.stdout) == ["download:org/main@main", "download:org/draft@main"]
    assert (Path(project.env["HF_HOME"]) / "hub" / "models--org--draft" / "snapshots").is_dir()

    local = tmp_path / "local-model"
    local.mkdir()
    (local / "config.json").write_text("{}")
    before = len(hub.requests)
    recipe(project, "local", free_port(), model=str(local))
    res = project.cli("local", "--setup", "-d")
    assert res.returncode == 0, res.stderr
    assert "download:" not in res.stdout and len(hub.requests) == before
    (c,) = project.containers("local")
    assert project.docker("exec", c["Id"], "cat", f"{local}/config.json").stdout == "{}"


@pytest.mark.parametrize("case", ["gated", "unknown", "offline", "disk"])
def test_weights_errors_are_clear_and_never_show_the_token(project: Project, hub: LocalHub, case: str) -> None:
    marker = "hf_secret_marker_0123456789"
    project.env["HF_TOKEN"] = marker
    hub.create_repo("org/gated", files(), gated=True)
    hub.create_repo("org/ok", files())
    model = {"gated": "org/gated", "unknown": "org/nope", "offline": "org/ok", "disk": "org/ok"}[case]
    if case == "offline":
        project.env["HF_HUB_OFFLINE"] = "1"
    if case == "disk":  # a 1 MiB tmpfs as the cache: the weights do not fit
        mnt = Path(project.env["HF_HOME"]) / "hub"
        mnt.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        recipe(project, f"err-{case}", free_port(), model=model)
        res = project.cli(f"err-{case}", "--download-only")
    finally:
        if case == "disk":
            subprocess.run(["umount", str(mnt)], check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "Traceback" not in out and marker not in out
    expected = {"gated": "HF_TOKEN", "unknown": "not found", "offline": "offline", "disk": "free"}[case]
    assert expected in out, out


def test_kill_mid_download_then_rerun_completes(project: Project, hub: LocalHub) -> None:
    hub.create_repo("org/big", {"config.json": b"{}", "w.safetensors": fake_safetensors(2_000_000)})
    recipe(project, "kill", free_port(), model="org/big")
    reached = hub.cut_after("w.safetensors", 1_000_000, then="hang")
    proc = subprocess.Popen([sys.executable, "-m", "tasks", "kill", "--download-only"], cwd=project.root,
                            env=project.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert reached.wait(60)
    dry = project.cli("kill", "--download-only", "--dry-run", "--json")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    status = {t["task"]: t["status"] for t in json.loads(dry.stdout)["tasks"]}
    assert status["download:org/big@main"].startswith("would run")
    done = project.cli("kill", "--download-only")
    assert done.returncode == 0, done.stderr
    assert executed(done.stdout) == ["download:org/big@main"]
    assert executed(project.cli("kill", "--download-only").stdout) == []


def test_verify_detects_a_flipped_byte_and_fetches_it_again(project: Project, hub: LocalHub) -> None:
    hub.create_repo("org/flip", files())
    recipe(project, "flip", free_port(), model="org/flip")
    assert project.cli("flip", "--download-only").returncode == 0
    blob = (Path(project.env["HF_HOME"]) / "hub" / "models--org--flip" / "snapshots").glob(
        "*/model-00001-of-00002.safetensors")
    target = Path(os.path.realpath(next(blob)))
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    assert executed(project.cli("flip", "--download-only").stdout) == []  # size check alone cannot see it
    res = project.cli("flip", "--download-only", "--verify")
    assert res.returncode == 0, res.stderr
    assert "do not match their hash (model-00001-of-00002.safetensors)" in res.stderr
    assert executed(res.stdout) == ["download:org/flip@main"]
    assert executed(project.cli("flip", "--download-only", "--verify").stdout) == []


def test_list_shows_nodes_needed_and_cached_size(project: Project, hub: LocalHub) -> None:
    hub.create_repo("org/listed", files())
    recipe(project, "listed", free_port(), model="org/listed")
    project.recipe("big", "recipe_version: '1'\nname: Big\ncontainer: c\ncluster_only: true\ndefaults: {tp: 4}\n"
                          "command: vllm serve org/x -tp {tp}\n")
    before = {r["id"]: r for r in json.loads(project.cli("--list", "--json").stdout)}
    assert before["listed"]["cached_bytes"] is None and before["big"]["nodes"] == 4
    assert project.cli("listed", "--download-only").returncode == 0
    after = {r["id"]: r for r in json.loads(project.cli("--list", "--json").stdout)}
    assert after["listed"]["cached_bytes"] == sum(len(v) for v in files().values())
    assert after["listed"]["nodes"] == 1
