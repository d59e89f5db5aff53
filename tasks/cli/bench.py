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

from ..bench import results as bench, run as bench_run
from ..bench.results import BenchError
from ..flagtypes import count, seconds
from ..recipe import ENV_NAME
from ..serve.lifecycle import id_of

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


def variable(text: str) -> str:
    """--api-key-env: a variable's name (the value is not echoed: it may be the key itself, given by mistake)."""
    if not ENV_NAME.match(text):
        raise argparse.ArgumentTypeError("not an environment variable name: give the NAME of the variable that "
                                         "holds the key (letters, digits, _), never the key itself")
    return text


def parser(stack: str | None = None) -> argparse.ArgumentParser:
    """`run-recipe bench`'s options, or (`stack`: its name) `run-recipe stack NAME bench`'s: the same but the
    subject, which the stack names, and the key, which is its gateway's."""
    defaults = bench_run.Params()
    measure = "[--concurrency 1,4] [--requests N] [--input-len N] [--output-len N] [--timeout S] [--json]"
    if stack is None:
        p = argparse.ArgumentParser(
            prog="run-recipe bench", description="Measure a running recipe with vLLM's own `vllm bench serve` "
            "(random prompts, from the deployment's own image); each result is stored with the deployment's "
            "fingerprint.", usage=f"run-recipe bench RECIPE {measure} [--api-key-env NAME]\n"
            "       run-recipe bench --history RECIPE [--chart FILE.png] [--json]\n"
            "       run-recipe bench --compare A B [--json]   (A, B: RECIPE, RECIPE@TIME|ID, or a result file)")
        p.add_argument("recipe", nargs="?", help="the running recipe to measure (or whose results to list)")
        p.add_argument("--api-key-env", type=variable, default="VLLM_API_KEY", metavar="NAME",
                       help="for a server started with an API key: the variable (environment, else .env) that "
                       "holds it (default VLLM_API_KEY); it reaches the client by environment, never its command")
    else:
        p = argparse.ArgumentParser(
            prog=f"run-recipe stack {stack} bench", description="Measure a running stack through its gateway with "
            "vLLM's own `vllm bench serve`, each model from its entry's own image (with the gateway's key when it "
            "has one); each result is stored with every entry's and the gateway's fingerprint.",
            usage=f"run-recipe stack NAME bench {measure}\n       run-recipe stack NAME bench --history "
            "[--chart FILE.png] [--json]\n       run-recipe stack NAME bench --compare A B [--json]   (A, B: "
            "STACK, STACK@TIME|ID, or a result file)")
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
    what.add_argument("--history", action="store_true", help="list the stored results, grouped by fingerprint")
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
    return _measure(rid, _params(ns), ns.json, ns.api_key_env)


def stack_main(name: str, args: list[str]) -> int:
    """`run-recipe stack NAME bench ...`: measure the stack through its gateway, or its results."""
    p = parser(name)
    ns = p.parse_args(args)
    if ns.chart and not ns.history:
        p.error("argument --chart: only with --history (it draws the stored results)")
    if ns.compare:
        return _compare(*(_result(ref, stack=True) for ref in ns.compare), ns.json)
    if ns.history:
        return _history(_stack_name(name), ns.json, ns.chart, stack=True)
    from ..bench.stack import measure, target
    from ..connect import Local

    runner = Local()  # the gateway runs on the head, which is this machine
    doc = measure(runner, target(runner, name), _params(ns), _say)
    return _stored(doc, ns.json)


def _stack_name(name: str) -> str:
    """The stack's own name (its file's `name:`), under which its results are stored; the name as given when
    the file no longer loads (its results can still be listed)."""
    from ..errors import ConfigError
    from ..stacks import files as stack

    try:
        return stack.load(stack.find(name)).name
    except ConfigError:
        return name


def _params(ns: argparse.Namespace) -> bench_run.Params:
    return bench_run.Params(ns.concurrency, ns.requests, ns.input_len, ns.output_len, ns.timeout)


def _measure(rid: str, params: bench_run.Params, as_json: bool, key_var: str) -> int:
    from ..connect import Local

    runner = Local()  # the head is this machine (a cluster run starts from it)
    target = bench_run.target(runner, rid, _key(key_var), key_var)
    return _stored(bench_run.measure(runner, target, params, _say), as_json)


def _key(var: str) -> str:
    """The value of `var`, from the environment, else .env ("" when neither sets it); masked from then on."""
    from ..config import read_env
    from ..masking import remember_secret
    from ..stacks.keys import gateway_key

    key = gateway_key(var, read_env(None).values)
    remember_secret(key)
    return key


def _stored(doc: dict, as_json: bool) -> int:
    """Store the result and print it."""
    path = bench_run.store(doc)
    if as_json:
        print(json.dumps({**doc, "file": str(path)}, indent=2))
        return 0
    print(f"{doc['recipe']}: fingerprint {doc['fingerprint_id']} ({_about(doc['fingerprint'])}); stored in {path}")
    for lv in doc["levels"]:
        print(_level_line(lv))
    return 0


def _about(fp: dict[str, Any]) -> str:
    """What a fingerprint measured, in a few words: `vLLM 0.32.0, solo, 1 node(s)`, or a stack's entries."""
    if "entries" in fp:
        entries = ", ".join(f"{model} (vLLM {e['vllm']}, {e['backend']}, {len(e['nodes'])} node(s))"
                            for model, e in fp["entries"].items())
        return f"through the gateway {str(fp['gateway'].get('image'))[:19]}: {entries}"
    return f"vLLM {fp['vllm']}, {fp['backend']}, {len(fp['nodes'])} node(s)"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _level_line(lv: dict[str, Any]) -> str:
    p90 = f", p90 {lv['ttft_p90_ms']:.1f}" if "ttft_p90_ms" in lv else ""
    model = f"{lv['model']}, " if "model" in lv else ""
    return (f"  {model}concurrency {lv['concurrency']:>4}: {lv['output_tok_s']:9.1f} output tok/s {lv['total_tok_s']:9.1f} "
            f"total tok/s {lv['requests_s']:7.2f} req/s | TTFT median {lv['ttft_median_ms']:.1f}{p90}, p99 "
            f"{lv['ttft_p99_ms']:.1f} ms | TPOT median {lv['tpot_median_ms']:.1f} ms | ITL median "
            f"{lv['itl_median_ms']:.1f} ms | {lv['completed']} ok, {lv['failed']} failed")


def _history(rid: str, as_json: bool, chart: Path | None, stack: bool = False) -> int:
    groups = bench.history(bench_run.stored(rid, stack))
    if not groups:
        how = f"run-recipe stack {rid} bench" if stack else f"run-recipe bench {rid}"
        raise BenchError(f"no stored bench result for {'stack ' if stack else ''}{rid}: run `{how}` while it runs")
    if chart:
        from ..bench.chart import write

        write(groups, chart, f"{'stack ' if stack else ''}{rid}: throughput and TTFT against concurrency")
    if as_json:
        print(json.dumps(groups, indent=2))
        return 0
    for i, group in enumerate(groups):
        fp = group["fingerprint"]
        about = (_about(fp) if "entries" in fp else f"image {str(fp['image'])[:19]}, vLLM {fp['vllm']}, "
                 f"{fp['backend']} on {', '.join(map(str, fp['nodes']))}")
        print(f"fingerprint {group['fingerprint_id']}: {about}; {fp['bench'].get('requests')} requests "
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
    """`argv --max-num-seqs: (absent) -> 8`, `image: sha256:… -> sha256:…`; a stack's entry's with its model first."""
    def shown(value: Any) -> str:
        if value is None or value == "":
            return "(absent)" if value is None else "(set)"
        if d["what"] in ("inputs", "image", "gateway", "entries"):  # hashes: their first characters tell them apart
            return str(value)[:19]
        return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    what = d["what"] if d["item"] == d["what"] else f"{d['what']} {d['item']}"
    return f"{d['entry'] + ' ' if 'entry' in d else ''}{what}: {shown(d['a'])} -> {shown(d['b'])}"


def _result(ref: str, stack: bool = False) -> dict:
    """A result file, or RECIPE (its latest result), or RECIPE@TIME|FINGERPRINT-ID; a STACK's with `stack`."""
    if ref.endswith(".json") and Path(ref).is_file():
        return bench_run.load(Path(ref))
    name, _, which = ref.rpartition("@") if "@" in ref else (ref, "", "")
    rid = _stack_name(name) if stack else id_of(name)
    results = bench_run.stored(rid, stack)
    if not results:
        how = f"run-recipe stack {rid} bench" if stack else f"run-recipe bench {rid}"
        raise BenchError(f"--compare {ref}: no stored bench result for {rid} (run `{how}`)")
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
        print(f"{lv['model'] + ', ' if 'model' in lv else ''}concurrency {lv['concurrency']}:")
        for fig in lv["figures"].values():
            pct = f", {fig['percent']:+.1f}%" if fig["percent"] is not None else ""
            mark = {True: "better", False: "worse", None: "same"}[fig["better"]]
            print(f"  {fig['label']:<18} {fig['a']:10.2f} -> {fig['b']:10.2f} ({fig['delta']:+.2f}{pct}, {mark})")
    return 0


