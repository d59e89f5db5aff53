"""The CLI reference (docs/cli.md), made from the parsers themselves so it cannot drift from them.

`python3 -m tasks.cli.reference > docs/cli.md` regenerates it; tests/unit/test_cli_reference.py fails
when the file differs. The tables are written from each parser's actions, not from `--help`, whose
layout changes with the terminal's width and the Python release; only the usage lines come from
argparse, with a fixed-width formatter.
"""
from __future__ import annotations

import argparse
import ast
import functools
import textwrap
from typing import Callable, Iterator

from .. import settings
from . import loader, main as cli

WIDTH = 100
DODO = settings.CODE_ROOT / "dodo.py"

HEADER = """\
# CLI reference

Generated from the parsers by `python3 -m tasks.cli.reference > docs/cli.md`; do not edit by hand
(`tests/unit/test_cli_reference.py` fails when this file and the parsers differ). What the flags do
in depth: [recipes](recipes.md), [cluster](cluster.md), [serving](serving.md), [stacks](stacks.md),
[bench](bench.md); the origin's flags compared one by one: [coming from spark-vllm-docker](coming-from-spark-vllm-docker.md).

`./run-recipe.sh` is `run-recipe` in the project's own `.venv/` (made on first use). Everything after
the first `--` goes to vLLM, in order, one word each. Exit codes: 0 success, 1 a step failed or bad
input (the message says which), 2 usage error, 130 interrupted.

Flags that contradict each other are a usage error naming both (the pairs are listed under each
table, plus `--ray`/`--no-ray` with `--solo`, and `--no-build` without `--setup` or `--build-only`).
So is a typed flag out of its kind or range, naming the flag: `--port` and `--master-port` 1-65535,
`--tp` 1-1024, `--max-model-len` a whole number (vLLM's `4k` or `auto` go through
`-o max_model_len=4k`), `--gpu-mem` above 0 and at most 1, `--ready-timeout` finite seconds above 0
(digits are ASCII only). An option run-recipe does not know is refused with the line that hands it
to vLLM: `run-recipe X -- --foo 1`.
"""


def _fixed(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The same usage text on every terminal: argparse would otherwise wrap at $COLUMNS."""
    p.formatter_class = functools.partial(argparse.HelpFormatter, width=WIDTH)  # type: ignore[assignment]
    return p


# What each command is for, in the order the reference shows them; the parsers come from cli.COMMANDS.
PURPOSE = {
    "status": "What runs, where, since when: containers by label on every node (recipe, state, endpoint).",
    "stop": "Remove a recipe's containers on every node (`stop` alone lists what runs and stops nothing).",
    "logs": "A node's server log (default: the head).",
    "lint": "Check recipes (default: the whole catalogue).",
    "bench": "Measure what runs; list, compare and chart stored results.",
    "stack": "Several recipes at once, behind one gateway.",
    "watch": "Keep a recipe serving: re-form the group when a rank dies or the head stops answering. Takes the "
             "run's own words (RECIPE and its run options) besides these.",
    "install-service": "A systemd unit that converges the recipe (`-d`), then watches it. Takes the run's own "
                       "words too.",
    "uninstall-service": "Disable, stop and remove the unit.",
}


def commands() -> list[tuple[str, Callable[[], argparse.ArgumentParser], str]]:
    """Every command with its parser and a line saying what it is for, in the order the reference shows them."""
    main = ("run-recipe", cli.parser, "Serve a recipe (the main job); `run-recipe plan RECIPE [OPTIONS] [--json]` "
            "takes the same options and asks every node, read-only, whether each step is up to date (and why) or "
            "what would run, and what a copy would send to each node.")
    return [main] + [(f"run-recipe {name}", functools.partial(cli.COMMANDS[name].parser, name), purpose)
                     for name, purpose in PURPOSE.items()]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _value(action: argparse.Action) -> str:
    """What follows the option on the command line, as argparse's help shows it."""
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        words = list(action.metavar) if isinstance(action.metavar, tuple) else [action.metavar]
    elif action.choices:
        words = ["{" + ",".join(map(str, action.choices)) + "}"]
    else:
        words = [action.dest.upper() if action.option_strings else action.dest]
    if action.nargs == "?":
        return f"[{words[0]}]"
    if action.nargs in ("*", "+"):
        return f"[{words[0]} ...]" if action.nargs == "*" else f"{words[0]} [...]"
    return " ".join(words)


def _row(action: argparse.Action) -> str:
    if action.option_strings:
        names = ", ".join(f"`{name}`" for name in action.option_strings)
        value = _value(action)
        shown = f"`{_cell(value)}`" if value else ""
    else:  # a positional: its name, and whether it may be left out
        names = f"`{_cell(str(action.metavar or action.dest))}`"
        choices = "{" + ",".join(map(str, action.choices)) + "}" if action.choices else ""
        shown = " ".join(filter(None, [f"`{choices}`" if choices else "",
                                       "optional" if action.nargs in ("?", "*") else ""]))
    return f"| {names} | {shown} | {_cell(action.help or '')} |"


def _groups(p: argparse.ArgumentParser) -> Iterator[tuple[str, list[argparse.Action]]]:
    """Each argument group with its shown actions (hidden ones and -h left out), positionals first."""
    for group in p._action_groups:
        actions = [a for a in group._group_actions
                   if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
        if actions:
            yield group.title or "options", actions


def _pairs(p: argparse.ArgumentParser) -> list[str]:
    """The flags a usage error keeps apart, one group per entry."""
    return [" / ".join(f"`{a.option_strings[0]}`" for a in group._group_actions if a.option_strings)
            for group in p._mutually_exclusive_groups]


def section(title: str, p: argparse.ArgumentParser, about: str) -> str:
    lines = [f"## {title}", "", about, ""]
    if p.description:
        lines += [p.description, ""]
    lines += ["```", _fixed(p).format_usage().rstrip(), "```", ""]
    for name, actions in _groups(p):
        lines += [f"**{name}**", "", "| option | value | what it does |", "|---|---|---|"]
        lines += [_row(a) for a in actions] + [""]
    if pairs := _pairs(p):
        lines += ["Not together: " + "; ".join(pairs) + ".", ""]
    return "\n".join(lines)


def doit_section() -> str:
    """`doit` over the same graph: dodo.py's own docstring (read, not imported: importing it takes the lock)."""
    text = ast.get_docstring(ast.parse(DODO.read_text(encoding="utf-8"))) or ""
    shown = next((part for part in text.split("\n\n") if part.startswith("    ")), text)
    names = ", ".join(f"`{name}`" for name in loader.DOIT_OPTION_VARS)
    lines = ["## doit", "", "The same graph through doit (`dodo.py`):", "", "```", textwrap.dedent(shown).strip(), "```", "",
             f"Variables that are options, not recipe parameters: {names}. Any other `key=value` sets a "
             "recipe parameter, as `-o key=value` does.", ""]
    lines += [f"- `{name}=`: {_cell(meaning)}" for name, meaning in loader.SWITCHES.items()]
    return "\n".join(lines) + "\n"


def reference() -> str:
    """docs/cli.md's text."""
    parts = [HEADER] + [section(title, make(), about) for title, make, about in commands()] + [doit_section()]
    return "\n".join(parts)


if __name__ == "__main__":
    print(reference(), end="")

