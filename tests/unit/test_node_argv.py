"""Every node's vLLM receives the recipe's values literally, in Ray and native mode.

The node scripts are run for real by bash, with a stand-in `vllm` (and, for the Ray head, stand-in
`ray` and `python3`) first on PATH that records the argv it was given: no GPU can run vLLM here, and
what is under test is the script around it. Nothing in a value may execute (canary files).
"""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tasks.cluster import roles as cluster
from tasks import shellwords
from tasks import vllm_args
from tasks.errors import RenderError
from tasks.plan import Options, make_plan
from tasks.recipe import load, parse
from tasks.settings import CODE_ROOT

NODES = "198.18.0.11,198.18.0.12,198.18.0.13"
NET = cluster.Network(ips={n: n for n in NODES.split(",")}, eth_if="eth0")
RECORDER = """#!/bin/sh
for a in "$@"; do printf '%s\\0' "$a"; done > "$ARGV_FILE"
"""


def payloads(canary: Path) -> list[str]:
    c = str(canary)
    return ["x --distributed-executor-backend y", f"; touch {c}-semi; #", f"$(touch {c}-dollar)",
            f"`touch {c}-tick`", f"a'b\"c\nd && touch {c}-and", "--headless", "{not_a_placeholder}"]


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """Stand-ins: `vllm` records its argv; `ray` and `python3` let a Ray head's join loop pass at once."""
    path = tmp_path / "bin"
    path.mkdir()
    for name, body in (("vllm", RECORDER), ("ray", "#!/bin/sh\nexit 0\n"), ("python3", "#!/bin/sh\necho 3\n")):
        (path / name).write_text(body)
        (path / name).chmod(stat.S_IRWXU)
    return path


def run_script(script: str, bin_dir: Path, tmp_path: Path) -> list[str]:
    out = tmp_path / "argv"
    out.unlink(missing_ok=True)
    subprocess.run(["bash", "-c", script], check=True, timeout=30,
                   env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ARGV_FILE": str(out), "HOME": str(tmp_path)})
    return out.read_bytes().decode().split("\0")[:-1]


@pytest.mark.parametrize("mode", ["native", "ray"])
@pytest.mark.parametrize("index", range(7))
def test_payloads_reach_every_node_literally(tmp_path: Path, bin_dir: Path, mode: str, index: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    canary = tmp_path / "canary"
    value = payloads(canary)[index]
    recipe = load(CODE_ROOT / "recipes" / "glm-4.7-flash-awq.yaml")
    overrides = {"served_model_name": value, "max_model_len": value}
    plan = make_plan(recipe, Options(nodes=NODES, overrides=overrides, extra_args=("--seed", value)))
    roles = cluster.roles(plan, mode, NET)
    for role in roles:
        if role.rank and mode == "ray":
            continue  # a Ray worker runs `ray start`, not vLLM
        argv = run_script(role.script, bin_dir, tmp_path)
        assert argv[:2] == ["serve", "cyankiwi/GLM-4.7-Flash-AWQ-4bit"]
        assert vllm_args.option_value(argv, "--served-model-name") == value
        assert vllm_args.option_value(argv, "--max-model-len") == value
        assert vllm_args.option_value(argv, "--seed") == value
        if mode == "native":
            assert vllm_args.option_value(argv, "--node-rank") == str(role.rank)
            assert vllm_args.EXECUTOR not in argv
            assert argv.count("--headless") == (1 if role.rank else 0) + (value == "--headless") * 3  # three options carry it
        else:
            assert vllm_args.option_value(argv, vllm_args.EXECUTOR) == "ray"
    assert not list(tmp_path.glob("canary*")), "a value executed"


def test_executor_flag_is_removed_as_words_whatever_its_value(tmp_path: Path) -> None:
    text = ("recipe_version: '1'\nname: n\ncontainer: c\ndefaults: {b: 'mp --x y'}\ncommand: |\n"
            "  vllm serve org/m --distributed_executor_backend={b} \\\n"
            "    --distributed-executor-backend mp --served-model-name '--distributed-executor-backend z'\n")
    plan = make_plan(parse(text, tmp_path / "n.yaml"), Options(nodes=NODES))
    native = cluster.native_command(plan.vllm, 1, 3, "198.18.0.11", 29501)
    assert native.option("--served-model-name") == "--distributed-executor-backend z"
    assert not [a for a in native.argv if vllm_args.flag_name(a) == vllm_args.EXECUTOR]
    ray = cluster.ray_command(plan.vllm)
    assert ray.argv.count(vllm_args.EXECUTOR) == 1 and ray.option(vllm_args.EXECUTOR) == "ray"


@pytest.mark.parametrize("command, where", [
    ("vllm serve m --x $(echo {p})", "inside a command substitution"),
    ("vllm serve m --x \"$(echo {p})\"", "inside a command substitution"),
    ("vllm serve m --x `echo {p}`", "inside backticks"),
    ("vllm serve m --x $(( {p} + 1 ))", "inside arithmetic"),
    ("vllm serve m --x ${{HOME:-{p}}}", "inside a parameter expansion"),
    ("vllm serve m --x $'{p}'", "inside ANSI-C quoting"),
    ("vllm serve m --x ${p}", "right after $"),
    ("vllm serve m --x \\\n  # note {p}", "inside a comment"),
])
def test_placeholders_no_quoting_can_hold_are_refused_with_file_and_line(tmp_path: Path, command: str,
                                                                          where: str) -> None:
    recipe = parse(f"recipe_version: '1'\nname: n\ncontainer: c\ndefaults: {{p: v}}\ncommand: |\n  {command}\n", tmp_path / "q.yaml")
    with pytest.raises(RenderError) as err:
        make_plan(recipe, Options(solo=True))
    message = str(err.value)
    assert "q.yaml: command: line" in message and "placeholder '{p}'" in message and where in message


def test_heredoc_is_refused(tmp_path: Path) -> None:
    recipe = parse("recipe_version: '1'\nname: n\ncontainer: c\ncommand: |\n  cat <<EOF\n  x\n  EOF\n", tmp_path / "h.yaml")
    with pytest.raises(RenderError, match="h.yaml: command: .*heredoc"):
        make_plan(recipe, Options(solo=True))


@pytest.mark.parametrize("text, words", [
    ("vllm serve m \\\n  --a 'b c' \"d\\$e\" f\\ g", [("vllm", True), ("serve", True), ("m", True),
                                                    ("--a", True), ("b c", True), ("d$e", True), ("f g", True)]),
    ("A=1 vllm serve m 2>&1 | tee log", [("A=1", True), ("vllm", True), ("serve", True), ("m", True),
                                          ("1", True), ("tee", True), ("log", True)]),
    ("vllm serve m --x $HOME ~/a *.json", [("vllm", True), ("serve", True), ("m", True), ("--x", True),
                                           ("$HOME", False), ("~/a", False), ("*.json", False)]),
])
def test_scanner_words_match_bash(text: str, words: list[tuple[str, bool]]) -> None:
    got = [(t.value, t.plain) for t in shellwords.split(text) if isinstance(t, shellwords.Word)]
    assert got == words


def test_argv_is_what_bash_runs_and_assignments_are_not_arguments(tmp_path: Path, bin_dir: Path) -> None:
    command = vllm_args.parse("A='x y' vllm serve org/m --a \"{v}\" 2>/dev/null --b={v}", {"v": "p q'r"})
    assert command.argv == ("vllm", "serve", "org/m", "--a", "p q'r", "--b=p q'r")
    assert run_script(command.text(), bin_dir, tmp_path) == list(command.argv[1:])
    assert os.environ.get("A") is None
