"""`run-recipe status --live`: what each running recipe's vLLM says in its `/metrics`, refreshed.

Part of the command line (it prints). The figures are metrics' (read from the server); which servers
to ask is the run records' (a recorded head address, not stopped).
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

from ..ops import run_record
from ..serve import metrics


def servers(recipe_id: str | None, stack: str | None = None) -> dict[str, str]:
    """{recipe: the head's base URL} of every recorded run not stopped (or only `recipe_id`'s, or only the
    entries of `stack`, whose ids are `<stack>//<container>`)."""
    found = {}
    ids = [recipe_id] if recipe_id else run_record.recorded()
    for rid in [i for i in ids if i.startswith(f"{stack}//")] if stack else ids:
        record = run_record.read(rid) or {}
        if record.get("base_url") and not run_record.stop_mark(record):
            found[rid] = record["base_url"]
    return found


def now(recipe_id: str | None, clock: Callable[[], float] = time.monotonic,
        stack: str | None = None) -> dict[str, dict[str, Any] | None]:
    """One snapshot per server (None for a server that does not answer)."""
    return {rid: metrics.read(base, clock()) for rid, base in servers(recipe_id, stack).items()}


def line(rid: str, figures: dict[str, Any] | None) -> str:
    if figures is None:
        return f"{rid:<32} /metrics does not answer"

    def shown(key: str, form: str) -> str:
        return form.format(figures[key]) if figures.get(key) is not None else "-"
    kv = shown("kv_cache_used", "{:.1%}")
    return (f"{rid:<32} {shown('generation_tok_s', '{:.1f}'):>10} {shown('running', '{:.0f}'):>8} "
            f"{shown('waiting', '{:.0f}'):>8} {kv:>8} {shown('ttft_mean_ms', '{:.1f}'):>10}")


HEADER = f"{'recipe':<32} {'gen tok/s':>10} {'running':>8} {'waiting':>8} {'KV used':>8} {'TTFT ms':>10}"


def live(recipe_id: str | None, interval: float, count: int | None, stack: str | None = None) -> int:
    """Refresh every `interval` seconds (`count` frames, else until Ctrl-C); rates are over each interval.
    A stack's view is its entries' vLLM numbers: its LiteLLM gateway serves no /metrics as runrecipe runs it."""
    before = now(recipe_id, stack=stack)
    frames = 0
    clear = "\033[H\033[J" if sys.stdout.isatty() else ""
    try:
        while count is None or frames < count:
            time.sleep(interval)
            current = now(recipe_id, stack=stack)
            print(f"{clear}{time.strftime('%H:%M:%S')}  vLLM /metrics, over the last {interval:g} s "
                  "(TTFT: mean of the requests that got their first token in it)")
            print(HEADER)
            for rid, snap in current.items():
                old = before.get(rid)
                print(line(rid, metrics.rates(old, snap) if snap and old else None if snap is None else
                           {**snap, "generation_tok_s": None, "ttft_mean_ms": None}))
            if not current:
                print("nothing running" + (f" for {recipe_id}" if recipe_id else f" in stack {stack}" if stack else ""))
            sys.stdout.flush()
            before, frames = current, frames + 1
    except KeyboardInterrupt:
        return 0
    return 0

