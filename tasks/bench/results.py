"""Benchmark results as plain data: vLLM's result JSON read, the deployment's fingerprint, history, compare.

A number means something only next to what produced it, so every stored result carries the
fingerprint of the deployment it measured (image ID, launch inputs hash, the serve argv, weights
commits, mods, nodes, backend, vLLM version) and the benchmark's own parameters. Results with the same
fingerprint are the same deployment measured again; two fingerprints differ in named items (a flag,
a mod, a commit, the image), which is what `bench --compare` says beside the deltas. No I/O here:
bench_run measures and stores, bench_cli prints.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Sequence

from ..errors import ConfigError
from ..vllm_args import flag_name, is_flag

SCHEMA = 1
# (our name, vLLM's key in its --save-result JSON, what it is, higher is better)
FIGURES: tuple[tuple[str, str, str, bool], ...] = (
    ("output_tok_s", "output_throughput", "output tokens/s", True),
    ("total_tok_s", "total_token_throughput", "total tokens/s", True),
    ("requests_s", "request_throughput", "requests/s", True),
    *((f"{m}_{stat}_ms", f"{stat}_{m}_ms", f"{m.upper()} {stat} ms", False)
      for m in ("ttft", "tpot", "itl") for stat in ("median", "p90", "p99")),
)
OPTIONAL = {"ttft_p90_ms", "tpot_p90_ms", "itl_p90_ms"}  # vLLM writes p90 only when asked for it
FINGERPRINT_KEYS = ("image", "inputs", "argv", "weights", "mods", "nodes", "backend", "vllm", "bench")


class BenchError(ConfigError):
    """A result, reference or record bench cannot use; the message names it and the fix."""


def level(data: Any, concurrency: int) -> dict[str, Any]:
    """One concurrency level's figures from `vllm bench serve --save-result`'s JSON."""
    if not isinstance(data, dict):
        raise BenchError("vLLM's bench result is not a JSON object")
    missing = [key for name, key, _, _ in FIGURES if name not in OPTIONAL and not _number(data.get(key))]
    missing += [key for key in ("completed",) if not _number(data.get(key))]
    if missing:
        raise BenchError(f"vLLM's bench result lacks {', '.join(missing)}: this vLLM's `bench serve` writes "
                         "other fields than runrecipe reads (vLLM 0.1x-0.3x's names)")
    completed = int(data["completed"])
    asked = int(data["num_prompts"]) if _number(data.get("num_prompts")) else completed
    failed = int(data["failed"]) if _number(data.get("failed")) else asked - completed
    out = {"concurrency": concurrency, "completed": completed, "failed": failed,
           "duration_s": float(data["duration"]) if _number(data.get("duration")) else None}
    out.update({name: float(data[key]) for name, key, _, _ in FIGURES if _number(data.get(key))})
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def fingerprint(record: dict, vllm_version: str, params: dict[str, int]) -> dict[str, Any]:
    """What ran, from its run record (head first), and how it was measured."""
    nodes = record.get("nodes") or []
    if not nodes:
        raise BenchError(f"the run record of {record.get('recipe', '?')} names no node: start it again")
    head = nodes[0]
    return {"image": head.get("image"), "inputs": head.get("inputs"), "argv": list(record.get("argv") or []),
            "weights": sorted(head.get("weights") or []),
            "mods": sorted(f"{m.get('name')}@{m.get('sha256')}" for m in head.get("mods") or []),
            "nodes": [n.get("node") for n in nodes], "backend": record.get("backend"), "vllm": vllm_version,
            "bench": dict(sorted(params.items()))}


def stack_fingerprint(stack: str, entries: dict[str, dict[str, Any]], gateway: dict[str, str],
                      params: dict[str, int]) -> dict[str, Any]:
    """What a stack ran: each entry's fingerprint by the model name the gateway routes (without the bench's
    parameters, which are the stack's), the gateway's image and configuration hash, and the parameters."""
    return {"stack": stack, "entries": {model: {k: v for k, v in fp.items() if k != "bench"}
                                        for model, fp in sorted(entries.items())},
            "gateway": dict(sorted(gateway.items())), "bench": dict(sorted(params.items()))}


def fingerprint_id(fp: dict[str, Any]) -> str:
    """A short name for a fingerprint: the same for the same deployment and parameters."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]


def document(recipe_id: str, fp: dict[str, Any], levels: Sequence[dict], started: str, finished: str) -> dict:
    """The stored result: written only when every level completed."""
    return {"schema": SCHEMA, "recipe": recipe_id, "started": started, "finished": finished,
            "fingerprint_id": fingerprint_id(fp), "fingerprint": fp, "levels": list(levels)}


# -- what differs ---------------------------------------------------------------------------------------

def argv_options(argv: Sequence[str]) -> dict[str, str]:
    """The serve command's words as {flag as vLLM reads it: value} ("" for a bare switch), positional
    words under `#N`; the last of a repeated flag wins, as in vLLM's parser."""
    options: dict[str, str] = {}
    words, i, position = list(argv), 0, 0
    while i < len(words):
        word = words[i]
        if is_flag(word):
            name = flag_name(word)
            if "=" in word:
                options[name] = word.split("=", 1)[1]
            elif i + 1 < len(words) and not is_flag(words[i + 1]):
                options[name], i = words[i + 1], i + 1
            else:
                options[name] = ""
        else:
            options[f"#{position}"], position = word, position + 1
        i += 1
    return options


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Each item in which fingerprint `b` differs from `a`: {"what", "item", "a", "b"} (None: absent); a stack's
    entries' items also say {"entry": model}."""
    if "entries" in a or "entries" in b:
        return _stack_differences(a, b)
    found: list[dict[str, Any]] = []
    for what in FINGERPRINT_KEYS:
        old, new = a.get(what), b.get(what)
        if old == new:
            continue
        if what == "argv":
            found += _mapping_diff(what, argv_options(old or []), argv_options(new or []))
        elif what in ("weights", "mods"):
            found += _mapping_diff(what, _by_name(old or []), _by_name(new or []))
        elif what == "bench":
            found += _mapping_diff(what, old or {}, new or {})
        else:
            found.append({"what": what, "item": what, "a": old, "b": new})
    return found


def _stack_differences(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """An entry added or removed (its fingerprint id), each kept entry's differences, the gateway's, the bench's."""
    found: list[dict[str, Any]] = []
    old, new = a.get("entries") or {}, b.get("entries") or {}
    for model in dict.fromkeys([*old, *new]):
        if model in old and model in new:
            found += [{"entry": model, **d} for d in differences(old[model], new[model])]
        else:
            found.append({"what": "entries", "item": model, "a": fingerprint_id(old[model]) if model in old else None,
                          "b": fingerprint_id(new[model]) if model in new else None})
    for what in ("gateway", "bench"):
        found += _mapping_diff(what, a.get(what) or {}, b.get(what) or {})
    return found


def _by_name(items: Iterable[str]) -> dict[str, str]:
    """`repo@commit` / `mod@sha256` as {name: version}: a changed commit is one item, not two."""
    return dict(item.rsplit("@", 1) if "@" in item else (item, "") for item in items)


def _mapping_diff(what: str, a: dict, b: dict) -> list[dict[str, Any]]:
    return [{"what": what, "item": key, "a": a.get(key), "b": b.get(key)}
            for key in dict.fromkeys([*a, *b]) if a.get(key) != b.get(key)]


def compare(a: dict, b: dict) -> dict[str, Any]:
    """Result `b` against result `a`: per concurrency level (and a stack's model) both measured, each figure's
    change (absolute and percent, and whether it is better), and what differs between their fingerprints."""
    mine = {(lv.get("model"), lv["concurrency"]): lv for lv in b["levels"]}
    levels = []
    for old in a["levels"]:
        new = mine.get((old.get("model"), old["concurrency"]))
        if new is None:
            continue
        figures = {}
        for name, _, label, higher in FIGURES:
            if name in old and name in new:
                delta = new[name] - old[name]
                figures[name] = {"label": label, "a": old[name], "b": new[name], "delta": delta,
                                 "percent": 100 * delta / old[name] if old[name] else None,
                                 "better": (delta > 0) == higher if delta else None}
        levels.append({**({"model": old["model"]} if "model" in old else {}), "concurrency": old["concurrency"],
                       "figures": figures})
    return {"a": _ref(a), "b": _ref(b), "differences": differences(a["fingerprint"], b["fingerprint"]),
            "levels": levels}


def _ref(result: dict) -> dict[str, str]:
    return {"recipe": result["recipe"], "started": result["started"], "fingerprint_id": result["fingerprint_id"]}


# -- history ------------------------------------------------------------------------------------------

def history(results: Iterable[dict]) -> list[dict[str, Any]]:
    """Results grouped by fingerprint, oldest group first, each group's runs oldest first."""
    groups: dict[str, dict[str, Any]] = {}
    for result in sorted(results, key=lambda r: r["started"]):
        group = groups.setdefault(result["fingerprint_id"], {"fingerprint_id": result["fingerprint_id"],
                                                            "fingerprint": result["fingerprint"], "runs": []})
        group["runs"].append({"started": result["started"], "levels": result["levels"]})
    return list(groups.values())


def select(results: Sequence[dict], ref: str) -> dict:
    """The result `ref` names among one recipe's: its start time, or a fingerprint id (or a prefix of
    one: its latest run); "" is the latest result."""
    ordered = sorted(results, key=lambda r: r["started"])
    if not ordered:
        raise BenchError("no stored result to compare: run `run-recipe bench RECIPE` first")
    timed = [r for r in ordered if r["started"] == ref]
    matches = timed or [r for r in ordered if r["fingerprint_id"].startswith(ref)]
    ids = {r["fingerprint_id"] for r in matches}
    if not matches:
        raise BenchError(f"no stored result is '{ref}': give a start time or a fingerprint id that "
                         "`run-recipe bench --history RECIPE` lists")
    if len(ids) > 1 and ref:
        raise BenchError(f"'{ref}' starts {len(ids)} fingerprint ids ({', '.join(sorted(ids))}): give more of one")
    return matches[-1]

