"""bench's plain data: vLLM's real result JSON read, fingerprints and what differs between two, history
grouping, compare, the stored files, the client's command, and bad option values as clear errors."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tasks.bench import results as bench
from tasks.bench import run as bench_run
from tasks.cli import main as cli
from tasks.ops import run_record
from tasks.bench.results import BenchError
from tasks.connect import Result

# `vllm bench serve --save-result` of vLLM 0.32.0 (the CPU build) against the tiny Llama, concurrency 2
REAL = Path(__file__).parent / "fixtures" / "bench" / "vllm-0.32.0-concurrency2.json"
IMAGE = "sha256:" + "a" * 64


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    return tmp_path


def record(argv: list[str] | None = None, image: str = IMAGE, weights: str = "rr/tiny@" + "1" * 40,
           mods: tuple[tuple[str, str], ...] = ()) -> dict:
    """A run record as launch writes it (solo, one node)."""
    return {"recipe": "tiny", "base_url": "http://127.0.0.1:8000", "served_model": "rr/tiny", "model": "rr/tiny",
            "argv": argv or ["vllm", "serve", "rr/tiny", "--port", "8000", "--enforce-eager"], "backend": "solo",
            "nodes": [{"node": "local", "rank": 0, "container": "c" * 64, "image": image, "inputs": "i" * 64,
                       "weights": [weights], "mods": [{"name": n, "sha256": h} for n, h in mods]}]}


def result(started: str, rec: dict | None = None, tok_s: float = 100.0, ttft: float = 20.0) -> dict:
    levels = [{"concurrency": c, "completed": 8, "failed": 0, "duration_s": 1.0, "output_tok_s": tok_s * c,
               "total_tok_s": 3 * tok_s * c, "requests_s": 2.0 * c, "ttft_median_ms": ttft * c,
               "ttft_p99_ms": 2 * ttft * c, "tpot_median_ms": 3.0, "tpot_p99_ms": 4.0, "itl_median_ms": 3.0,
               "itl_p99_ms": 5.0} for c in (1, 2)]
    fp = bench.fingerprint(rec or record(), "0.32.0", {"requests": 8, "input_len": 16, "output_len": 8})
    return bench.document("tiny", fp, levels, started, started)


def test_the_real_result_json_of_vllm_bench_serve_reads_as_one_level() -> None:
    data = json.loads(REAL.read_text())
    lv = bench.level(data, 2)
    assert lv["concurrency"] == 2 and lv["completed"] == data["completed"] and lv["failed"] == 0
    assert lv["output_tok_s"] == data["output_throughput"] > 0
    assert lv["total_tok_s"] == data["total_token_throughput"] > lv["output_tok_s"]
    assert lv["requests_s"] == data["request_throughput"]
    for metric in ("ttft", "tpot", "itl"):
        assert lv[f"{metric}_median_ms"] == data[f"median_{metric}_ms"]
        assert lv[f"{metric}_p99_ms"] == data[f"p99_{metric}_ms"]
        assert lv[f"{metric}_p90_ms"] == data[f"p90_{metric}_ms"]  # asked for with --metric-percentiles 90,99


@pytest.mark.parametrize("drop", ["output_throughput", "median_ttft_ms", "p99_itl_ms", "completed"])
def test_a_result_without_a_figure_runrecipe_reads_is_a_clear_error(drop: str) -> None:
    data = json.loads(REAL.read_text())
    del data[drop]
    with pytest.raises(BenchError, match=f"lacks {drop}: this vLLM's `bench serve` writes other fields"):
        bench.level(data, 2)
    with pytest.raises(BenchError, match="not a JSON object"):
        bench.level([], 2)


def test_the_fingerprint_is_what_the_run_record_says_runs() -> None:
    rec = record(mods=(("patch", "f" * 64),))
    fp = bench.fingerprint(rec, "0.32.0", {"requests": 8, "input_len": 16, "output_len": 8})
    assert fp == {"image": IMAGE, "inputs": "i" * 64, "argv": rec["argv"], "weights": ["rr/tiny@" + "1" * 40],
                  "mods": ["patch@" + "f" * 64], "nodes": ["local"], "backend": "solo", "vllm": "0.32.0",
                  "bench": {"input_len": 16, "output_len": 8, "requests": 8}}
    assert bench.fingerprint_id(fp) == bench.fingerprint_id(copy.deepcopy(fp))
    other = bench.fingerprint(rec, "0.32.0", {"requests": 9, "input_len": 16, "output_len": 8})
    assert bench.fingerprint_id(other) != bench.fingerprint_id(fp)  # other parameters: not comparable as one
    with pytest.raises(BenchError, match="names no node: start it again"):
        bench.fingerprint({"recipe": "tiny", "nodes": []}, "0.32.0", {})


def test_the_differences_name_the_flag_the_mod_the_commit_and_the_image() -> None:
    base = record(mods=(("patch", "1" * 64),))
    changed = record(argv=[*base["argv"], "--max-num-seqs", "8"], image="sha256:" + "b" * 64,
                     weights="rr/tiny@" + "2" * 40, mods=(("patch", "2" * 64), ("extra", "3" * 64)))
    params = {"requests": 8, "input_len": 16, "output_len": 8}
    found = bench.differences(bench.fingerprint(base, "0.32.0", params), bench.fingerprint(changed, "0.32.0", params))
    assert {"what": "argv", "item": "--max-num-seqs", "a": None, "b": "8"} in found
    assert {"what": "image", "item": "image", "a": IMAGE, "b": "sha256:" + "b" * 64} in found
    assert {"what": "weights", "item": "rr/tiny", "a": "1" * 40, "b": "2" * 40} in found  # one commit, not two items
    assert {"what": "mods", "item": "patch", "a": "1" * 64, "b": "2" * 64} in found
    assert {"what": "mods", "item": "extra", "a": None, "b": "3" * 64} in found
    assert bench.differences(bench.fingerprint(base, "0.32.0", params), bench.fingerprint(base, "0.32.0", params)) == []


def test_argv_options_read_flags_as_vllm_does() -> None:
    assert bench.argv_options(["vllm", "serve", "m", "-tp", "2", "--max_num_seqs=8", "--enforce-eager"]) == {
        "#0": "vllm", "#1": "serve", "#2": "m", "--tensor-parallel-size": "2", "--max-num-seqs": "8",
        "--enforce-eager": ""}
    same = bench.differences({"argv": ["vllm", "serve", "m", "-tp", "2"]},
                             {"argv": ["vllm", "serve", "m", "--tensor-parallel-size", "2"]})
    assert same == []  # another spelling of the same option is no difference


def test_history_groups_results_by_fingerprint_oldest_first() -> None:
    flagged = record(argv=["vllm", "serve", "rr/tiny", "--port", "8000", "--max-num-seqs", "8"])
    groups = bench.history([result("2026-12-07T12:03:00+00:00", flagged), result("2026-12-07T12:01:00+00:00"),
                            result("2026-12-07T12:02:00+00:00")])
    assert [len(g["runs"]) for g in groups] == [2, 1]
    assert [r["started"] for r in groups[0]["runs"]] == ["2026-12-07T12:01:00+00:00", "2026-12-07T12:02:00+00:00"]
    assert groups[1]["fingerprint"]["argv"][-2:] == ["--max-num-seqs", "8"]


def test_compare_gives_deltas_per_level_and_says_which_way_is_better() -> None:
    a, b = result("2026-12-07T12:01:00+00:00"), result("2026-12-07T12:02:00+00:00", tok_s=150.0, ttft=10.0)
    report = bench.compare(a, b)
    assert report["differences"] == [] and [lv["concurrency"] for lv in report["levels"]] == [1, 2]
    out = report["levels"][0]["figures"]["output_tok_s"]
    assert (out["a"], out["b"], out["delta"], out["percent"], out["better"]) == (100.0, 150.0, 50.0, 50.0, True)
    ttft = report["levels"][1]["figures"]["ttft_median_ms"]
    assert ttft["delta"] == -20.0 and ttft["better"] is True  # lower latency is better
    assert report["levels"][0]["figures"]["tpot_median_ms"]["better"] is None  # unchanged


def test_select_by_time_or_fingerprint_id_prefix_and_clear_errors() -> None:
    flagged = record(argv=["vllm", "serve", "rr/tiny", "--max-num-seqs", "8"])
    one, two, three = (result("2026-12-07T12:01:00+00:00"), result("2026-12-07T12:02:00+00:00"),
                       result("2026-12-07T12:03:00+00:00", flagged))
    results = [three, one, two]
    assert bench.select(results, "") is three
    assert bench.select(results, one["fingerprint_id"][:6]) is two  # the latest run of that fingerprint
    assert bench.select(results, "2026-12-07T12:01:00+00:00") is one
    with pytest.raises(BenchError, match="no stored result is 'zzz'"):
        bench.select(results, "zzz")
    with pytest.raises(BenchError, match="run `run-recipe bench RECIPE` first"):
        bench.select([], "")


def test_results_are_stored_whole_and_only_complete_ones_are_listed(home: Path) -> None:
    doc = result("2026-12-07T12:01:00+00:00")
    first, second = bench_run.store(doc), bench_run.store(doc)
    assert first.name == "20261207T120100Z.json" and second.name == "20261207T120100Z-1.json"
    assert first.parent == home / ".runrecipe" / "bench" / "tiny"
    (first.parent / "20261207T120200Z.tmp999").write_text("{")  # a write cut short
    (first.parent / "broken.json").write_text("{")
    assert len(bench_run.stored("tiny")) == 2
    assert bench_run.load(first) == doc
    with pytest.raises(BenchError, match="is not a stored bench result"):
        bench_run.load(first.parent / "broken.json")


def test_the_client_is_vllm_bench_serve_from_the_deployments_image_on_the_host_network(home: Path) -> None:
    tgt = bench_run.Target("tiny", record(), "c" * 64, IMAGE, "http://127.0.0.1:8000", "rr/tiny", "0.32.0")
    argv = bench_run.client_argv(tgt, bench_run.Params((1, 2), 8, 16, 8), 2, home / "out", "runrecipe-bench-x")
    assert argv[:argv.index(IMAGE) + 1] == [
        "docker", "run", "--rm", "--name", "runrecipe-bench-x", "--network", "host", "--volumes-from", "c" * 64 + ":ro",
        "-v", f"{home / 'out'}:{bench_run.RESULT_DIR}", "-e", "HF_HUB_OFFLINE=1", "--entrypoint", "vllm", IMAGE]
    words = argv[argv.index(IMAGE) + 1:]
    assert words[:4] == ["bench", "serve", "--backend", "vllm"]
    pairs = dict(zip(words[4::2], words[5::2]))
    assert pairs["--base-url"] == "http://127.0.0.1:8000" and pairs["--model"] == "rr/tiny"
    assert (pairs["--random-input-len"], pairs["--random-output-len"], pairs["--num-prompts"],
            pairs["--max-concurrency"], pairs["--dataset-name"]) == ("16", "8", "8", "2", "random")


def test_a_recipe_never_started_or_stopped_is_a_clear_error_naming_how_to_start_it() -> None:
    with pytest.raises(BenchError, match=r"tiny has no run record .*start it with `run-recipe tiny -d`"):
        bench_run.target(None, "tiny")  # type: ignore[arg-type]  # refused before any docker call
    run_record.save("tiny", record())
    run_record.mark_stopped("tiny")
    with pytest.raises(BenchError, match=r"tiny was stopped: nothing to measure; start it with"):
        bench_run.target(None, "tiny")  # type: ignore[arg-type]
    run_record.save("tiny", {k: v for k, v in record().items() if k != "argv"})
    with pytest.raises(BenchError, match="written by an older runrecipe"):
        bench_run.target(None, "tiny")  # type: ignore[arg-type]


@pytest.mark.parametrize("args, message", [
    (["tiny", "--concurrency", "1,x"], "argument --concurrency: '1,x' is not a list of concurrency levels"),
    (["tiny", "--concurrency", "0"], "from 1 to 4096 separated by commas"),
    (["tiny", "--concurrency", "4,4"], "names a concurrency level twice"),
    (["tiny", "--requests", "0"], "argument --requests: '0' is not a whole number from 1"),
    (["tiny", "--input-len", "1.5"], "argument --input-len: '1.5' is not a whole number"),
    (["tiny", "--timeout", "nan"], "argument --timeout: 'nan' is not a number of seconds"),
    (["tiny", "--chart", "x.png"], "argument --chart: only with --history"),
    (["--compare", "a"], "argument --compare: expected 2 arguments"),
    (["tiny", "--compare", "a", "b"], "--compare takes its two results"),
    ([], "name a recipe"),
])
def test_bad_option_values_are_usage_errors_naming_the_option(args: list[str], message: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_history_and_compare_print_from_stored_results(capsys: pytest.CaptureFixture[str]) -> None:
    flagged = record(argv=[*record()["argv"], "--max-num-seqs", "8"])
    bench_run.store(result("2026-12-07T12:01:00+00:00"))
    bench_run.store(second := result("2026-12-07T12:02:00+00:00", flagged, tok_s=120.0))
    assert cli.main(["bench", "--history", "tiny"]) == 0
    out = capsys.readouterr().out
    assert out.count("fingerprint ") == 2 and "argv --max-num-seqs: (absent) -> 8" in out
    assert cli.main(["bench", "--compare", "tiny@2026-12-07T12:01:00+00:00", "tiny", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["b"]["fingerprint_id"] == second["fingerprint_id"]
    assert report["differences"] == [{"what": "argv", "item": "--max-num-seqs", "a": None, "b": "8"}]
    assert cli.main(["bench", "--compare", "tiny@nope", "tiny"]) == 1
    assert "Error: no stored result is 'nope'" in capsys.readouterr().err


def test_the_chart_is_a_png_and_a_missing_matplotlib_is_a_clear_error(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bench_run.store(result("2026-12-07T12:01:00+00:00"))
    bench_run.store(result("2026-12-07T12:02:00+00:00", record(argv=["vllm", "serve", "rr/tiny", "-tp", "1"])))
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    assert cli.main(["bench", "--history", "tiny", "--chart", str(home / "c.png")]) == 1
    assert "--chart needs matplotlib, which is not installed: pip install 'runrecipe[bench]'" in capsys.readouterr().err
    monkeypatch.delitem(__import__("sys").modules, "matplotlib")
    pytest.importorskip("matplotlib")
    assert cli.main(["bench", "--history", "tiny", "--chart", str(home / "c.png")]) == 0
    assert (home / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from tasks.bench.chart import series

    lines = series(bench.history(bench_run.stored("tiny")))
    assert len(lines) == 2 and lines[0]["points"] == [(1, 100.0, 20.0), (2, 200.0, 40.0)]
    assert lines[0]["label"] == lines[0]["label"][:8] and "--tensor-parallel-size 1" in lines[1]["label"]


class Client:
    """A runner whose `docker run` of the bench client writes `answers` (one per level) as vLLM would."""

    node = "local"

    def __init__(self, *answers: Path | None) -> None:
        self.answers, self.removed = list(answers), []

    def run(self, argv: list[str], **_: object) -> Result:
        if argv[:3] == ["docker", "rm", "-f"]:
            self.removed.append(argv[3])
            return Result("", "", 0)
        answer = self.answers.pop(0)
        if answer is None:
            raise KeyboardInterrupt
        mount = argv[argv.index("-v") + 1].split(":")[0]
        (Path(mount) / argv[-1]).write_text(answer.read_text())
        return Result("", "", 0)  # vLLM's client exits 0 even when every request failed


def tgt() -> bench_run.Target:
    return bench_run.Target("tiny", record(), "c" * 64, IMAGE, "http://127.0.0.1:8000", "rr/tiny-llama", "0.32.0")


def test_every_level_completed_gives_a_document_with_the_fingerprint() -> None:
    notes: list[str] = []
    doc = bench_run.measure(Client(REAL, REAL), tgt(), bench_run.Params((1, 2), 8, 16, 8), notes.append)
    assert [lv["concurrency"] for lv in doc["levels"]] == [1, 2] and doc["fingerprint"]["vllm"] == "0.32.0"
    assert doc["fingerprint_id"] == bench.fingerprint_id(doc["fingerprint"]) and len(notes) == 4


def test_failed_requests_or_an_interrupt_store_nothing_and_leave_no_client_running(home: Path) -> None:
    all_failed = REAL.with_name("vllm-0.32.0-all-failed.json")  # real: the server was not up; exit status 0
    with pytest.raises(BenchError, match="requests failed at concurrency 2; nothing stored"):
        bench_run.measure(Client(REAL, all_failed), tgt(), bench_run.Params((1, 2), 8, 16, 8), lambda _: None)
    client = Client(REAL, None)
    with pytest.raises(KeyboardInterrupt):
        bench_run.measure(client, tgt(), bench_run.Params((1, 2), 8, 16, 8), lambda _: None)
    assert len(client.removed) == 1 and client.removed[0].startswith("runrecipe-bench-")
    assert bench_run.stored("tiny") == [] and not list((home / ".runrecipe").glob("rr-bench-*"))
