"""Fuzzed stack files: each is a clean RunRecipeError naming the file (and a line), or a stack plan whose every
script passes `bash -n` and whose ports, names and master ports differ on every node.

Documents mix valid and hostile values for every field (wrong types, odd node lists, huge numbers, unicode,
shell metacharacters in overrides and extra args, duplicate names, ports at the edges) and some raw text.
"""
from __future__ import annotations

import os
import tempfile
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from tasks.stacks import gateway
from tasks.cluster.roles import preview
from tasks.errors import RunRecipeError
from tasks.plan import Options, bash_n
from tasks.stacks.files import load
from tasks.stacks.plan import make_stack_plan

WORK = Path(tempfile.mkdtemp(prefix="rr-stack-fuzz-"))
SEEN: Counter = Counter()
FUZZ = settings(max_examples=1000, deadline=10_000, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
RECIPES = {
    "small": "recipe_version: '1'\nname: S\ncontainer: rr-f\nmodel: org/small\ndefaults: {port: 8000, host: 0.0.0.0, x: 1}\n"
             "command: vllm serve org/small --port {port} --host {host} --max-model-len {x}\n",
    "fixed": "recipe_version: '1'\nname: F\ncontainer: rr-f\ncommand: vllm serve org/fixed --port 8000\n",
    "big": "recipe_version: '1'\nname: B\ncontainer: rr-f\ncluster_only: true\ndefaults: {port: 8000}\n"
           "command: vllm serve org/big --port {port} -tp 2\n",
    "alone": "recipe_version: '1'\nname: A\ncontainer: rr-f\nsolo_only: true\ncommand: vllm serve org/alone\n",
}
NODES = ["198.18.0.11", "198.18.0.12", "198.18.0.13", "root@198.18.0.14:2222", "[fd00::1]:22", "x y", "-oProxy=a",
         "", "a,,b"]
WEIRD = st.one_of(st.text(max_size=12), st.integers(-5, 70000), st.floats(allow_nan=True), st.booleans(), st.none(),
                  st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                  st.sampled_from(["$(id)", "`id`", "'", '"', "a\nb", "\u202e", "--", "x; rm -rf /", "{port}", "0x1f"]))


@pytest.fixture(autouse=True, scope="module")
def _project():
    saved = {k: os.environ.get(k) for k in ("RUNRECIPE_HOME", "RUNRECIPE_DOCKER_DIR", "HF_HOME")}
    (WORK / "recipes").mkdir(exist_ok=True)
    (WORK / "stacks").mkdir(exist_ok=True)
    for name, body in RECIPES.items():
        (WORK / "recipes" / f"{name}.yaml").write_text(body)
    os.environ.update(RUNRECIPE_HOME=str(WORK), RUNRECIPE_DOCKER_DIR=str(WORK / "docker"), HF_HOME=str(WORK / "hf"))
    yield
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def field(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Valid values, or anything (the hostile documents)."""
    return st.one_of(valid, WEIRD)


def same(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Valid values only (the documents that should mostly plan)."""
    return valid


def stack_strategy(field) -> st.SearchStrategy:
    """A stack document as data, each field's value drawn through `field`."""
    entry = st.fixed_dictionaries({"recipe": field(st.sampled_from(list(RECIPES))),
                                   "gpu_mem": field(st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.0001]))}, optional={
        "on": field(st.one_of(st.just("all"), st.lists(st.sampled_from(NODES[:3]), min_size=1, max_size=3, unique=True))),
        "port": field(st.sampled_from([8000, 8001, 4000, 29501, 1, 65535])),
        "name": field(st.sampled_from(["a", "b", "x-gateway", "n.1", "a" * 63])),
        "overrides": field(st.dictionaries(st.sampled_from(["x", "host", "port", "unused"]),
                                           st.one_of(st.integers(), st.text(max_size=10),
                                                     st.sampled_from(["$(id)", "'a b'", "`x`"])), max_size=2)),
        "extra_args": field(st.lists(st.one_of(st.sampled_from(["--seed", "42", "--port", "--x=$(id)", "a b", "'"]),
                                               st.text(max_size=6)), max_size=3)),
        "mods": field(st.lists(st.sampled_from(["mods/none", "../x"]), max_size=1)),
    })
    return st.fixed_dictionaries({"name": field(st.sampled_from(["x", "duo", "s-1"])),
                                   "models": field(st.lists(entry, min_size=1, max_size=3))}, optional={
        "nodes": field(st.one_of(st.lists(st.sampled_from(NODES), min_size=1, max_size=3),
                                 st.sampled_from([",".join(NODES[:3]), ",".join(NODES[:2])]))),
        "gateway": field(st.fixed_dictionaries({}, optional={"port": field(st.sampled_from([4000, 8000, 0])),
                                                             "api_key_env": field(st.sampled_from(["KEY", "1x", "sk-a"]))})),
        "description": st.text(max_size=5),
    })


STACK = stack_strategy(field)
VALID = stack_strategy(same)
DOCUMENT = st.one_of(VALID.map(yaml.safe_dump), VALID.map(yaml.safe_dump),
                     STACK.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
                     STACK.map(lambda d: yaml.safe_dump(d, default_flow_style=True)),
                     st.text(max_size=60), st.sampled_from(["", "[]", "name: x\nmodels: *a\n", "- 1\n", "models:\n\t- x"]))


def check(text: str) -> str:
    path = WORK / "stacks" / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        sp = make_stack_plan(load(path), Options())
        gw = gateway.plan_gateway(sp)
    except RunRecipeError as exc:
        assert str(path) in str(exc), f"error does not name the file: {exc}"
        assert "Traceback" not in str(exc)
        return "error"
    scripts = []
    used: dict[tuple[str, str], int] = {}
    for placed in sp.entries:
        plan = placed.plan
        if plan.mode == "cluster":
            scripts += [r.script for r in preview(plan)[1]]
        else:
            scripts.append(plan.script)
        for node in placed.node_targets:
            for kind, value in (("port", plan.port), ("name", plan.container_name)) + (
                    (("port", plan.options.master_port),) if plan.mode == "cluster" else ()):
                key = (node, f"{kind}:{value}")
                assert key not in used, f"{key} twice"
                used[key] = 1
    for node in {n for p in sp.entries for n in p.node_targets}:
        assert sum(p.fraction for p in sp.entries if node in p.node_targets) <= 1.0 + 1e-9
    if gw is not None:
        yaml.safe_load(gw.config)  # the gateway's config is YAML whatever the names were
    proc = bash_n("\n".join(scripts), timeout=20)
    assert proc.returncode == 0, proc.stderr
    return "plan"


@FUZZ
@given(DOCUMENT)
def test_fuzzed_stacks_are_a_clean_error_or_a_plan_bash_parses(text: str) -> None:
    SEEN[check(text)] += 1


def test_the_fuzz_reached_both_outcomes() -> None:
    """Runs after the fuzz (file order): both plans and errors were produced, 1,000 documents in all."""
    assert SEEN["plan"] >= 50 and SEEN["error"] >= 50 and sum(SEEN.values()) >= 1000, SEEN


def test_a_known_document_plans() -> None:
    assert check(textwrap.dedent("""\
        name: x
        nodes: 198.18.0.11,198.18.0.12
        models:
          - {recipe: big, on: all, gpu_mem: 0.5, extra_args: ["--x=$(id)"], port: 8005}
          - {recipe: small, gpu_mem: 0.25, overrides: {x: "$(id)"}}
        gateway: {port: 4000}
        """)) == "plan"
