"""Every shipped recipe renders through the real CLI: `python -m tasks RECIPE --dry-run --json`.

Solo-capable recipes run with --solo; cluster-only ones with -n and RFC 2544 test
addresses (198.18.0.0/15, one per node the recipes/<N>x/ folder names, else 2).
The launch script must pass `bash -n`, and the argv must run `vllm serve <model>`.

Dry-run must work without Docker and must not reach any node: each run gets
DOCKER_HOST pointing at a socket that does not exist, `docker`/`ssh`/`scp`/`rsync`
shims on PATH that only record their arguments, and a sitecustomize that records
(and refuses) every socket connect. Docker queries on this machine are allowed
(explain() asks them and reports "cannot tell"); anything that changes state or
talks to a node is a failure.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = ROOT / "recipes"
RECIPE_FILES = sorted(RECIPES_DIR.rglob("*.yaml"))
READ_ONLY_DOCKER = {"version", "info", "ps", "inspect", "image inspect", "container inspect"}

SITECUSTOMIZE = textwrap.dedent("""\
    import os, socket
    _log = os.environ["RR_TEST_CONNECT_LOG"]
    def _refuse(self, address, *a, **k):
        with open(_log, "a") as fh:
            fh.write(repr(address) + "\\n")
        raise OSError("test: dry-run must not open connections")
    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
""")
SHIM = textwrap.dedent("""\
    #!/bin/sh
    printf '%s\\n' "$(basename "$0") $*" >> "$RR_TEST_EXEC_LOG"
    echo "Cannot connect to the Docker daemon (test shim)" >&2
    exit 1
""")


def node_count(path: Path) -> int:
    folder = re.fullmatch(r"(\d+)x", path.parent.name)
    return int(folder.group(1)) if folder else 2


def test_addresses(n: int) -> str:
    return ",".join(f"198.18.0.{11 + i}" for i in range(n))


test_addresses.__test__ = False  # a helper, not a test


def recipe_id(path: Path) -> str:
    return path.relative_to(RECIPES_DIR).with_suffix("").as_posix()


@dataclass
class Rendered:
    args: list[str]
    proc: subprocess.CompletedProcess[str]
    execs: list[str]
    connects: list[str]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("dry-run")
    bin_dir, site = base / "bin", base / "site"
    bin_dir.mkdir()
    site.mkdir()
    for name in ("docker", "ssh", "scp", "rsync"):
        (bin_dir / name).write_text(SHIM)
        (bin_dir / name).chmod(0o755)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"base": base, "bin": bin_dir, "site": site}


def run_cli(sandbox: dict[str, Path], key: str, *args: str) -> Rendered:
    logs = sandbox["base"] / "logs"
    logs.mkdir(exist_ok=True)
    exec_log, connect_log = logs / f"{key}.exec", logs / f"{key}.connect"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "RUNRECIPE_"))}
    env.update({
        "RUNRECIPE_HOME": str(ROOT),
        "DOCKER_HOST": f"unix://{sandbox['base']}/no-docker.sock",
        "PATH": f"{sandbox['bin']}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": os.pathsep.join([str(sandbox["site"]), str(ROOT)]),
        "RR_TEST_EXEC_LOG": str(exec_log),
        "RR_TEST_CONNECT_LOG": str(connect_log),
    })
    proc = subprocess.run([sys.executable, "-m", "tasks", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    read = lambda p: p.read_text().splitlines() if p.exists() else []  # noqa: E731
    return Rendered(list(args), proc, read(exec_log), read(connect_log))


def dry_run_args(path: Path) -> list[str]:
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    mode = ["-n", test_addresses(node_count(path))] if recipe.get("cluster_only") else ["--solo"]
    return [recipe_id(path), *mode, "--dry-run", "--json"]


@pytest.fixture(scope="module")
def rendered(sandbox: dict[str, Path]) -> dict[Path, Rendered]:
    """All dry-runs at once (a few in parallel): each is a separate python start-up."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {p: pool.submit(run_cli, sandbox, recipe_id(p).replace("/", "_"), *dry_run_args(p))
                   for p in RECIPE_FILES}
        return {p: f.result() for p, f in futures.items()}


def test_catalogue_is_not_empty() -> None:
    assert len(RECIPE_FILES) >= 15


@pytest.mark.parametrize("path", RECIPE_FILES, ids=recipe_id)
def test_dry_run_renders_valid_script(path: Path, rendered: dict[Path, Rendered]) -> None:
    result = rendered[path]
    proc = result.proc
    assert proc.returncode == 0, f"run-recipe {' '.join(result.args)} failed:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    plan = json.loads(proc.stdout)
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))

    assert plan["recipe"] == recipe_id(path)
    if recipe.get("cluster_only"):
        assert plan["mode"] == "cluster"
        assert plan["nodes"] == test_addresses(node_count(path)).split(",")
    else:
        assert plan["mode"] == "solo" and len(plan["nodes"]) == 1

    argv = plan["argv"]
    assert "vllm" in argv and "serve" in argv, argv
    assert argv[argv.index("serve") - 1] == "vllm"
    if recipe.get("model"):
        assert recipe["model"] in argv, f"{recipe['model']} not in {argv}"
    if plan["mode"] == "solo":
        assert "--distributed-executor-backend" not in " ".join(argv), "solo runs need no Ray backend"

    check = subprocess.run(["bash", "-n"], input=plan["script"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, f"bash -n:\n{check.stderr}\n--- script ---\n{plan['script']}"
    assert plan["script"].startswith("#!/usr/bin/env bash\n")

    assert plan["tasks"] and not any(t["status"].startswith("up to date") for t in plan["tasks"]), plan["tasks"]
    if plan["mode"] == "cluster":  # each node's script: the head first, workers joining it
        scripts = plan["node_scripts"]
        assert [s["node"] for s in scripts] == plan["nodes"] and [s["rank"] for s in scripts] == list(range(len(scripts)))
        for s in scripts:
            check = subprocess.run(["bash", "-n"], input=s["script"], capture_output=True, text=True, timeout=30)
            assert check.returncode == 0, f"bash -n {s['node']}:\n{check.stderr}\n--- script ---\n{s['script']}"
            assert f"export VLLM_HOST_IP={s['node']}\n" in s["script"]
            if plan["backend"] == "ray":
                assert ("ray start --head" in s["script"]) == (s["rank"] == 0)
            else:
                assert f"--node-rank {s['rank']} --master-addr {plan['nodes'][0]}" in s["script"]


@pytest.mark.parametrize("path", RECIPE_FILES, ids=recipe_id)
def test_dry_run_touches_no_node(path: Path, rendered: dict[Path, Rendered]) -> None:
    result = rendered[path]
    assert result.connects == [], f"dry-run opened connections: {result.connects}"
    tools = {line.split()[0] for line in result.execs}
    assert tools <= {"docker"}, f"dry-run ran {tools - {'docker'}}: {result.execs}"
    for line in result.execs:
        words = line.split()[1:]
        sub = " ".join(words[:2]) if words[:1] in (["image"], ["container"]) else words[0]
        assert sub in READ_ONLY_DOCKER, f"dry-run ran a docker command that is not a query: {line}"
        assert not any(w in ("-H", "--host", "--context") for w in words), line


def test_list_json_lists_every_recipe(sandbox: dict[str, Path]) -> None:
    result = run_cli(sandbox, "list", "--list", "--json")
    assert result.proc.returncode == 0, result.proc.stderr
    rows = json.loads(result.proc.stdout)
    assert sorted(r["id"] for r in rows) == sorted(recipe_id(p) for p in RECIPE_FILES)
    broken = [r for r in rows if "error" in r]
    assert not broken, broken
    for row in rows:
        recipe = yaml.safe_load((RECIPES_DIR / f"{row['id']}.yaml").read_text(encoding="utf-8"))
        assert row["model"] == recipe.get("model", "")
        assert row["mode"] == ("cluster" if recipe.get("cluster_only") else
                               "solo" if recipe.get("solo_only") else "either")
    assert result.execs == [] and result.connects == []
