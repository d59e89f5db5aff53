"""Config is read once per run: the .env is parsed once however many settings come from it."""
from __future__ import annotations

from pathlib import Path

import dotenv
import pytest

from tasks.cli import main as cli
from tasks.plan import make_plan
from tasks.recipe import parse


def test_env_file_is_parsed_once_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    env = tmp_path / ".env"
    env.write_text("CLUSTER_NODES=198.18.0.11,198.18.0.12\nETH_IF=eth0\nMASTER_PORT=29600\n")
    calls: list[str] = []
    real = dotenv.dotenv_values

    def counting(path, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(dotenv, "dotenv_values", counting)
    recipe = parse("recipe_version: '1'\nname: n\ncontainer: c\ncommand: vllm serve org/m\n", tmp_path / "n.yaml")
    ns = cli.parser().parse_args(["n"])
    plan = make_plan(recipe, cli.options_from(ns, []))
    assert plan.mode == "cluster" and plan.options.master_port == 29600 and plan.options.eth_if == "eth0"
    assert calls == [str(env)]
    env.write_text("CLUSTER_NODES=198.18.0.11,198.18.0.13\nMASTER_PORT=29601\n")  # a changed file is read again
    assert make_plan(recipe, cli.options_from(ns, [])).nodes[1].host == "198.18.0.13"
    assert len(calls) == 2
