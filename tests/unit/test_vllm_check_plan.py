"""The check step as data: which argvs it asks about, where it sits in the graph, how it reads answers."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tasks.graph import doit_tasks as graph
from tasks.ops import vllm_check
from tasks.plan import Options, make_plan
from tasks.recipe import parse

RECIPE = """\
recipe_version: "1"
name: Two
container: img
model: org/m
defaults: {port: 8000, tensor_parallel: 2}
command: |
  vllm serve org/m --port {port} -tp {tensor_parallel} --distributed-executor-backend ray
"""
NODES = "198.18.0.11,198.18.0.12,198.18.0.13"


def plan_for(tmp_path: Path, **options):  # type: ignore[no-untyped-def]
    return make_plan(parse(RECIPE, tmp_path / "two.yaml"), Options(**options))


def test_every_node_argv_after_serve(tmp_path: Path) -> None:
    solo = vllm_check.targets(plan_for(tmp_path, solo=True))
    assert [(t.where, t.argv) for t in solo] == [("solo", ("org/m", "--port", "8000", "-tp", "1"))]
    native = vllm_check.targets(plan_for(tmp_path, nodes=NODES))
    assert [t.where for t in native] == [f"198.18.0.1{i} (native, rank {i - 1})" for i in (1, 2, 3)]
    assert native[1].argv[-9:] == ("--nnodes", "3", "--node-rank", "1", "--master-addr", "198.18.0.11",
                                   "--master-port", "29501", "--headless")
    ray = vllm_check.targets(plan_for(tmp_path, nodes=NODES, ray=True))
    assert {t.argv for t in ray} == {("org/m", "--port", "8000", "-tp", "2", "--distributed-executor-backend", "ray")}


@pytest.mark.parametrize("setup", [True, False])
def test_check_runs_before_any_download_or_copy(tmp_path: Path, setup: bool) -> None:
    """doit runs a task's task_dep in order and stops at the first failure: the check must come first."""
    plan = plan_for(tmp_path, nodes=NODES, setup=setup, download=True)
    tasks = graph.cluster_tasks(plan, graph.fleet_for(plan, dry=True), setup=setup)
    deps = next(t for t in tasks if t["basename"] == "launch")["task_dep"]
    first_transfer = min(i for i, d in enumerate(deps) if d.startswith(("download:", "image:", "weights:")))
    assert deps.index("check:two") < first_transfer
    check = next(t for t in tasks if t["basename"] == "check")
    assert check["task_dep"] == (["build:img"] if setup else [])
    solo = plan_for(tmp_path, solo=True, setup=True, download=True)
    deps = next(t for t in graph.recipe_tasks(solo, setup=True) if t["basename"] == "launch")["task_dep"]
    assert deps == ["build:img", "check:two", "download:org/m@main"]


def test_skip_removes_the_step(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, solo=True)
    skipped = replace(plan, options=replace(plan.options, skip_vllm_check=True))
    assert [t["basename"] for t in graph.recipe_tasks(skipped, setup=False)] == ["launch"]
    assert "check" in [t["basename"] for t in graph.recipe_tasks(plan, setup=False)]


def test_answers_become_findings() -> None:
    argvs = [vllm_check.Target("r", "solo", ("m",)), vllm_check.Target("r", "w", ("m", "--x"))]
    out = "log line\n" + vllm_check.RESULT_MARK + json.dumps(
        {"version": "0.33.0", "results": [{"ok": True, "warnings": [{"flag": "--load-format", "message": "'z' ..."}]},
                                          {"ok": False, "warnings": [], "errors": [
                                              {"stage": "parse", "flag": "--x", "message": "unrecognized"}]}]})
    verdict = vllm_check.read(out, "", 0, argvs)
    assert [(f.level, f.where, f.flag) for f in verdict.findings] == [("warning", "solo", "--load-format"),
                                                                    ("error", "w", "--x")]
    assert verdict.errors[0].text("0.33.0") == "r (w): vLLM 0.33.0 refuses --x: unrecognized"
    broken = vllm_check.read("", "Traceback ...\nSyntaxError: bad", 1, argvs)
    assert broken.cannot == "the checker gave no answer (exit status 1): SyntaxError: bad"
    cannot = vllm_check.read(vllm_check.RESULT_MARK + '{"version": "0.6.0", "cannot": "LookupError: old"}', "", 0, argvs)
    assert cannot.lines("img") == ["cannot check with vLLM 0.6.0 in img: LookupError: old"]


def test_the_venv_check_gets_no_plugin_no_secret_and_no_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lint --vllm --venv` runs vLLM on this machine: a recipe's parser plugin is code, and the
    environment holds tokens. A stand-in venv python records what it was given and answers."""
    seen = tmp_path / "seen"
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    answer = json.dumps({"version": "0.33.0", "results": [
        {"ok": True, "warnings": [{"flag": "--tool-call-parser", "message": "'evil' is not a name this vLLM knows"}]}]})
    python.write_text(f"#!/bin/sh\nenv > {seen}.env\ncat > {seen}.stdin\necho '{vllm_check.RESULT_MARK}{answer}'\n")
    python.chmod(0o755)
    monkeypatch.setenv("HF_TOKEN", "hf_lint_marker_1")
    monkeypatch.setenv("MY_PASS", "pass_lint_marker_2")
    argv = ("org/m", "--tool-parser-plugin", "recipes/plugin.py", "--tool-call-parser", "evil",
            "--reasoning_parser_plugin=x.py")
    verdict = vllm_check.in_venv(tmp_path / "venv", [vllm_check.Target("r", "solo", argv)])
    env = dict(line.split("=", 1) for line in (tmp_path / "seen.env").read_text().splitlines() if "=" in line)
    assert "hf_lint_marker_1" not in str(env) and "pass_lint_marker_2" not in str(env)
    assert env["HOME"] != str(Path.home()) and not Path(env["HOME"]).exists()
    assert json.loads((tmp_path / "seen.stdin").read_text()) == [["org/m", "--tool-call-parser", "evil"]]
    assert [(f.level, f.flag) for f in verdict.findings] == [("warning", "--tool-parser-plugin"),
                                                             ("warning", "--reasoning-parser-plugin")]
    assert verdict.findings[0].message.startswith("recipes/plugin.py was not loaded, so --tool-call-parser was "
                                                  "not checked: --venv runs no recipe code on this machine")


def _checker():
    """templates/vllm_checker.py as a module: standalone, it runs here without vLLM for its own logic."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vllm_checker", vllm_check.CHECKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_refused_flag_of_an_argv_is_reported_not_only_the_first() -> None:
    """argparse stops at the first bad value and lumps unknown flags together; vLLM's checks stop at the first."""
    import argparse

    class Serve:
        def validate(self, args: argparse.Namespace) -> None:
            if args.level == "bad":
                raise ValueError("level 'bad' is not one vLLM takes (parameter=level)")

    parser = argparse.ArgumentParser(prog="vllm")
    serve = parser.add_subparsers(dest="subparser").add_parser("serve")
    serve.add_argument("model")
    serve.add_argument("--port", type=int)
    serve.add_argument("--level")
    checker = _checker()
    argv = ["m", "--portt", "1", "--port", "x", "--level", "bad", "--nope", "--seed=2"]
    result = checker.check_one(parser, Serve(), argv)
    assert not result["ok"]
    assert [(e["flag"], e["message"].split(":")[0]) for e in result["errors"]] == [
        ("--port", "argument --port"), ("--portt", "unrecognized arguments"), ("--nope", "unrecognized arguments"),
        ("--seed", "unrecognized arguments"), ("--level", "ValueError")]
    assert checker.check_one(parser, Serve(), ["m", "--port", "1"]) == {"ok": True, "errors": [], "warnings": []}


def test_advisory_checks_warn_on_flags_only_a_mod_may_add() -> None:
    from types import SimpleNamespace

    from tasks.cli.lint_vllm import advisory

    plans = {"modded": SimpleNamespace(mods=("m",), build=SimpleNamespace(dockerfile="Dockerfile")),
             "plain": SimpleNamespace(mods=(), build=SimpleNamespace(dockerfile="Dockerfile"))}
    verdict = vllm_check.Verdict("0.33.0", findings=tuple(
        vllm_check.Finding("error", rid, "solo", "--gpu-memory-utilization-gb", "unrecognized arguments: "
                           "--gpu-memory-utilization-gb") for rid in plans))
    shown = advisory(verdict, plans)
    assert [(f.recipe, f.level) for f in shown.findings] == [("modded", "warning"), ("plain", "error")]
    assert shown.findings[0].message.endswith("(a mod of the recipe may add it)")
