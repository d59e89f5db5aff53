"""Issue #14, item 5: typed overrides and unknown options. A value of the wrong kind or out of range stops
at the command line as a usage error (exit 2, like conflicting flags) naming the flag, never in vLLM; an
option run-recipe does not know is refused with how to hand it to vLLM after `--`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .test_cli import cli, home  # noqa: F401 - the fixture and the runner of the CLI tests

TYPED = ("recipe_version: '1'\nname: Typed\ncontainer: img\ncommand: vllm serve org/m --port {port} -tp {tensor_parallel} "
         "--gpu-memory-utilization {gpu_memory_utilization} --max-model-len {max_model_len}\n"
         "defaults: {port: 8000, tensor_parallel: 1, gpu_memory_utilization: 0.8, max_model_len: 4096}\n")


@pytest.mark.parametrize("flags, expect", [
    (["--max-model-len", "4k"], "argument --max-model-len: '4k' is not a whole number from 1 to 2147483647"),
    (["--max-model-len", "0"], "argument --max-model-len: '0' is not a whole number"),
    (["--tp", "2.5"], "argument --tensor-parallel/--tp: '2.5' is not a whole number from 1 to 1024"),
    (["--tp", "\u0662"], "argument --tensor-parallel/--tp: '\u0662' is not a whole number"),
    (["--tp", "1_0"], "argument --tensor-parallel/--tp: '1_0' is not a whole number"),
    (["--gpu-mem", "abc"], "argument --gpu-memory-utilization/--gpu-mem: 'abc' is not a fraction above 0 and at most 1"),
    (["--gpu-mem", "0"], "--gpu-mem: '0' is not a fraction"),
    (["--gpu-mem", "1.01"], "--gpu-mem: '1.01' is not a fraction"),
    (["--gpu-mem", "nan"], "--gpu-mem: 'nan' is not a fraction"),
    (["--port", "8000x"], "argument --port: '8000x' is not a port number (1-65535)"),
    (["--port", "70000"], "argument --port: '70000' is not a port number"),
    (["--master-port", "abc"], "argument --master-port: 'abc' is not a port number"),
    (["--ready-timeout", "inf"], "argument --ready-timeout: 'inf' is not a number of seconds above 0"),
    (["--ready-timeout", "nan"], "argument --ready-timeout: 'nan' is not a number of seconds above 0"),
    (["--ready-timeout", "0"], "argument --ready-timeout: '0' is not a number of seconds above 0"),
])
def test_a_typed_flag_out_of_kind_or_range_is_a_usage_error_naming_it(home: Path, flags: list[str],
                                                                       expect: str) -> None:
    (home / "recipes" / "typed.yaml").write_text(TYPED)
    res = cli(home, "typed", "--solo", "--dry-run", *flags)
    assert res.returncode == 2 and expect in res.stderr, res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_max_model_len_spellings_vllm_reads_still_go_through_o(home: Path) -> None:
    (home / "recipes" / "typed.yaml").write_text(TYPED)
    refused = cli(home, "typed", "--solo", "--dry-run", "--max-model-len", "auto")
    assert refused.returncode == 2 and "-o max_model_len=VALUE" in refused.stderr, refused.stderr
    res = cli(home, "typed", "--solo", "--dry-run", "--json", "-o", "max_model_len=4k")
    assert res.returncode == 0, res.stderr
    argv = json.loads(res.stdout)["argv"]
    assert argv[argv.index("--max-model-len") + 1] == "4k"


def test_typed_flags_in_range_reach_the_command(home: Path) -> None:
    (home / "recipes" / "typed.yaml").write_text(TYPED)
    res = cli(home, "typed", "-n", "10.9.9.1,10.9.9.2", "--dry-run", "--json", "--port", "8123", "--tp", "02",
              "--gpu-mem", ".5", "--max-model-len", "8192", "--master-port", "29600", "--ready-timeout", "1e2")
    assert res.returncode == 0, res.stderr
    argv = json.loads(res.stdout)["argv"]
    for flag, value in (("--port", "8123"), ("-tp", "2"), ("--gpu-memory-utilization", ".5"),
                        ("--max-model-len", "8192")):
        assert argv[argv.index(flag) + 1] == value, (flag, argv)
    assert "--master-port 29600" in json.loads(res.stdout)["node_scripts"][0]["script"]


@pytest.mark.parametrize("args, expect", [
    (["good", "--solo", "--portt", "9"],
     "unknown option '--portt' (not a run-recipe option). To pass it to vLLM, put it after `--`: "
     "run-recipe good [OPTIONS] -- --portt 9"),
    (["good", "--solo", "--enable-expert-parallel"], "run-recipe good [OPTIONS] -- --enable-expert-parallel"),
    (["--foo", "1", "good", "--solo"], "unknown option '--foo' (not a run-recipe option). To pass it to vLLM, "
     "put it after `--`: run-recipe RECIPE [OPTIONS] -- --foo ..."),
    (["good", "stray", "--solo"], "unknown argument 'stray'"),
])
def test_unknown_options_are_refused_with_how_to_pass_them_to_vllm(home: Path, args: list[str], expect: str) -> None:
    res = cli(home, *args, "--dry-run")
    assert res.returncode == 2 and expect in res.stderr, res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_after_double_dash_the_same_option_reaches_vllm(home: Path) -> None:
    res = cli(home, "good", "--solo", "--dry-run", "--json", "--", "--portt", "9")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["argv"][-2:] == ["--portt", "9"]


def test_head_port_is_the_origins_alias_of_master_port(home: Path) -> None:
    res = cli(home, "good", "-n", "10.9.9.1,10.9.9.2", "--dry-run", "--json", "--head-port", "29777")
    assert res.returncode == 0, res.stderr
    assert "--master-port 29777" in json.loads(res.stdout)["node_scripts"][1]["script"]
