"""run-recipe bench: measure what runs, list the results by fingerprint, compare two, chart them.

The command line only: parsing and printing. Measuring and storing are bench_run's, the figures and
fingerprints bench's (plain data), the chart bench_chart's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import bench, bench_run
from .bench import BenchError
from .flagtypes import count, seconds
from .lifecycle import id_of

LEVELS_MAX = 4096


def levels(text: str) -> tuple[int, ...]:
    """--concurrency: comma-separated whole numbers (1-4096), each level measured once, in this order."""
    words = [w.strip() for w in text.split(",")]
    try:
        found = tuple(count(LEVELS_MAX)(w) for w in words)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of concurrency levels: give whole numbers "
                                         f"from 1 to {LEVELS_MAX} separated by commas (e.g. 1,4,16)") from None
    if len(set(found)) != len(found):
        raise argparse.ArgumentTypeError(f"'{text}' names a concurrency level twice: give each once")
    return found


def parser() -> argparse.ArgumentParser:
    defaults = bench_run.Params()
    p = argparse.ArgumentParser(
        prog="run-recipe bench", description="Measure a running recipe with vLLM's own `vllm bench serve` (random "
        "prompts, from the deployment's own image); each result is stored with the deployment's fingerprint.",
        usage="run-recipe bench RECIPE [--concurrency 1,4] [--requests N] [--input-len N] [--output-len N] "
        "[--timeout S] [--json]\n       run-recipe bench --history RECIPE [--chart FILE.png] [--json]\n"
        "       run-recipe bench --compare A B [--json]   (A, B: RECIPE, RECIPE@TIME|ID, or a result file)")
    p.add_argument("recipe", nargs="?", help="the running recipe to measure (or whose results to list)")
    p.add_argument("--concurrency", type=levels, default=defaults.concurrency, metavar="C1,C2",
                   help="concurrency levels, each measured with --requests requests (default 1,4)")
    p.add_argument("--requests", type=count(1_000_000), default=defaults.requests, metavar="N",
                   help=f"requests per level (default {defaults.requests})")
    p.add_argument("--input-len", type=count(1_000_000), default=defaults.input_len, metavar="N",
                   help=f"prompt tokens per request (default {defaults.input_len})")
    p.add_argument("--output-len", type=count(1_000_000), default=defaults.output_len, metavar="N",
                   help=f"tokens generated per request (default {defaults.output_len})")
    p.add_argument("--timeout", type=seconds, default=defaults.timeout, metavar="S",
                   help=f"bound on the whole bench, in seconds (default {defaults.timeout:.0f})")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--history", action="store_true", help="list RECIPE's stored results, grouped by fingerprint")
    what.add_argument("--compare", nargs=2, metavar=("A", "B"), help="B's figures against A's, and what differs")
    p.add_argument("--chart", type=Path, metavar="FILE.png",
                   help="with --history: draw throughput and TTFT against concurrency, one line per fingerprint")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def main(args: list[str]) -> int:
    p = parser()
    ns = p.parse_args(args)
    if ns.chart and not ns.history:
        p.error("argument --chart: only with --history (it draws the stored results)")
    if ns.compare:
        if ns.recipe:
            p.error("--compare takes its two results (A B) and no RECIPE")
        return _compare(*(_result(ref) for ref in ns.compare), ns.json)
    if not ns.recipe or not ns.recipe.strip():
        p.error("name a recipe (see `run-recipe status` for what runs)")
    rid = id_of(ns.recipe)
    if ns.history:
        return _history(rid, ns.json, ns.chart)
    return _measure(rid, bench_run.Params(ns.concurrency, ns.requests, ns.input_len, ns.output_len, ns.timeout),
                    ns.json)


def _measure(rid: str, params: bench_run.Params, as_json: bool) -> int:
    from .connect import LocalRunner

    runner = LocalRunner()  # the head is this machine (a cluster run starts from it)
    target = bench_run.target(runner, rid)
    doc = bench_run.measure(runner, target, params, _say)
    path = bench_run.store(doc)
    if as_json:
        print(json.dumps({**doc, "file": str(path)}, indent=2))
        return 0
    print(f"{rid}: fingerprint {doc['fingerprint_id']} (vLLM {doc['fingerprint']['vllm']}, "
          f"{doc['fingerprint']['backend']}, {len(doc['fingerprint']['nodes'])} node(s)); stored in {path}")
    for lv in doc["levels"]:
        print(_level_line(lv))
    return 0


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _level_line(lv: dict[str, Any]) -> str:
    p90 = f", p90 {lv['ttft_p90_ms']:.1f}" if "ttft_p90_ms" in lv else ""
    return (f"  concurrency {lv['concurrency']:>4}: {lv['output_tok_s']:9.1f} output tok/s {lv['total_tok_s']:9.1f} "
            f"total tok/s {lv['requests_s']:7.2f} req/s | TTFT median {lv['ttft_median_ms']:.1f}{p90}, p99 "
            f"{lv['ttft_p99_ms']:.1f} ms | TPOT median {lv['tpot_median_ms']:.1f} ms | ITL median "
            f"{lv['itl_median_ms']:.1f} ms | {lv['completed']} ok, {lv['failed']} failed")


def _history(rid: str, as_json: bool, chart: Path | None) -> int:
    groups = bench.history(bench_run.stored(rid))
    if not groups:
        raise BenchError(f"no stored bench result for {rid}: run `run-recipe bench {rid}` while it runs")
    if chart:
        from .bench_chart import write

        write(groups, chart, f"{rid}: throughput and TTFT against concurrency")
    if as_json:
        print(json.dumps(groups, indent=2))
        return 0
    for i, group in enumerate(groups):
        fp = group["fingerprint"]
        print(f"fingerprint {group['fingerprint_id']}: image {str(fp['image'])[:19]}, vLLM {fp['vllm']}, "
              f"{fp['backend']} on {', '.join(map(str, fp['nodes']))}; {fp['bench'].get('requests')} requests "
              f"of {fp['bench'].get('input_len')} -> {fp['bench'].get('output_len')} tokens per level")
        if i:
            print(f"  differs from {groups[i - 1]['fingerprint_id']}: "
                  + "; ".join(_difference(d) for d in bench.differences(groups[i - 1]["fingerprint"], fp)))
        for run in group["runs"]:
            print(f"  {run['started']}")
            for lv in run["levels"]:
                print(f"  {_level_line(lv)}")
    if chart:
        print(f"chart written to {chart}")
    return 0


def _difference(d: dict[str, Any]) -> str:
    """`argv --max-num-seqs: (absent) -> 8`, `image: sha256:… -> sha256:…`."""
    def shown(value: Any) -> str:
        if value is None or value == "":
            return "(absent)" if value is None else "(set)"
        if d["what"] in ("inputs", "image"):  # hashes: their first characters tell them apart
            return str(value)[:19]
        return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    what = d["what"] if d["item"] == d["what"] else f"{d['what']} {d['item']}"
    return f"{what}: {shown(d['a'])} -> {shown(d['b'])}"


def _result(ref: str) -> dict:
    """A result file, or RECIPE (its latest result), or RECIPE@TIME|FINGERPRINT-ID."""
    if ref.endswith(".json") and Path(ref).is_file():
        return bench_run.load(Path(ref))
    name, _, which = ref.rpartition("@") if "@" in ref else (ref, "", "")
    rid = id_of(name)
    results = bench_run.stored(rid)
    if not results:
        raise BenchError(f"--compare {ref}: no stored bench result for {rid} (run `run-recipe bench {rid}`)")
    return bench.select(results, which)


def _compare(a: dict, b: dict, as_json: bool) -> int:
    report = bench.compare(a, b)
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    for side in ("a", "b"):
        ref = report[side]
        print(f"{side.upper()}: {ref['recipe']} at {ref['started']} (fingerprint {ref['fingerprint_id']})")
    diffs = report["differences"]
    print("what differs: " + ("; ".join(_difference(d) for d in diffs) if diffs else "nothing (the same fingerprint)"))
    if not report["levels"]:
        print("no concurrency level was measured in both")
    for lv in report["levels"]:
        print(f"concurrency {lv['concurrency']}:")
        for fig in lv["figures"].values():
            pct = f", {fig['percent']:+.1f}%" if fig["percent"] is not None else ""
            mark = {True: "better", False: "worse", None: "same"}[fig["better"]]
            print(f"  {fig['label']:<18} {fig['a']:10.2f} -> {fig['b']:10.2f} ({fig['delta']:+.2f}{pct}, {mark})")
    return 0

