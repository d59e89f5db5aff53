"""run-recipe's typed flags: a value of the wrong kind or out of range is a usage error naming the flag.

The origin types --port, --tp, --max-model-len and --master-port as integers and --gpu-mem as a float,
so `--max-model-len 4k` stops at the command line instead of inside vLLM minutes later. These are
argparse `type=` callables: argparse prefixes the flag ("argument --tp: ...") and exits 2, as it does
for conflicting flags. Digits are ASCII only (int() also reads '٢' and '1_0'). The messages say what
to do, including how to hand vLLM a spelling we refuse (`-o key=value`, or after `--`).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shlex
from pathlib import Path
from typing import Any, Callable, Sequence

from .nodes import port_number

_WHOLE = re.compile(r"[0-9]{1,12}")
_DECIMAL = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,3})?")
MAX_LEN_HINT = " (vLLM's other spellings, e.g. 4k or auto, go through -o max_model_len=VALUE)"


def port(text: str) -> int:
    """--port, --master-port: a TCP port."""
    number = port_number(text)
    if number is None:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number (1-65535)")
    return number


def whole(high: int, hint: str = "") -> Callable[[str], str]:
    """--tp, --max-model-len: a whole number from 1 to `high`, as the text the recipe's placeholder gets."""
    def check(text: str) -> str:
        if not _WHOLE.fullmatch(text) or not 1 <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number from 1 to {high}{hint}")
        return str(int(text))
    return check


def count(high: int) -> Callable[[str], int]:
    """-j, --mem-limit-gb, --pids-limit ...: a whole number from 1 to `high`, as a number."""
    check = whole(high)
    return lambda text: int(check(text))


def fraction(text: str) -> str:
    """--gpu-mem: the share of GPU memory vLLM may take, above 0 and at most 1."""
    if not _DECIMAL.fullmatch(text) or not 0 < float(text) <= 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a fraction above 0 and at most 1 (e.g. 0.8)")
    return text


def seconds(text: str) -> float:
    """--ready-timeout: a finite number of seconds above 0 ('inf' would wait forever, 'nan' never)."""
    value = float(text) if _DECIMAL.fullmatch(text) else math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds above 0 (e.g. 600): give the "
                                         "seconds to wait for the server")
    return value


def unknown_options(own: Sequence[str], unknown: Sequence[str], recipe: str | None) -> str:
    """Why words run-recipe does not know are refused, and how to hand them to vLLM instead.

    The origin passed them on silently, so a typo (`--portt 9`) reached vLLM; here they must follow `--`.
    The example repeats the words only when the recipe was named before them (else argparse may have
    taken an option's value for the recipe)."""
    first = next((u for u in unknown if u.startswith("-")), unknown[0])
    clear = recipe is not None and own.index(recipe) < own.index(first)
    example = f"{shlex.quote(recipe)} [OPTIONS] -- {shlex.join(unknown)}" if clear else f"RECIPE [OPTIONS] -- {first} ..."
    kind = "option" if first.startswith("-") else "argument"
    return (f"unknown {kind} '{first}' (not a run-recipe {kind}). To pass it to vLLM, put it after `--`: "
            f"run-recipe {example}")


def apply_mod(text: str) -> tuple[str, Path]:
    """--apply-mod PATH: relative to the current directory, `~` expanded (origin-facts 6.2)."""
    return "mod", (Path.cwd() / os.path.expanduser(text)).resolve()  # `~nobody` stays as written


def apply_pr(text: str) -> tuple[str, Any]:
    """--apply-vllm-pr N|URL; shares --apply-mod's list so both keep their command-line order."""
    from .mod_spec import parse

    try:
        return "pr", parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_words(words: Sequence[str], *flags: str) -> list[str]:
    """A run's words again with `flags` in place of its -d/--daemon/--reform: before `--`, since every
    word after it is vLLM's (a `-d` appended there would reach vLLM and leave the run in the foreground)."""
    words = list(words)
    cut = words.index("--") if "--" in words else len(words)
    own = [w for w in words[:cut] if w not in ("-d", "--daemon", "--reform")]
    return [*own, *flags, *words[cut:]]

