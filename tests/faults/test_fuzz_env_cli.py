"""Fuzzed `.env` files and command lines: each case is a clean error or a plan whose scripts bash can parse.

Issue #15, item 10. A `.env` (node lists, COPY_HOSTS, ETH_IF, IB_IF, MASTER_PORT, NON_PRIVILEGED, junk lines,
odd unicode, `${...}`, quotes) goes through nodes.load_env, config.env_options and plan.make_plan; a command
line (the parser's flags with junk values, `-o key=value`, `--` extra args) through cli.main with
--dry-run always given. A clean error is a RunRecipeError, or from the CLI an exit code of 1 or 2 with a
message and no traceback; anything else raised fails the case. Scripts (solo `plan.script`, on a cluster
every node's script from cluster.preview) are collected and checked with one `bash -n` per test, then one by
one only if that fails. Nothing reaches the network: names resolve only when they are IP literals, nodes are
in 198.18.0.0/24 or 192.0.2.0/24, and dry runs contact no node.
"""
from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import tempfile
from itertools import count
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tasks.cli import main as cli
from tasks.cluster import roles as cluster
from tasks import plan as plan_module
from tasks.config import env_options
from tasks.errors import RunRecipeError
from tasks.nodes import load_env
from tasks.plan import Options, Plan, make_plan
from tasks.recipe import load

WORK = Path(tempfile.mkdtemp(prefix="rr-fuzz-env-"))
HOME = WORK / "project"
RECIPE = """\
recipe_version: "1"
name: Fuzz env
container: rr-fuzz
defaults: {port: 8000, host: 0.0.0.0, tensor_parallel: 2}
command: |
  vllm serve org/m --port {port} --host {host} -tp {tensor_parallel} \\
      --distributed-executor-backend ray
"""
FUZZ = settings(max_examples=1000, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
NAMES = count()


@pytest.fixture(autouse=True, scope="module")
def _offline_project() -> Iterator[None]:
    """A scratch project, an empty HF cache, no engine, and name lookups only for IP literals."""
    (HOME / "recipes").mkdir(parents=True, exist_ok=True)
    (HOME / "recipes" / "fuzz.yaml").write_text(RECIPE)
    real = socket.getaddrinfo

    def literal_only(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        return real(host, *args[:3], socket.AI_NUMERICHOST)

    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"RUNRECIPE_HOME": HOME, "RUNRECIPE_DOCKER_DIR": WORK / "docker", "HF_HOME": WORK / "hf",
                           "HF_HUB_OFFLINE": "1", "DOCKER_HOST": "unix:///nonexistent.sock"}.items():
            mp.setenv(key, str(value))
        mp.setattr(socket, "getaddrinfo", literal_only)
        # scripts are checked here, in bulk, so a broken one shows up as a failure, not as a clean error
        mp.setattr(plan_module, "check_bash", lambda *a, **k: None)
        mp.setattr(cluster, "check_bash", lambda *a, **k: None)
        yield


def scripts_of(plan: Plan) -> list[str]:
    """The solo script, or every node's script of a cluster run, as --dry-run shows them."""
    if plan.mode != "cluster":
        return [plan.script]
    _, roles, _ = cluster.preview(plan)
    return [role.script for role in roles]


def fuzz(cases_of: st.SearchStrategy, check: Callable[..., str], wanted: tuple[str, ...]) -> None:
    """1,000 generated cases through `check` (which returns an outcome and collects scripts), each wanted
    outcome at least 50 times, then every collected script through `bash -n`."""
    cases: list[tuple[str, list[str]]] = []
    outcomes: dict[str, int] = {}

    @FUZZ
    @given(cases_of)
    def one(case: object) -> None:
        outcome = check(case, cases)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    one()
    assert sum(outcomes.values()) >= 1000 and all(outcomes.get(w, 0) >= 50 for w in wanted), outcomes
    assert_bash_parses(cases)


def assert_bash_parses(cases: list[tuple[str, list[str]]]) -> None:
    """One `bash -n` over every script (each in a function of its own); one by one to name a culprit."""
    if not cases:
        return
    bodies = [script for _, scripts in cases for script in scripts]
    joined = "".join(f"case_{i}() {{\n{body}\n}}\n" for i, body in enumerate(bodies))
    if not bash_n(joined):
        return
    for what, scripts in cases:
        for script in scripts:
            problem = bash_n(script)
            assert not problem, f"{what}: the script fails bash -n: {problem}\n{script}"
    pytest.fail(f"the scripts fail bash -n together, though each passes: {bash_n(joined)}")


def bash_n(script: str) -> str:
    res = subprocess.run(["bash", "-n"], input=script.encode("utf-8", "surrogateescape"), capture_output=True,
                         timeout=60)
    return (res.stderr.decode(errors="replace") or "bash -n failed") if res.returncode else ""


# --- strategies ------------------------------------------------------------------------------------------------

ODD = ["", " ", "\t", "'", '"', "`", "\\", "$", "${HF_TOKEN}", "${X:-y}", "$(id)", ";", "&&", "|", "#", "=", ",",
       ",,", "\u202e", "\u200b", "\ufeff", "\u2028", "\u00a0", "é", "中", "🙂", "²", "٢", "\x00", "\x7f", "\x1b[31m",
       "-oProxyCommand=x", "--help", "[", "]", "[::1]", "fe80::1%eth0", "fe80::1%$(id)", "0", "65536", "-1", "1e3",
       "true", "yes", "no", "..", "/", "~", "*", "%s", "{}", "{port}", "\r",
       "\udcff", "\udc80"]  # bytes that are not UTF-8, as Python hands them over from argv (surrogateescape)
odd_text = st.lists(st.sampled_from(ODD) | st.text(max_size=6), max_size=5).map("".join)
ips = st.builds(lambda net, last: f"{net}.{last}", st.sampled_from(["198.18.0", "192.0.2"]), st.integers(0, 255))
good_node = st.builds(lambda user, ip, port: f"{user}{ip}{port}", st.sampled_from(["", "", "admin@", "_a.b-c@"]),
                      ips, st.sampled_from(["", "", ":22", ":65535"]))
bad_node = st.builds(lambda user, ip, port: f"{user}{ip}{port}", st.sampled_from(["", "a b@", "@", "-x@", "é@"]),
                     ips | odd_text, st.sampled_from(["", ":0", ":65536", ":²", ":x", ":", "::"]))
# half the lists are all good nodes (a cluster plan), half mix in bad entries and junk (an error, mostly)
node_list = (st.lists(good_node, min_size=2, max_size=4, unique=True)
             | st.lists(good_node | bad_node | odd_text, max_size=5)).map(",".join)
KEYS = ["CLUSTER_NODES", "COPY_HOSTS", "ETH_IF", "IB_IF", "MASTER_PORT", "NON_PRIVILEGED", "HF_TOKEN", "MY_SECRET_KEY"]
key_values = {
    "CLUSTER_NODES": node_list, "COPY_HOSTS": node_list,
    "ETH_IF": st.sampled_from(["eth0", "enp1s0f0np0", "lo", "a" * 16, "eth 0", "eth0;id", "é"]) | odd_text,
    "IB_IF": st.sampled_from(["mlx5_0", "mlx5_0,mlx5_1", "rocep1s0f0:1", "mlx5_0,,", "x;y"]) | odd_text,
    "MASTER_PORT": st.sampled_from(["29501", "1", "65535", "0", "65536", "²", " 80", "80 ", "0x50"]) | odd_text,
    "NON_PRIVILEGED": st.sampled_from(["1", "true", "yes", "0", "TRUE", "no"]) | odd_text,
}


@st.composite
def env_line(draw: Callable) -> str:
    kind = draw(st.sampled_from(["pair"] * 6 + ["junk", "comment", "blank", "export"]))
    if kind == "junk":
        return draw(odd_text)
    if kind == "comment":
        return "# " + draw(odd_text)
    if kind == "blank":
        return ""
    key = draw(st.sampled_from(KEYS) | odd_text)
    value = draw(key_values.get(key, odd_text))
    quote = draw(st.sampled_from(["", "", "'", '"']))
    spaces = draw(st.sampled_from(["", " ", "\t"]))
    prefix = "export " if kind == "export" else ""
    return f"{prefix}{key}{spaces}={spaces}{quote}{value}{quote}"


env_files = st.builds(lambda first, lines, eol, bom: bom + eol.join([first, *lines]) + eol,
                      st.just("") | node_list.map("CLUSTER_NODES={}".format), st.lists(env_line(), max_size=8),
                      st.sampled_from(["\n", "\r\n", "\r"]), st.sampled_from(["", "", "\ufeff"]))


# --- .env --------------------------------------------------------------------------------------------------------

def check_env(text: str, cases: list[tuple[str, list[str]]]) -> str:
    """The .env contract: load_env gives text for text, and env_options + make_plan give a plan or a clean error."""
    path = WORK / f"env-{next(NAMES)}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        values = load_env(path)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()), values
        options = Options(config=path, **env_options(path))
        plan = make_plan(load(HOME / "recipes" / "fuzz.yaml"), options)
        scripts = scripts_of(plan)
    except RunRecipeError as exc:
        assert str(exc).strip(), "empty error message"
        return "error"
    cases.append((f".env {text!r}", scripts))
    return plan.mode


def test_env_files() -> None:
    fuzz(env_files, check_env, wanted=("solo", "cluster", "error"))


# --- command lines -----------------------------------------------------------------------------------------------

# --discover scans the network; -h only prints help. Every other option of the parser is drawn.
SKIPPED = {"--discover", "-h", "--help"}
ACTIONS = [a for a in cli.parser()._actions if a.option_strings and not SKIPPED & set(a.option_strings)]
VALUES = {"--port": ["8000", "0", "99999", "80 80"], "--host": ["0.0.0.0", "::", "$(id)"],
          "--tp": ["1", "2", "-1", "x"], "--nccl-debug": ["INFO", "WARN", "LOUD"],
          "--config": [str(HOME / ".env"), "/dev/null", "/", "missing.env"], "-n": [], "--nodes": [],
          "--revision": ["main", "v1.0", "-x", "..", "a" * 300], "--master-port": ["29501", "0", "x", "70000"],
          "--ready-timeout": ["1", "0", "-5", "nan", "inf", "1e309"], "-t": ["rr-fuzz", "Bad Image", "a:b@c"]}


@st.composite
def flag(draw: Callable) -> list[str]:
    action = draw(st.sampled_from(ACTIONS))
    name = draw(st.sampled_from(action.option_strings))
    if action.nargs == 0:
        return [name]
    choices = VALUES.get(name, [])
    value = draw((node_list if name in ("-n", "--nodes") else st.sampled_from(choices or ["x"])) | odd_text)
    return [f"{name}={value}"] if draw(st.booleans()) and value else [name, value]


override = st.builds(lambda k, v: ["-o", f"{k}={v}"], st.sampled_from(["port", "host", "tensor_parallel", "x-y",
                                                                       "", "1a", "a b", "é"]) | odd_text, odd_text)


@st.composite
def command_lines(draw: Callable) -> list[str]:
    argv = ["--dry-run"]
    if draw(st.integers(0, 9)):
        argv.append(draw(st.sampled_from(["fuzz", "fuzz", str(HOME / "recipes" / "fuzz.yaml")]) | odd_text))
    for part in draw(st.lists(flag() | override, max_size=6)):
        argv += part
    if draw(st.booleans()):
        argv += ["--", *draw(st.lists(st.sampled_from(["--max-model-len", "4096", "--port", "9"]) | odd_text,
                                      max_size=4))]
    return argv


def check_cli(argv: list[str], cases: list[tuple[str, list[str]]]) -> str:
    """The CLI contract: exit 0 (a plan, a list, the env), or 1/2 with a message; never a traceback."""
    plans: list[Plan] = []

    def capture(plan: Plan, as_json: bool) -> int:
        """--dry-run's stand-in: the scripts it would print (as UTF-8), without asking docker or the hub."""
        plans.append(plan)
        scripts = scripts_of(plan)
        "".join(scripts).encode("utf-8")
        cases.append((f"argv {argv!r}", scripts))
        return 0

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setattr(cli, "dry_run", capture)
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    assert code in (0, 1, 2), (argv, code, err.getvalue())
    assert "Traceback" not in err.getvalue() + out.getvalue(), (argv, err.getvalue())
    if code:
        assert err.getvalue().strip(), f"{argv}: exit {code} without a message"
        return "error"
    return "plan" if plans else "other"


def test_command_lines() -> None:
    (HOME / ".env").write_text("CLUSTER_NODES=198.18.0.1,198.18.0.2\nETH_IF=eth0\n")
    fuzz(command_lines(), check_cli, wanted=("plan", "error"))
