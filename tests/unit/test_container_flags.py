"""The origin's container flags: parsed and refused as the origin does, turned into docker arguments,
secrets kept out of every argv, and shown by --dry-run per node without any network call."""
from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Iterator

import pytest

from tasks.cli import main as cli
from tasks.ops import container_create
from tasks import container_flags
from tasks.ops import launch
from tasks.container_flags import DockerSide, Limits
from tasks.errors import ConfigError
from tasks.plan import Options, make_plan
from tasks.recipe import load_named

SECRET = "hf_unit_secret_value_42"
RECIPE = "recipe_version: '1'\nname: Flags\nmodel: org/m\ncontainer: img\ncommand: vllm serve org/m --port {port}\ndefaults:\n  port: 8000\n"
NODES = ["-n", "10.9.9.1,10.9.9.2"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "flags.yaml").write_text(RECIPE)
    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def plan_for(home: Path, side: DockerSide, **options: object):
    return make_plan(load_named("flags", home / "recipes"), Options(solo=True, docker=side, **options))


@pytest.mark.parametrize("flags, message", [
    (["--pids-limit", "10"], "--pids-limit set(s) a limit of a non-privileged container: add --non-privileged"),
    (["--non-privileged", "--mem-limit-gb", "20", "--mem-swap-limit-gb", "10"], "--mem-swap-limit-gb 10 is below"),
    (["--earlyoom", "--keep-entrypoint"], "--earlyoom replaces the container's entry process"),
    (["--earlyoom-args=-M 1,1"], "--earlyoom-args is for --earlyoom"),
    (["--earlyoom", "--earlyoom-args=-m 5; rm -rf /"], "only plain arguments"),
    (["-e", f"1X_TOKEN={SECRET}"], "-e/--env '1X_TOKEN=...': '1X_TOKEN' is not a variable name"),
    (["-e", "NOT_SET_ANYWHERE_RR"], "NOT_SET_ANYWHERE_RR is not set in this shell"),
    (["-p", "8000"], "-p/--publish '8000' is not HOST:CONTAINER"),
    (["-p", "9000:9001"], "no -p publishes the server's port 8000: add -p 8000:8000"),
    (["-v", "/only-one-side"], "-v/--volume '/only-one-side' is not LOCAL:CONTAINER"),
    ([*NODES, "-p", "8000:8000"], "-p/--publish is for a solo run"),
])
def test_bad_container_flags_are_refused_with_the_fix(home: Path, capsys: pytest.CaptureFixture[str],
                                                     flags: list[str], message: str) -> None:
    code, _, err = run(capsys, "flags", "--dry-run", *flags)
    assert code == 1 and message in err, err
    assert "Traceback" not in err and SECRET not in err


def test_typed_limits_are_usage_errors(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "flags", "--dry-run", "--non-privileged", "--shm-size-gb", "0")
    assert code == 2 and "--shm-size-gb: '0' is not a whole number" in err


def test_limits_have_the_origins_defaults_and_follow_the_memory_limit() -> None:
    assert container_flags.make(privileged=False).limits == Limits(110, 120, 4096, 64)
    side = container_flags.make(privileged=False, limits={"--mem-limit-gb": 50, "--pids-limit": 99})
    assert container_flags.privilege_args(side, False, infiniband=False) == [
        "--cap-add", "IPC_LOCK", "--shm-size", "64g", "--memory", "50g", "--memory-swap", "60g", "--pids-limit", "99"]
    assert container_flags.privilege_args(side, True, infiniband=True) == ["--privileged", "--ipc", "host"]


def test_entry_is_bash_on_the_script_unless_kept_or_guarded_by_earlyoom() -> None:
    script = "/runrecipe/launch.sh"
    assert container_flags.entry_args(DockerSide(), "img", script) == ["--entrypoint", "bash", "img", script]
    assert container_flags.entry_args(DockerSide(keep_entrypoint=True), "img", script) == ["img", "bash", script]
    guarded = container_flags.entry_args(container_flags.make(earlyoom=True, earlyoom_args="-M '1,2' -s 5"), "img",
                                         script)
    assert guarded[:5] == ["-e", f"RUNRECIPE_SCRIPT={script}", "--entrypoint", "bash", "img"]
    assert guarded[-4:] == ["-M", "1,2", "-s", "5"]
    assert container_flags.make(earlyoom=True).earlyoom == ("-M", "524288,102400", "-s", "100", "-r", "60")


def test_j_sets_the_origins_four_variables_after_e() -> None:
    side = container_flags.make(env=["MAX_JOBS=2", "A=b"], jobs=8)
    assert container_flags.public_env(side) == {"MAX_JOBS": "8", "A": "b", "CMAKE_BUILD_PARALLEL_LEVEL": "8",
                                                "NINJAFLAGS": "-j8", "MAKEFLAGS": "-j8"}


def test_secret_env_is_in_no_argv_and_its_value_changes_the_hash(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_SHELL_TOKEN", SECRET + "x")
    side = container_flags.make(env=[f"HF_TOKEN={SECRET}", "FROM_SHELL_TOKEN", "PLAIN=1"], volumes=["/a:/b"])
    plan = plan_for(home, side)
    args = launch.create_args(plan, "sha256:abc", gpus=False, offline=False)
    argv = container_create.create_argv(container_flags.cache_mounts(side), args)
    assert SECRET not in json.dumps(argv) + plan.script
    assert ["-e", "PLAIN=1"] == args[args.index("PLAIN=1") - 1:args.index("PLAIN=1") + 1]
    assert container_flags.env_file_text(side) == f"HF_TOKEN={SECRET}\nFROM_SHELL_TOKEN={SECRET}x\n"
    assert argv[4:13] == ["4", ".cache/vllm", "/root/.cache/vllm", ".cache/flashinfer", "/root/.cache/flashinfer",
                          ".triton", "/root/.triton", ".tilelang", "/root/.tilelang"]
    assert "/root/.triton" not in args  # the caches are not in what the hash covers
    digest = launch.inputs_hash(args, plan.script, "", container_flags.secrets_digest(side))
    other = container_flags.make(env=[f"HF_TOKEN={SECRET}!", "FROM_SHELL_TOKEN", "PLAIN=1"], volumes=["/a:/b"])
    assert digest != launch.inputs_hash(args, plan.script, "", container_flags.secrets_digest(other))
    assert launch.inputs_hash(args, plan.script, "") == launch.inputs_hash(args, plan.script, "", "")


def test_publish_leaves_the_host_network_and_moves_the_endpoint(home: Path) -> None:
    side = container_flags.make(publish=["127.0.0.1:9000:8000", "7000:7000/udp"])
    plan = plan_for(home, side)
    assert plan.endpoint == "http://localhost:9000/v1" and launch.base_url(plan) == "http://127.0.0.1:9000"
    args = launch.create_args(plan, "img", gpus=False, offline=False)
    assert "--network" not in args and args[args.index("-p") + 1] == "127.0.0.1:9000:8000"


@pytest.fixture
def hub() -> Iterator[list[str]]:
    """A loopback 'hub' that records every request it gets."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.path)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield seen, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_dry_run_shows_each_nodes_docker_side_and_asks_no_hub(home: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch, hub) -> None:
    seen, url = hub
    monkeypatch.setenv("HF_ENDPOINT", url)
    flags = ["--setup", "-e", f"HF_TOKEN={SECRET}", "-e", "PLAIN=1", "-v", "/data:/data:ro", "--nccl-debug", "INFO",
             "--non-privileged", "--pids-limit", "77"]
    code, out, err = run(capsys, "flags", "--dry-run", "--solo", *flags)
    assert code == 0, err
    assert "revision 'main' of org/m left unresolved: --dry-run asks no hub" in out
    assert "env:        HF_TOKEN=**** (env file, 0600)" in out and "NCCL_DEBUG: INFO" in out
    assert "mount:      ~/.cache/vllm:/root/.cache/vllm" in out and "pids 77" in out
    code, out, err = run(capsys, "flags", "--dry-run", "--json", *NODES, *flags, "--no-cache-dirs")
    assert code == 0, err
    shown = json.loads(out)
    assert [(n["node"], n["role"], n["rank"]) for n in shown["node_scripts"]] == [
        ("10.9.9.1", "head", 0), ("10.9.9.2", "worker", 1)]
    docker = shown["node_scripts"][1]["docker"]
    assert docker["env"]["HF_TOKEN"] == "****" and docker["env"]["PLAIN"] == "1" and docker["env_file"] == ["HF_TOKEN"]
    assert docker["mounts"][-1] == "/data:/data:ro" and not any(".triton" in m for m in docker["mounts"])
    assert docker["limits"]["pids"] == 77 and docker["network"] == "host" and docker["nccl_debug"] == "INFO"
    assert SECRET not in out + err and seen == []
