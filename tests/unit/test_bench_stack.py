"""`run-recipe stack NAME bench` and a keyed server's bench without the real engine: bad options and a stack
that is not running are clear errors (exit codes 2 and 1); the key reaches the client by environment, never
on its command line nor in the stored result; a stack's fingerprint names every entry and the gateway, and
history, compare and the chart read its results per model."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tasks.bench import results as bench
from tasks.bench import run as bench_run
from tasks.bench import stack as bench_stack
from tasks.cli import main as cli
from tasks.facts import docker
from tasks.stacks import gateway
from tasks.bench.results import BenchError
from tasks.facts.docker import Container
from tasks.connect import Result

from .test_bench import IMAGE, REAL, record
from .test_stack import TWO, project, write  # noqa: F401  (project: a fixture)

KEY = "sk-stack-secret-1234"
GATEWAY_IMAGE = "sha256:" + "9" * 64


@pytest.mark.parametrize("args, message", [
    (["--concurrency", "0"], "argument --concurrency: '0' is not a list of concurrency levels"),
    (["--requests", "x"], "argument --requests: 'x' is not a whole number"),
    (["--timeout", "-1"], "argument --timeout"),
    (["--chart", "x.png"], "argument --chart: only with --history"),
    (["--compare", "a"], "argument --compare: expected 2 arguments"),
    (["--history", "--compare", "a", "b"], "not allowed with argument --history"),
    (["--api-key-env", "X"], "unrecognized arguments: --api-key-env X"),  # the gateway's key is api_key_env's
])
def test_bad_stack_bench_options_are_usage_errors(args: list[str], message: str, project: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["stack", "duo", "bench", *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and "Traceback" not in err
    assert "run-recipe stack duo bench" in err


def test_a_key_given_as_the_variables_name_is_refused_without_echoing_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "tiny", "--api-key-env", "sk-abc.def-123"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "not an environment variable name" in err and "sk-abc.def-123" not in err


@pytest.fixture
def duo(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    write(project, TWO, "duo")
    monkeypatch.setenv("DUO_KEY", KEY)
    monkeypatch.setattr(docker, "containers", lambda runner, **labels: [])  # nothing runs
    return project


def test_a_stack_whose_gateway_is_not_running_is_a_clear_error_naming_how_to_start_it(
        duo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["stack", "duo", "bench", "--requests", "2"]) == 1
    err = capsys.readouterr().err
    assert "Error: stack duo's gateway (duo-gateway) is not running on local: nothing to measure; start it with " \
           "`run-recipe stack duo -d`, then bench again" in err
    assert not (duo / ".runrecipe" / "bench-stacks").exists()


def test_a_stack_without_its_key_a_gateway_or_a_file_is_a_clear_error(duo: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DUO_KEY")
    assert cli.main(["stack", "duo", "bench"]) == 1
    assert "its gateway's key variable DUO_KEY (api_key_env) is not set here" in capsys.readouterr().err
    write(duo, TWO.replace("    gateway: {port: 4000, api_key_env: DUO_KEY}\n", ""), "bare")
    assert cli.main(["stack", "bare", "bench"]) == 1
    assert "stack duo has no gateway, which `stack NAME bench` sends the load through" in capsys.readouterr().err
    assert cli.main(["stack", "nope", "bench"]) == 1
    assert "stack 'nope': no such file" in capsys.readouterr().err


def test_a_gateway_running_an_older_configuration_or_an_entry_not_recorded_is_refused(
        duo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, gw = bench_stack.plan("duo")
    monkeypatch.setattr(gateway, "image_id", lambda runner, plan: GATEWAY_IMAGE)
    stale = Container("g" * 64, gw.name, "running", GATEWAY_IMAGE, {"runrecipe.inputs": "old"})
    monkeypatch.setattr(docker, "containers", lambda runner, **labels: [stale])
    with pytest.raises(BenchError, match=r"runs with other routes, image or key than duo says now: run "
                                         r"`run-recipe stack duo -d`"):
        bench_stack.target(Runner(), "duo")
    current = Container("g" * 64, gw.name, "running", GATEWAY_IMAGE,
                        {"runrecipe.inputs": gateway.digest(gw, GATEWAY_IMAGE, KEY)})
    monkeypatch.setattr(docker, "containers", lambda runner, **labels: [current] if labels["recipe"] == gw.id else [])
    monkeypatch.setattr(gateway, "listed", lambda port, key: {r.model for r in gw.routes} if key == KEY else None)
    with pytest.raises(BenchError, match=r"the entry duo-\w+ \(\S+\) has no run record .*`run-recipe stack duo -d`"):
        bench_stack.target(Runner(), "duo")
    from tasks.ops import run_record

    for rid in ("duo//duo-small", "duo//duo-fixed"):
        run_record.save(rid, record())
    with pytest.raises(BenchError, match=r"the server of duo-\w+ \(\S+\) is not running on local; start it with"):
        bench_stack.target(Runner(), "duo")


class Runner:
    """A runner whose `docker run` of the bench client writes vLLM's real result, noting the key it was given."""

    node = "local"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.keys: list[str | None] = []

    def run(self, argv: list[str], **_: object) -> Result:
        self.calls.append(argv)
        self.keys.append(os.environ.get(bench_run.KEY_VAR))
        mount = argv[argv.index("-v") + 1].split(":")[0]
        (Path(mount) / argv[-1]).write_text(REAL.read_text())
        return Result("", "", 0)


def keyed(model: str, argv_extra: tuple[str, ...] = ()) -> bench_run.Target:
    rec = record(argv=["vllm", "serve", "rr/tiny", "--served-model-name", model, *argv_extra])
    return bench_run.Target(f"duo//{model}", rec, "c" * 64, IMAGE, "http://127.0.0.1:4000", model, "0.32.0", KEY,
                            via="through the gateway")


def test_the_key_reaches_the_client_by_environment_only(project: Path,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(bench_run.KEY_VAR, "the-users-own")
    runner = Runner()
    doc = bench_run.measure(runner, keyed("tiny-a"), bench_run.Params((1,), 8, 16, 8), lambda _: None)
    (argv,) = runner.calls
    assert argv[argv.index("-e", argv.index("HF_HUB_OFFLINE=1")) + 1] == "OPENAI_API_KEY"  # a name, no value
    assert not any(KEY in word for word in argv) and runner.keys == [KEY]
    assert os.environ[bench_run.KEY_VAR] == "the-users-own"  # put back as it was
    assert KEY not in json.dumps(doc)
    unkeyed = bench_run.client_argv(keyed("tiny-a").__class__(**{**keyed("tiny-a").__dict__, "key": ""}),
                                    bench_run.Params(), 1, project, "x")
    assert "OPENAI_API_KEY" not in unkeyed
    assert "key=" not in repr(keyed("tiny-a"))  # not in a traceback's locals either


def stack_target(extra: tuple[str, ...] = ()) -> bench_stack.StackTarget:
    plan = gateway.GatewayPlan("duo", "duo-gateway", 4000, "DUO_KEY", "litellm", (), "model_list: []\n" + "#" * len(extra))
    return bench_stack.StackTarget("duo", plan, GATEWAY_IMAGE, (keyed("tiny-a", extra), keyed("tiny-b")))


def test_a_stack_result_names_every_entry_and_the_gateway_and_compares_per_model(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    runner = Runner()
    params = bench_run.Params((1, 2), 8, 16, 8)
    first = bench_stack.measure(runner, stack_target(), params, lambda _: None)
    assert [(lv["model"], lv["concurrency"]) for lv in first["levels"]] == [
        ("tiny-a", 1), ("tiny-a", 2), ("tiny-b", 1), ("tiny-b", 2)]
    assert all("--base-url" in a and a[a.index("--base-url") + 1] == "http://127.0.0.1:4000" for a in runner.calls)
    fp = first["fingerprint"]
    assert set(fp["entries"]) == {"tiny-a", "tiny-b"} and fp["gateway"]["image"] == GATEWAY_IMAGE
    assert fp["entries"]["tiny-a"]["image"] == IMAGE and "bench" not in fp["entries"]["tiny-a"]
    assert fp["bench"] == {"input_len": 16, "output_len": 8, "requests": 8} and first["stack"] == "duo"
    path = bench_run.store(first)
    assert path.parent == project / ".runrecipe" / "bench-stacks" / "duo" and KEY not in path.read_text()
    second = bench_stack.measure(runner, stack_target(("--max-num-seqs", "8")), params, lambda _: None)
    bench_run.store({**second, "started": "2999-01-01T00:00:00+00:00"})
    diffs = bench.differences(fp, second["fingerprint"])
    assert {"entry": "tiny-a", "what": "argv", "item": "--max-num-seqs", "a": None, "b": "8"} in diffs
    assert [d["item"] for d in diffs if d["what"] == "gateway"] == ["config"]
    report = bench.compare(first, second)
    assert [(lv["model"], lv["concurrency"]) for lv in report["levels"]] == [
        ("tiny-a", 1), ("tiny-a", 2), ("tiny-b", 1), ("tiny-b", 2)]

    write(project, TWO, "duo")
    assert cli.main(["stack", "duo", "bench", "--history"]) == 0
    out = capsys.readouterr().out
    assert out.count("fingerprint ") == 2 and "tiny-a argv --max-num-seqs: (absent) -> 8" in out
    assert "tiny-b, concurrency    2:" in out
    assert cli.main(["stack", "duo", "bench", "--compare", f"duo@{first['fingerprint_id']}", "duo"]) == 0
    out = capsys.readouterr().out
    assert "what differs: tiny-a argv --max-num-seqs: (absent) -> 8; gateway config:" in out
    assert "tiny-b, concurrency 1:" in out
    assert cli.main(["bench", "--history", "duo"]) == 1  # a recipe's results are apart from a stack's
    from tasks.bench.chart import series

    lines = series(bench.history(bench_run.stored("duo", stack=True)))
    assert [line["label"].split(":")[0][9:] for line in lines] == ["tiny-a", "tiny-b", "tiny-a", "tiny-b"]


def test_a_keyed_server_without_its_key_names_the_variable_bench_reads(project: Path,  # noqa: F811
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.ops import readiness
    from tasks.ops import run_record

    run_record.save("tiny", record(argv=["vllm", "serve", "rr/tiny", "--api-key", "****"]))
    head = Container("c" * 64, "tiny", "running", IMAGE, {})
    monkeypatch.setattr(docker, "containers", lambda runner, **labels: [head])
    monkeypatch.setattr(readiness, "health", lambda base: 200)
    monkeypatch.setattr(readiness, "served_model", lambda base, model, key="": model if key == KEY else None)
    monkeypatch.setattr(readiness, "version", lambda base: "0.32.0")
    with pytest.raises(BenchError, match=r"it wants an API key: put it in \$VLLM_API_KEY \(environment or .env\) "
                                         r"or name its variable with --api-key-env"):
        bench_run.target(Runner(), "tiny")
    with pytest.raises(BenchError, match=r"or \$MY_KEY does not hold its API key"):
        bench_run.target(Runner(), "tiny", "sk-wrong", "MY_KEY")
    assert bench_run.target(Runner(), "tiny", KEY).key == KEY
    (project / ".env").write_text(f"MY_KEY={KEY}\n")
    monkeypatch.setattr(bench_run, "measure", lambda runner, tgt, params, note: pytest.fail(f"key {tgt.key == KEY}"))
    with pytest.raises(pytest.fail.Exception, match="key True"):
        cli.main(["bench", "tiny", "--api-key-env", "MY_KEY"])


def test_a_stacks_live_view_shows_its_entries_vllm_numbers_only(duo: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.ops import run_record
    from tasks.cli import status_live

    for rid in ("duo//duo-small", "duo//duo-fixed", "duo", "other//duo-small"):
        run_record.save(rid, {"recipe": rid, "base_url": "http://127.0.0.1:9"})
    assert sorted(status_live.servers(None, stack="duo")) == ["duo//duo-fixed", "duo//duo-small"]
    assert cli.main(["stack", "duo", "status", "--live", "--interval", "0.01", "--count", "1"]) == 0
    rows = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()[2:]]
    assert sorted(rows) == ["duo//duo-fixed", "duo//duo-small"]
    with pytest.raises(SystemExit) as exc:
        cli.main(["stack", "duo", "stop", "--live"])
    assert exc.value.code == 2 and "--live goes with status" in capsys.readouterr().err
