"""What vLLM's own `/metrics` says now: generation tokens/s, requests running and waiting, KV-cache use,
time to first token. Read from the server (Prometheus text), never estimated.

A counter says something only between two readings, so `rates` takes two snapshots: the tokens
generated and the mean TTFT of the requests that got their first token in between. One snapshot
(`status --json`) gives the gauges and the means since the server started.
"""
from __future__ import annotations

import re
from typing import Any

from ..ops import readiness

# vLLM's names (the v1 engine's; `gpu_cache_usage_perc` is the older name of the KV-cache gauge)
GAUGES = {"running": ("vllm:num_requests_running",), "waiting": ("vllm:num_requests_waiting",),
          "kv_cache_used": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")}
COUNTERS = {"generation_tokens": "vllm:generation_tokens_total", "prompt_tokens": "vllm:prompt_tokens_total",
            "ttft_sum": "vllm:time_to_first_token_seconds_sum", "ttft_count": "vllm:time_to_first_token_seconds_count"}
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse(text: str) -> dict[str, float]:
    """Prometheus text as {metric name: value}, summed over label sets (one server, its model's series)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            try:
                value = float(match.group(3))
            except ValueError:
                continue
            found[match.group(1)] = found.get(match.group(1), 0.0) + value
    return found


def snapshot(samples: dict[str, float], at: float) -> dict[str, Any]:
    """The figures runrecipe shows from one reading taken at `at` (monotonic seconds)."""
    out: dict[str, Any] = {"at": at}
    for name, keys in GAUGES.items():
        out[name] = next((samples[k] for k in keys if k in samples), None)
    for name, key in COUNTERS.items():
        out[name] = samples.get(key)
    count, total = out["ttft_count"], out["ttft_sum"]
    out["ttft_mean_ms"] = 1000 * total / count if count and total is not None else None
    return out


def rates(before: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """`now`'s gauges with the counters turned into what happened since `before`."""
    seconds = now["at"] - before["at"]
    out = {k: now[k] for k in ("running", "waiting", "kv_cache_used")}
    made = _delta(before, now, "generation_tokens")
    out["generation_tok_s"] = made / seconds if made is not None and seconds > 0 else None
    firsts, waited = _delta(before, now, "ttft_count"), _delta(before, now, "ttft_sum")
    out["ttft_mean_ms"] = 1000 * waited / firsts if firsts and waited is not None else None
    return out


def _delta(before: dict[str, Any], now: dict[str, Any], key: str) -> float | None:
    if before.get(key) is None or now.get(key) is None or now[key] < before[key]:  # a restarted server
        return None
    return now[key] - before[key]


def read(base: str, at: float) -> dict[str, Any] | None:
    """One snapshot of the server at `base`; None when /metrics does not answer."""
    body = readiness.fetch(base, "/metrics")
    return None if body is None else snapshot(parse(body.decode(errors="replace")), at)

