"""Command rendering: each value arrives as exactly the argument the author meant."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from tasks import render
from tasks.errors import ConfigError, ModeError, RenderError
from tasks.plan import Options, make_plan
from tasks.recipe import parse

INJECTIONS = ["$(touch {canary})", "`touch {canary}`", "a b", "x'y", ";rm -rf ~", 'q"uo"te',
              "back\\slash", "new\nline", "&& touch {canary}", "$HOME", "", "*", "{not_a_placeholder}"]


def bash_argv(text: str) -> list[str]:
    """argv bash builds from `text` (a simple command), read back NUL-separated."""
    out = subprocess.run(["bash", "-c", f"args() {{ printf '%s\\0' \"$@\"; }}\nargs {text}"],
                         capture_output=True, check=True).stdout
    return out.decode().split("\0")[:-1]


# --- the property: rendering == substituting into each word of the template -------------------

SAFE = st.text(alphabet="abcXYZ09-_.=:/,", min_size=1, max_size=6)
VALUE = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=12)


@st.composite
def templates(draw: st.DrawFn) -> tuple[str, list[str]]:
    """Shell words built of bare, '...' and "..." parts, some holding {pN} placeholders."""
    words, names = [], []
    for _ in range(draw(st.integers(1, 4))):
        parts = []
        for _ in range(draw(st.integers(1, 3))):
            text = draw(SAFE)
            if draw(st.booleans()):
                names.append(f"p{len(names)}")
                text += "{" + names[-1] + "}"
            parts.append(draw(st.sampled_from(["{}", "'{}'", '"{}"'])).format(text) if "{" not in text
                         else draw(st.sampled_from(["@", "'@'", '"@"'])).replace("@", text))
        words.append("".join(parts))
    return " ".join(words), names


@settings(max_examples=150, deadline=None)
@given(templates(), st.data())
def test_rendered_argv_equals_per_word_substitution(case: tuple[str, list[str]], data: st.DataObject) -> None:
    template, names = case
    values = {n: data.draw(VALUE, label=n) for n in names}
    tokens = {n: f"TOKEN{i}X" for i, n in enumerate(names)}
    expected = [re.sub(r"TOKEN\d+X", lambda m: values[names[int(m.group()[5:-1])]], w)
                for w in bash_argv(render.substitute(template, tokens))]
    assert bash_argv(render.substitute(template, values)) == expected


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_values_arrive_literally(tmp_path: Path, value: str) -> None:
    canary = tmp_path / "canary"
    value = value.replace("{canary}", str(canary))
    template = "--a {v} --b='{v}' --c \"{v}\" --json '{{\"k\":\"{v}\"}}'"
    got = bash_argv(render.substitute(template, {"v": value}))
    assert got == ["--a", value, f"--b={value}", "--c", value, "--json", '{"k":"' + value + '"}']
    assert not canary.exists()


# --- table of rendering through a plan --------------------------------------------------------

RECIPE = """\
recipe_version: "1"
name: Table
container: img
defaults:
  port: 8000
  host: 0.0.0.0
  tensor_parallel: 2
  gpu_memory_utilization: 0.8
  max_model_len: 4096
  n: 3
command: |
  vllm serve org/m \\
      --port {port} --host {host} \\
      -tp {tensor_parallel} --gpu-memory-utilization {gpu_memory_utilization} \\
      --max-model-len {max_model_len} \\
      --distributed-executor-backend ray \\
      --speculative-config '{{"num_speculative_tokens":{n}}}' \\
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    return tmp_path


def plan_for(project: Path, text: str = RECIPE, **options: object):  # type: ignore[no-untyped-def]
    return make_plan(parse(text, project / "r.yaml"), Options(solo=True, **options))  # type: ignore[arg-type]


@pytest.mark.parametrize("overrides, extra, expect", [
    ({}, (), {"--port": "8000", "--host": "0.0.0.0", "-tp": "1", "--max-model-len": "4096"}),
    ({"port": "9000"}, (), {"--port": "9000"}),
    ({"host": "127.0.0.1"}, (), {"--host": "127.0.0.1"}),
    ({"tensor_parallel": "4"}, (), {"-tp": "4"}),
    ({"gpu_memory_utilization": "0.5"}, (), {"--gpu-memory-utilization": "0.5"}),
    ({"max_model_len": "100"}, (), {"--max-model-len": "100"}),
    ({"n": "7"}, (), {"--speculative-config": '{"num_speculative_tokens":7}'}),
    ({}, ("--seed", "42", "--load-format=auto"), {"--seed": "42"}),
])
def test_rendering_table(project: Path, overrides: dict, extra: tuple, expect: dict) -> None:
    plan = plan_for(project, overrides=overrides, extra_args=extra)
    argv = bash_argv(plan.command.replace("\\\n", " "))
    for flag, value in expect.items():
        assert argv[argv.index(flag) + 1] == value
    assert "--distributed-executor-backend" not in argv  # solo drops the Ray backend
    assert argv[len(argv) - len(extra):] == list(extra)
    assert list(plan.argv) == argv
    subprocess.run(["bash", "-n"], input=plan.script, text=True, check=True)


def test_extra_args_keep_order_and_warn_on_duplicates(project: Path) -> None:
    plan = plan_for(project, extra_args=("--port=9", "--enforce-eager", "--tensor_parallel_size", "2", "a b"))
    argv = list(plan.argv)
    assert argv[-5:] == ["--port=9", "--enforce-eager", "--tensor_parallel_size", "2", "a b"]
    dups = [w for w in plan.warnings if "repeats an option" in w]
    assert any("'--port=9'" in w for w in dups) and any("'--tensor_parallel_size'" in w for w in dups)
    assert not any("--enforce-eager" in w for w in dups)


def test_unused_override_warns(project: Path) -> None:
    plan = plan_for(project, overrides={"nope": "1"})
    assert any("override 'nope' is not used" in w for w in plan.warnings)


@pytest.mark.parametrize("command, message", [
    ("vllm serve m --x {missing}", "unknown placeholder '{missing}'"),
    ("vllm serve m --json '{\"a\": 1}'", "is not a placeholder name"),
    ("vllm serve m }", "stray brace"),
    ("vllm serve m {0}", "is not a placeholder name"),
    ("vllm serve m {port:>5}", "format spec"),
    ("vllm serve m 'unclosed", "cannot be parsed as shell words"),
])
def test_render_errors_name_the_problem(project: Path, command: str, message: str) -> None:
    recipe = parse("recipe_version: '1'\nname: n\ncontainer: c\ndefaults:\n  port: 1\ncommand: |\n  " + command + "\n", project / "e.yaml")
    with pytest.raises(RenderError) as err:
        make_plan(recipe, Options(solo=True))
    assert message in str(err.value) and "e.yaml" in str(err.value)


def test_unknown_placeholder_lists_available(project: Path) -> None:
    recipe = parse("recipe_version: '1'\nname: n\ncontainer: c\ndefaults:\n  port: 1\n  host: h\ncommand: vllm serve m {prot}\n",
                   project / "p.yaml")
    with pytest.raises(RenderError, match="available: host, port, tensor_parallel"):
        make_plan(recipe, Options(solo=True))


def test_env_values_survive_exactly(project: Path) -> None:
    text = RECIPE + "env:\n  JSONV: '{\"placement_group_options\":{\"strategy\":\"SPREAD\"}}'\n  ODD: \"a'b $(x) `y`\"\n"
    plan = plan_for(project, text=text)
    out = subprocess.run(["bash", "-c", plan.script.split("# Serve")[0] + 'printf "%s\\0%s" "$JSONV" "$ODD"'],
                         capture_output=True, text=True, check=True).stdout.split("\0")
    assert out == ['{"placement_group_options":{"strategy":"SPREAD"}}', "a'b $(x) `y`"]
    assert plan.script.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in plan.script
    assert "# recipe: Table" in plan.script and f"# file:   {project / 'r.yaml'}" in plan.script


def test_shell_operators_keep_working(project: Path) -> None:
    text = "recipe_version: '1'\nname: n\ncontainer: c\ncommand: |\n  cd /tmp && vllm serve m --x '{{a}}' | cat\n"
    plan = plan_for(project, text=text)
    assert "exec " not in plan.script.split("# Serve")[1]
    assert "cd /tmp && vllm serve m --x '{a}' | cat" in plan.script


def test_cluster_only_under_solo_gives_the_ways_out(project: Path) -> None:
    recipe = parse("recipe_version: '1'\nname: Big\ncontainer: c\ncluster_only: true\ncommand: x\n", project / "big.yaml")
    with pytest.raises(ModeError) as err:
        make_plan(recipe, Options(solo=True))
    assert "Recipe 'Big' requires cluster mode." in str(err.value)
    assert "-n node1,node2" in str(err.value) and "--discover" in str(err.value)


def test_solo_only_with_nodes_and_bad_nodes(project: Path) -> None:
    recipe = parse("recipe_version: '1'\nname: One\ncontainer: c\nsolo_only: true\ncommand: x\n", project / "one.yaml")
    with pytest.raises(ModeError, match="--solo"):
        make_plan(recipe, Options(nodes="10.0.0.1,10.0.0.2"))
    with pytest.raises(ConfigError, match="'a;b' is not a hostname"):
        make_plan(recipe, Options(nodes="10.0.0.1,a;b"))


def test_nodes_from_env_file(project: Path) -> None:
    (project / ".env").write_text('# test\nCLUSTER_NODES="198.18.0.11,198.18.0.12"\n')
    recipe = parse("recipe_version: '1'\nname: n\ncontainer: c\ncommand: x\n", project / "n.yaml")
    plan = make_plan(recipe, Options())
    assert plan.mode == "cluster" and [n.host for n in plan.nodes] == ["198.18.0.11", "198.18.0.12"]
    assert make_plan(recipe, Options(solo=True)).mode == "solo"
    assert os.environ["RUNRECIPE_HOME"] == str(project)


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/3", "0123456789abcdef0123456789abcdef01234567"])
def test_revisions_a_hub_can_have_reach_the_command(project: Path, revision: str) -> None:
    recipe = parse(f"recipe_version: '1'\nname: m\nmodel: org/m\ncontainer: c\nrevision: '{revision}'\ncommand: vllm serve org/m\n",
                   project / "m.yaml")
    plan = make_plan(recipe, Options(solo=True))
    assert plan.models[0].revision == revision
    assert (revision == "main") == ("--revision" not in plan.argv)


@pytest.mark.parametrize("revision", ["a b", "v1..2", "x~1", "feat:x", "/main", "main/", "a*"])
def test_revisions_no_hub_can_have_are_refused_naming_where(project: Path, revision: str) -> None:
    recipe = parse(f"recipe_version: '1'\nname: m\nmodel: org/m\ncontainer: c\nrevision: '{revision}'\ncommand: vllm serve org/m\n",
                   project / "m.yaml")
    with pytest.raises(ConfigError, match=re.escape(f"m.yaml: revision: '{revision}' is not a branch")):
        make_plan(recipe, Options(solo=True))
    ok = parse("recipe_version: '1'\nname: m\nmodel: org/m\ncontainer: c\ncommand: vllm serve org/m\n", project / "m.yaml")
    with pytest.raises(ConfigError, match=re.escape(f"--revision: '{revision}' is not a branch")):
        make_plan(ok, Options(solo=True, revision=revision))


def test_one_listed_node_means_solo_here_and_says_so_when_it_is_elsewhere(project: Path) -> None:
    recipe = parse("recipe_version: '1'\nname: n\ncontainer: c\ncommand: x\n", project / "n.yaml")
    here = make_plan(recipe, Options(nodes="127.0.0.1"))
    assert here.mode == "solo" and not [w for w in here.warnings if "one node" in w]
    elsewhere = make_plan(recipe, Options(nodes="192.0.2.7"))  # TEST-NET-1: never this machine
    assert elsewhere.mode == "solo" and elsewhere.nodes[0].local
    assert any(w.startswith("-n/--nodes lists one node, 192.0.2.7, which is not this machine") and
               "served HERE" in w for w in elsewhere.warnings), elsewhere.warnings
    (project / ".env").write_text("CLUSTER_NODES=192.0.2.7\n")
    assert any(f"{project / '.env'}: CLUSTER_NODES lists one node" in w for w in make_plan(recipe, Options()).warnings)


def test_a_number_too_long_to_write_is_a_clean_error_and_only_when_used() -> None:
    """YAML reads 0xfff... as an int that Python will not write in decimal (over 4,300 digits): a traceback once."""
    from tasks import vllm_args

    huge = int("f" * 4000, 16)
    with pytest.raises(RenderError, match="cannot be written as text"):
        render.substitute("vllm serve m --x {big}", {"big": huge})
    assert vllm_args.parse("vllm serve m --x {small}", {"small": 1, "big": huge}).argv[-1] == "1"
