"""vLLM's /metrics read: the real text of vLLM 0.32.0 (the CPU build serving the tiny Llama after a
bench), the figures status shows, rates between two readings, and the live view's lines."""
from __future__ import annotations

from pathlib import Path

import pytest

from tasks.cli import lifecycle as lifecycle_cli
from tasks.serve import metrics
from tasks.ops import run_record
from tasks.cli import status_live

REAL = Path(__file__).parent / "fixtures" / "bench" / "vllm-0.32.0-metrics.txt"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    return tmp_path


def test_the_real_metrics_text_gives_every_figure_status_shows() -> None:
    samples = metrics.parse(REAL.read_text())
    snap = metrics.snapshot(samples, 10.0)
    assert snap["running"] == 0 and snap["waiting"] == 0 and 0 <= snap["kv_cache_used"] <= 1
    assert snap["generation_tokens"] > 0 and snap["prompt_tokens"] > 0
    assert snap["ttft_count"] > 0 and snap["ttft_mean_ms"] == pytest.approx(1000 * snap["ttft_sum"] / snap["ttft_count"])


def test_parse_sums_label_sets_and_skips_comments_and_junk() -> None:
    text = ('# HELP vllm:num_requests_running x\n# TYPE vllm:num_requests_running gauge\n'
            'vllm:num_requests_running{model_name="a",engine="0"} 2.0\n'
            'vllm:num_requests_running{model_name="a",engine="1"} 1.0\nvllm:bad NaNx\n')
    assert metrics.parse(text) == {"vllm:num_requests_running": 3.0}


def test_rates_are_what_happened_between_two_readings() -> None:
    before = metrics.snapshot({"vllm:generation_tokens_total": 100, "vllm:time_to_first_token_seconds_sum": 1.0,
                               "vllm:time_to_first_token_seconds_count": 10, "vllm:num_requests_running": 0}, 0.0)
    after = metrics.snapshot({"vllm:generation_tokens_total": 300, "vllm:time_to_first_token_seconds_sum": 1.5,
                              "vllm:time_to_first_token_seconds_count": 15, "vllm:num_requests_running": 4,
                              "vllm:gpu_cache_usage_perc": 0.25}, 2.0)
    out = metrics.rates(before, after)
    assert out == {"running": 4, "waiting": None, "kv_cache_used": 0.25, "generation_tok_s": 100.0,
                   "ttft_mean_ms": pytest.approx(100.0)}
    restarted = metrics.snapshot({"vllm:generation_tokens_total": 5}, 4.0)
    assert metrics.rates(after, restarted)["generation_tok_s"] is None  # a counter that went back: no rate


def test_the_live_view_asks_only_recorded_servers_not_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    run_record.save("up", {"recipe": "up", "base_url": "http://127.0.0.1:9"})
    run_record.save("old", {"recipe": "old"})
    run_record.save("gone", {"recipe": "gone", "base_url": "http://127.0.0.1:9"})
    run_record.mark_stopped("gone")
    assert status_live.servers(None) == {"up": "http://127.0.0.1:9"}
    assert status_live.live(None, 0.01, 1) == 0
    out = capsys.readouterr().out
    assert "up" in out and "/metrics does not answer" in out
    line = status_live.line("r", {"generation_tok_s": 12.34, "running": 2, "waiting": 0, "kv_cache_used": 0.5,
                                  "ttft_mean_ms": None})
    assert line.split() == ["r", "12.3", "2", "0", "50.0%", "-"]


def test_status_live_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        lifecycle_cli.main("status", ["--live", "--interval", "0"])
    assert "argument --interval: '0' is not a number of seconds" in capsys.readouterr().err
