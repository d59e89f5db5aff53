"""Stack files: every bad field is an error with file and line; ports, names and master ports are assigned
and checked per node; memory fractions add up per node; the weights-fit rule refuses with numbers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tasks.stacks import budget
from tasks.stacks import gateway
from tasks.facts import hub_cache
from tasks.errors import ConfigError, ModeError, RunRecipeError
from tasks.plan import Options
from tasks.stacks.files import find, load
from tasks.stacks.plan import make_stack_plan

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "a" * 40
RECIPES = {
    "small": """\
        recipe_version: "1"
        name: Small
        container: rr-stack
        model: org/small
        defaults: {port: 8000, host: 0.0.0.0, gpu_memory_utilization: 0.3}
        command: vllm serve org/small --port {port} --host {host} --gpu-memory-utilization {gpu_memory_utilization}
        """,
    "fixed": """\
        recipe_version: "1"
        name: Fixed
        container: rr-stack
        command: vllm serve org/fixed --served-model-name fixed --port 8000
        """,
    "big": """\
        recipe_version: "1"
        name: Big
        container: rr-stack
        cluster_only: true
        model: org/big
        defaults: {port: 8000, tensor_parallel: 2}
        command: vllm serve org/big --port {port} -tp {tensor_parallel}
        """,
    "alone": """\
        recipe_version: "1"
        name: Alone
        container: rr-stack
        solo_only: true
        command: vllm serve org/alone --port {port}
        defaults: {port: 8000}
        """,
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, body in RECIPES.items():
        (tmp_path / "recipes").mkdir(exist_ok=True)
        (tmp_path / "recipes" / f"{name}.yaml").write_text(textwrap.dedent(body))
    (tmp_path / "stacks").mkdir()
    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    monkeypatch.setenv("RUNRECIPE_DOCKER_DIR", str(tmp_path / "docker"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


def write(project: Path, body: str, name: str = "s") -> Path:
    path = project / "stacks" / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def plan(project: Path, body: str):
    return make_stack_plan(load(write(project, body)), Options())


def refused(project: Path, body: str, kind: type = ConfigError) -> RunRecipeError:
    with pytest.raises(kind) as info:
        plan(project, body)
    return info.value


TWO = """\
    name: duo
    models:
      - recipe: small
        gpu_mem: 0.4
      - recipe: fixed
        gpu_mem: 0.5
    gateway: {port: 4000, api_key_env: DUO_KEY}
    """


def test_two_entries_get_ports_names_and_start_by_descending_memory(project: Path) -> None:
    sp = plan(project, TWO)
    assert [p.plan.container_name for p in sp.entries] == ["duo-fixed", "duo-small"]  # 0.5 before 0.4
    assert {p.plan.container_name: p.plan.port for p in sp.entries} == {"duo-small": 8000, "duo-fixed": 8001}
    small = next(p.plan for p in sp.entries if p.plan.container_name == "duo-small")
    assert small.recipe.id == "duo//duo-small" and small.options.stack == "duo"
    assert "--port 8000" in small.script and "--gpu-memory-utilization 0.4" in small.script
    fixed = next(p.plan for p in sp.entries if p.plan.container_name == "duo-fixed")
    # no placeholder: extra args; behind the gateway an entry on the head listens on loopback only
    assert fixed.argv[-6:] == ("--port", "8001", "--gpu-memory-utilization", "0.5", "--host", "127.0.0.1")
    assert "--host 127.0.0.1" in small.script and small.loopback_only and fixed.loopback_only
    assert not [w for w in sp.warnings if "--port" in w]
    gw = gateway.plan_gateway(sp)
    assert [(r.model, r.api_base) for r in gw.routes] == [("fixed", "http://127.0.0.1:8001/v1"),
                                                          ("org/small", "http://127.0.0.1:8000/v1")]
    assert '"hosted_vllm/fixed"' in gw.config and '"os.environ/DUO_KEY"' in gw.config


def test_stack_by_name_or_path(project: Path) -> None:
    path = write(project, TWO, "duo")
    assert find("duo") == path.resolve() and find(str(path)) == path.resolve()
    with pytest.raises(ConfigError, match="stacks there: duo"):
        find("nope")


@pytest.mark.parametrize("body, line, words", [
    ("name: x\nmodels: []\n", 2, "non-empty list"),
    ("name: 'a b'\nmodels: [{recipe: small}]\n", 1, "is not a name"),
    ("models: [{recipe: small}]\n", 1, "name: missing"),
    ("name: x\nmodels:\n  - recipe: small\n    prot: 9\n", 4, "did you mean 'port'"),
    ("name: x\nmodels:\n  - recipe: small\n    port: 70000\n", 4, "not a port"),
    ("name: x\nmodels:\n  - recipe: small\n    gpu_mem: 1.5\n", 4, "not a fraction"),
    ("name: x\nmodels:\n  - recipe: small\n    gpu_mem: yes\n", 4, "not a fraction"),
    ("name: x\nmodels:\n  - recipe: small\n    on: 'a b'\n", 4, "not a hostname"),
    ("name: x\nmodels:\n  - recipe: small\n    overrides: [1]\n", 4, "mapping of parameters"),
    ("name: x\nmodels:\n  - recipe: small\n    overrides: {1x: 2}\n", 4, "not a parameter name"),
    ("name: x\nmodels:\n  - recipe: small\n    extra_args: {a: 1}\n", 4, "list of text"),
    ("name: x\nmodels:\n  - recipe: small\n    name: 'no/slash'\n", 4, "is not a name"),
    ("name: x\nmodels:\n  - recipe: nothere\n", 3, "nothere"),
    ("name: x\nmodels:\n  - 7\n", 3, "must be a mapping"),
    ("name: x\nmodels: [{recipe: small}]\ngateway: {api_key_env: 'sk-123'}\n", 3, "not an environment variable"),
    ("name: x\nmodels: [{recipe: small}]\ngateway: {port: 0}\n", 3, "not a port"),
    ("name: x\nmodels: [{recipe: small}]\ngateway: 4000\n", 3, "must be a mapping"),
    ("name: x\nmodels: [{recipe: small\n", 3, "YAML syntax error"),
    ("name: x\nnodes: [a, a]\nmodels: [{recipe: small}]\n", 2, "listed twice"),
])
def test_every_bad_field_names_file_and_line(project: Path, body: str, line: int, words: str) -> None:
    exc = refused(project, body)
    path = str(project / "stacks" / "s.yaml")
    assert str(exc).startswith(f"{path}, line {line}: "), str(exc)
    assert exc.line == line, (str(exc), exc.line)
    assert words in str(exc)


def test_ports_names_and_master_ports_clash_per_node(project: Path) -> None:
    exc = refused(project, """\
        name: x
        models:
          - {recipe: small, port: 9000, gpu_mem: 0.2}
          - {recipe: fixed, port: 9000, gpu_mem: 0.2}
        """)
    assert "port 9000 on localhost is taken twice" in str(exc) and exc.line == 4
    exc = refused(project, """\
        name: x
        models:
          - {recipe: small, name: same, gpu_mem: 0.2}
          - {recipe: fixed, name: same, gpu_mem: 0.2}
        """)
    assert "'same' is used by another entry" in str(exc) and exc.line == 4
    exc = refused(project, "name: x\nmodels: [{recipe: small, port: 4000}]\ngateway: {port: 4000}\n")
    assert "the gateway and" in str(exc)
    sp = plan(project, """\
        name: x
        nodes: 198.18.0.11,198.18.0.12,198.18.0.13
        models:
          - {recipe: big, on: all, gpu_mem: 0.3}
          - {recipe: big, on: [198.18.0.11, 198.18.0.12], gpu_mem: 0.3}
          - {recipe: small, gpu_mem: 0.3}
        """)
    masters = [p.plan.options.master_port for p in sp.entries if p.plan.mode == "cluster"]
    assert masters == [29501, 29502]
    assert [p.plan.port for p in sp.entries] == [8000, 8001, 8002]
    assert [p.plan.container_name for p in sp.entries] == ["x-big", "x-big-2", "x-small"]


def test_over_budget_fractions_are_refused_with_the_numbers_per_node(project: Path) -> None:
    exc = refused(project, """\
        name: x
        nodes: 198.18.0.11,198.18.0.12
        models:
          - {recipe: big, on: all, gpu_mem: 0.6}
          - {recipe: small, gpu_mem: 0.5}
        """)
    assert "198.18.0.11: x-big 0.6 + x-small 0.5 = 1.10" in str(exc)
    assert "198.18.0.12" not in str(exc).split("more than 1.0")[1]  # 0.6 there: fine
    assert "Nothing was started" in str(exc)


def test_a_recipe_default_counts_and_vllms_default_when_none(project: Path) -> None:
    exc = refused(project, "name: x\nmodels: [{recipe: small}, {recipe: fixed}]\n")
    assert "x-small 0.3 + x-fixed 0.9 = 1.20" in str(exc)


def test_cluster_only_on_one_node_and_solo_only_on_several(project: Path) -> None:
    exc = refused(project, "name: x\nmodels: [{recipe: big}]\n", ModeError)
    assert "cluster_only" in str(exc) and "line 2" in str(exc)
    exc = refused(project, "name: x\nnodes: [198.18.0.11, 198.18.0.12]\nmodels:\n  - {recipe: alone, on: all}\n",
                  ModeError)
    assert "solo_only" in str(exc) and exc.line == 4


def test_on_names_stack_nodes_only_and_the_head_first(project: Path) -> None:
    exc = refused(project, "name: x\nnodes: [198.18.0.11, 198.18.0.12]\nmodels:\n  - {recipe: small, on: [10.0.0.9]}\n")
    assert "10.0.0.9 is not a node of the stack" in str(exc) and exc.line == 4
    exc = refused(project, "name: x\nnodes: [198.18.0.11, 198.18.0.12, 198.18.0.13]\nmodels:\n"
                           "  - {recipe: big, on: [198.18.0.12, 198.18.0.13]}\n")
    assert "head" in str(exc) and exc.line == 4


def test_a_solo_entry_on_a_worker_is_served_there_and_copied_through_the_head(project: Path) -> None:
    sp = plan(project, "name: x\nnodes: [198.18.0.11, 198.18.0.12]\nmodels:\n"
                       "  - {recipe: small, on: [198.18.0.12], gpu_mem: 0.5}\n  - {recipe: fixed, gpu_mem: 0.4}\n")
    worker, head = sp.entries
    assert worker.plan.mode == "solo" and [n.target for n in worker.plan.nodes] == ["198.18.0.12"]
    assert worker.plan.endpoint == "http://198.18.0.12:8000/v1"
    carrier = worker.carrier(sp.nodes[0])
    assert carrier.mode == "cluster" and [n.target for n in carrier.nodes] == ["198.18.0.11", "198.18.0.12"]
    assert head.carrier(sp.nodes[0]) is None and head.plan.nodes[0].local
    gw = gateway.plan_gateway(make_stack_plan(load(write(project, "name: x\nnodes: [198.18.0.11, 198.18.0.12]\n"
                                                       "models: [{recipe: small, on: [198.18.0.12]}]\ngateway: {}\n")),
                                              Options()))
    assert gw.routes[0].api_base == "http://198.18.0.12:8000/v1"


def test_nodes_come_from_the_env_file_when_the_stack_has_none(project: Path) -> None:
    (project / ".env").write_text("CLUSTER_NODES=198.18.0.11,198.18.0.12\n")
    sp = plan(project, "name: x\nmodels:\n  - {recipe: big, on: all, gpu_mem: 0.5}\n")
    assert [n.target for n in sp.nodes] == ["198.18.0.11", "198.18.0.12"]
    assert sp.entries[0].plan.mode == "cluster"


def test_two_entries_with_one_served_name_are_refused_by_the_gateway(project: Path) -> None:
    sp = plan(project, "name: x\nmodels:\n  - {recipe: fixed, gpu_mem: 0.2}\n  - {recipe: fixed, gpu_mem: 0.2}\n"
                       "gateway: {}\n")
    with pytest.raises(ConfigError, match="two entries serve the model name 'fixed'"):
        gateway.plan_gateway(sp)


def cached_model(project: Path, repo: str, size: int) -> None:
    """A model complete in the HF cache: listing, ref and a sparse file of `size` bytes (stat only reads it)."""
    cache = hub_cache.hub_cache_dir()
    hub_cache.write_tree_listing(cache, repo, COMMIT, {"model.safetensors": {"size": size, "blob_id": "b" * 40}})
    hub_cache.write_ref(cache, repo, "main", COMMIT)
    snap = hub_cache.repo_folder(cache, repo) / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    with open(snap / "model.safetensors", "wb") as f:
        f.truncate(size)


def test_weights_that_do_not_fit_their_share_are_refused_with_numbers(project: Path) -> None:
    cached_model(project, "org/big", 60 * 10**9)
    cached_model(project, "org/small", 2 * 10**9)
    body = """\
        name: x
        nodes: 198.18.0.11,198.18.0.12
        models:
          - {{recipe: big, on: all, gpu_mem: {big}}}
          - {{recipe: small, gpu_mem: 0.2}}
        """
    gib = 1 << 30
    memory = {"198.18.0.11": 128 * gib, "198.18.0.12": 128 * gib}
    fits = budget.check(plan(project, body.format(big=0.3)), memory)
    assert {(s.entry, s.node, s.weights) for s in fits} == {
        ("x-big", "198.18.0.11", 30 * 10**9), ("x-big", "198.18.0.12", 30 * 10**9), ("x-small", "198.18.0.11", 2 * 10**9)}
    with pytest.raises(ConfigError) as info:
        budget.check(plan(project, body.format(big=0.2)), memory)
    text = str(info.value)
    assert "x-big on 198.18.0.11: weights 30.0 GB + KV cache 1.1 GB = 31.1 GB, but its gpu_mem gives it 27.5 GB" in text
    assert "x-small" not in text and "nothing was started" in text
    assert budget.check(plan(project, body.format(big=0.2)), {"198.18.0.11": None}) == []  # unknown: not judged


def cli(project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "RUNRECIPE_HOME": str(project), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "tasks", *args], cwd=project, env=full, capture_output=True,
                          text=True, timeout=60)


def test_dry_run_json_has_every_entry_and_the_gateway(project: Path) -> None:
    write(project, TWO, "duo")
    res = cli(project, "stack", "duo", "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["stack"] == "duo"
    assert [(e["recipe"], e["nodes"], e["port"], e["container"]) for e in data["entries"]] == [
        ("fixed", ["localhost"], 8001, "duo-fixed"), ("small", ["localhost"], 8000, "duo-small")]
    assert all(e["script"].startswith("#!/usr/bin/env bash") for e in data["entries"])
    assert data["gateway"]["port"] == 4000 and len(data["gateway"]["routes"]) == 2
    write(project, "name: c\nnodes: 198.18.0.11,198.18.0.12\nmodels:\n  - {recipe: big, on: all, gpu_mem: 0.5}\n", "c")
    data = json.loads(cli(project, "stack", "c", "--dry-run", "--json").stdout)
    assert data["gateway"] is None
    assert [s["node"] for s in data["entries"][0]["node_scripts"]] == ["198.18.0.11", "198.18.0.12"]
    assert "--master-port 29501" in data["entries"][0]["node_scripts"][1]["script"]


def test_cli_errors_are_messages_not_tracebacks(project: Path) -> None:
    write(project, "name: x\nmodels:\n  - {recipe: small, gpu_mem: 2}\n", "bad")
    res = cli(project, "stack", "bad", "--dry-run")
    assert res.returncode == 1 and "line 3" in res.stderr and "Traceback" not in res.stderr
    res = cli(project, "stack", "missing")
    assert res.returncode == 1 and "no such file" in res.stderr


def test_the_gateway_restarts_when_routes_change_and_only_then(project: Path) -> None:
    body = "name: x\nmodels:\n  - {{recipe: small, gpu_mem: {mem}, port: {port}}}\ngateway: {{}}\n"

    def digest(mem: float, port: int) -> str:
        return gateway.digest(gateway.plan_gateway(plan(project, body.format(mem=mem, port=port))), "sha256:i")

    assert digest(0.3, 8000) == digest(0.4, 8000)   # an entry's memory is not a route
    assert digest(0.3, 8000) != digest(0.3, 8001)   # its address is


def test_an_entry_may_not_take_the_gateways_name(project: Path) -> None:
    exc = refused(project, "name: x\nmodels:\n  - {recipe: small, name: x-gateway}\ngateway: {}\n")
    assert "'x-gateway' is used by another entry of the stack or its gateway" in str(exc) and exc.line == 3


def test_the_gateway_key_may_come_from_the_env_file(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.cli.stack import load as load_stack

    monkeypatch.delenv("DUO_KEY", raising=False)
    (project / ".env").write_text("DUO_KEY=sk-from-dotenv\n")
    write(project, TWO, "duo")
    _, gw = load_stack("duo", Options())
    assert gateway.api_key(gw) == "sk-from-dotenv"
    monkeypatch.setenv("DUO_KEY", "not-sk")
    with pytest.raises(ConfigError, match="does not start with 'sk-'") as info:
        gateway.api_key(gw)
    assert "not-sk" not in str(info.value)
    monkeypatch.setenv("DUO_KEY", "sk-")
    with pytest.raises(ConfigError, match="set to 'sk-' alone, an empty key"):
        gateway.api_key(gw)


@pytest.mark.parametrize("served", ["مثال", "模型-😀", "emoji-🦙-\u2028-line", "quote\"s and 'x'", "ünï"])
def test_the_gateway_configuration_keeps_any_model_name_as_text(project: Path, served: str) -> None:
    """tojson wrote characters beyond the BMP as surrogate pairs, which YAML reads back as two broken ones."""
    import yaml

    args = yaml.safe_dump(["--served-model-name", served], default_flow_style=True, allow_unicode=True, width=999)
    body = f"name: x\nmodels:\n  - recipe: small\n    extra_args: {args.strip()}\ngateway: {{}}\n"
    gw = gateway.plan_gateway(plan(project, body))
    route = yaml.safe_load(gw.config)["model_list"][0]
    assert route["model_name"] == served and route["litellm_params"]["model"] == f"hosted_vllm/{served}"


@pytest.mark.parametrize("extra, words", [
    ("overrides: {port: 9999}", "would listen on port 9999, not on 8000"),
    ("extra_args: [--port, '9999']", "would listen on port 9999, not on 8000"),
    ("overrides: {gpu_memory_utilization: lots}", "--gpu-memory-utilization is 'lots'"),
    ("extra_args: [--gpu-memory-utilization, '1.5']", "--gpu-memory-utilization is '1.5'"),
])
def test_overrides_cannot_move_an_entry_off_its_port_or_share(project: Path, extra: str, words: str) -> None:
    exc = refused(project, f"name: x\nmodels:\n  - recipe: small\n    {extra}\n")
    assert words in str(exc) and exc.line == 3


def test_an_entry_whose_server_wants_an_api_key_is_refused_behind_the_gateway(project: Path) -> None:
    """The gateway's routes present no key: requests through it would all be 401."""
    body = "name: x\nmodels:\n  - {recipe: small, gpu_mem: 0.4, extra_args: [--api-key, sk-entry-1]}\n"
    exc = refused(project, body + "gateway: {}\n")
    assert "models[0]: its server wants an API key" in str(exc) and exc.line == 3 and "sk-entry-1" not in str(exc)
    assert plan(project, body).entries[0].plan.api_key == "sk-entry-1"  # no gateway: the key is the user's affair


def test_doit_list_shows_the_stacks_that_stack_name_finds(project: Path) -> None:
    """`run-recipe stack NAME` takes stacks/NAME.yml as well as .yaml: `doit list` must list both."""
    from tasks.cli.loader import _stack_tasks

    write(project, "name: one\nmodels: [{recipe: small}]\n", name="one")
    (project / "stacks" / "two.yml").write_text("name: two\nmodels: [{recipe: small}]\n")
    names = {task["name"] for task in _stack_tasks(Options())}
    assert {"one//one-small", "two//two-small"} <= names, names


def test_behind_the_gateway_head_entries_listen_on_loopback_and_worker_entries_want_a_derived_key(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway is the stack's one door: nothing it routes to answers without its key."""
    monkeypatch.setenv("GW_KEY", "sk-stack-door-1")
    body = ("name: k\nnodes: [198.18.0.11, 198.18.0.12]\nmodels:\n  - {recipe: big, on: all, gpu_mem: 0.4}\n"
            "  - {recipe: small, on: [198.18.0.12], gpu_mem: 0.3}\ngateway: {api_key_env: GW_KEY}\n")
    sp = plan(project, body)
    big, small = (next(p.plan for p in sp.entries if p.entry.recipe == r) for r in ("big", "small"))
    assert big.loopback_only and big.vllm.option("--host") == "127.0.0.1" and not big.api_key
    assert not small.loopback_only and small.vllm.option("--host") == "0.0.0.0"
    key = small.api_key
    assert key.startswith("sk-rr-") and len(key) == 70 and key not in small.script and key not in small.argv
    assert plan(project, body).entries[1].plan.api_key == key  # the same on every run: a re-run restarts nothing
    monkeypatch.setenv("GW_KEY", "sk-stack-door-2")
    assert plan(project, body).entries[1].plan.api_key != key  # a new gateway key, new entry keys
    monkeypatch.setenv("GW_KEY", "sk-stack-door-1")
    gw = gateway.plan_gateway(sp)
    routes = {r.model: r for r in gw.routes}
    assert routes["org/big"].api_base == "http://127.0.0.1:8000/v1" and not routes["org/big"].key_var
    assert routes["org/small"].api_base == "http://198.18.0.12:8001/v1"
    var = routes["org/small"].key_var
    assert f'api_key: "os.environ/{var}"' in gw.config and "sk-" not in gw.config
    assert 'custom_auth: "runrecipe_gateway_auth.check"' in gw.config
    assert gateway.secret_env(gw, "sk-stack-door-1") == {"GW_KEY": "sk-stack-door-1", var: key}
    assert set(gw.files()) == {"gateway.yaml", "runrecipe_gateway_auth.py"}
    assert all(key not in a and "sk-stack-door-1" not in a for a in gw.args("sha256:x"))


@pytest.mark.parametrize("extra", ["overrides: {host: 0.0.0.0}", "extra_args: [--host, 10.0.0.5]"])
def test_an_entry_on_the_head_cannot_be_opened_past_the_gateway(project: Path, extra: str) -> None:
    body = f"name: x\nmodels:\n  - recipe: small\n    {extra}\n"
    exc = refused(project, body + "gateway: {}\n")
    assert "models[0]: its server would listen on " in str(exc) and "127.0.0.1 only" in str(exc) and exc.line == 3
    assert not plan(project, body).entries[0].plan.loopback_only  # no gateway: where it listens is the user's affair


def test_ids_record_files_and_unit_names_are_all_different_for_different_recipes(project: Path) -> None:
    """A stack `4x` with an entry `minimax-m2.5` took the catalogue's `4x/minimax-m2.5` (same labels: one run
    removed the other's containers); record and unit names folded `/` and `-` together."""
    from tasks.serve import service
    from tasks import state

    (project / "recipes" / "4x").mkdir()
    (project / "recipes" / "4x" / "minimax-m2.5.yaml").write_text(textwrap.dedent(RECIPES["fixed"]))
    entry = plan(project, "name: 4x\nmodels: [{recipe: small, name: minimax-m2.5}]\n").entries[0].plan
    assert entry.recipe.id == "4x//minimax-m2.5" and entry.recipe.id != "4x/minimax-m2.5"
    ids = ["4x/minimax-m2.5", "4x-minimax-m2.5", "4x//minimax-m2.5", "4x_minimax-m2.5", "a%2Fb", "a/b", ".x", "%2Ex"]
    assert len({state.record_file("runs", i) for i in ids}) == len(ids)
    assert len({service.unit_name(i) for i in ids}) == len(ids)
    assert service.unit_name("glm-4.7") == "runrecipe-glm-4.7.service"  # the usual name reads as it did
    long = ["x" * 300, "x" * 299 + "y", "é" * 200]
    assert all(len(state.record_file("runs", i).name) <= 255 and len(service.unit_name(i)) <= 255 for i in long)
    assert len({state.record_file("runs", i) for i in long}) == 3 and len({service.unit_name(i) for i in long}) == 3


def test_a_recipe_path_in_a_stack_file_is_the_stack_files_never_the_current_folders(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)  # recipes/small.yaml exists from here, not from stacks/
    exc = refused(project, "name: x\nmodels: [{recipe: recipes/small.yaml}]\n")
    assert f"models[0].recipe: no recipe file at {project}/stacks/recipes/small.yaml: a path in a stack file is " \
           "relative to the stack file's folder" in str(exc) and exc.line == 2
    beside = plan(project, "name: x\nmodels: [{recipe: ../recipes/small.yaml}]\n").entries[0].plan
    assert beside.recipe.path == project / "stacks" / ".." / "recipes" / "small.yaml"
    (project / "fixed.yaml").write_text(textwrap.dedent(RECIPES["big"]))  # a name is the catalogue's, not the cwd's
    named = plan(project, "name: x\nmodels: [{recipe: fixed}]\n").entries[0].plan
    assert named.recipe.path == project / "recipes" / "fixed.yaml"
