"""`run-recipe lint`: one parser for both checks, so `lint --help` shows all of them.

Without --vllm/--venv it runs the recipe rules (lint: no Docker, no network); with them, vLLM's own
parser over every recipe's argvs (lint_vllm). Part of the command line: it prints.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from .. import settings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run-recipe lint",
        description="Check recipes without Docker or network: schema, placeholders, cluster/solo vs "
                    "parallelism, mods, build args, model ids, duplicate vLLM flags, env names, and "
                    "`bash -n` of the launch script. With --vllm, ask vLLM's own parser instead. Exit 1 if "
                    "any error.")
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                   help="recipe files or folders (default: the recipes folder)")
    p.add_argument("--json", action="store_true", help="print the findings as a JSON list (the recipe rules)")
    p.add_argument("--vllm", nargs="?", const="", metavar="IMAGE",
                   help="check every recipe's argvs with vLLM's own parser: in each recipe's own image (with "
                        "its mods, where built here), or all in IMAGE (advisory)")
    p.add_argument("--venv", type=Path, metavar="PATH",
                   help="with --vllm: use the vLLM of a local venv (advisory; runs no recipe code here)")
    return p


def main(args: list[str]) -> int:
    p = parser()
    ns = p.parse_args(args)
    paths = ns.paths or [settings.recipes_dir()]
    if ns.vllm is not None or ns.venv is not None:
        if ns.json:
            p.error("--json is for the recipe rules; lint --vllm prints its findings as text")
        from .lint_vllm import run

        return run(ns.vllm or "", ns.venv, paths)
    return rules(paths, ns.json)


def rules(paths: list[Path], as_json: bool) -> int:
    from ..lint.rules import ERROR, lint_paths

    findings, count = lint_paths(paths)
    errors = sum(f.severity == ERROR for f in findings)
    if as_json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        for finding in findings:
            print(finding.format())
        warnings = len(findings) - errors
        print(f"{count} recipe{'s' if count != 1 else ''} checked: "
              f"{errors} error{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}")
    sys.stdout.flush()
    return 1 if errors else 0

