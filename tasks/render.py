"""Turn a recipe's command into shell text that runs exactly what the author meant.

Recipes keep the origin's str.format syntax (`{param}`, `{{`/`}}` for literal
braces). Unlike the origin, each substituted value is quoted for the shell
context it lands in (bare word, inside '...', inside "..."), so a value reaches
the program as one literal argument and never executes. Scripts that run on a
node are rendered from Jinja templates with StrictUndefined and a `q` filter.
"""
from __future__ import annotations

import re
import shlex
from functools import lru_cache
from pathlib import Path
from string import Formatter
from typing import Any, Iterable, Mapping

from .errors import RenderError

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
_BARE, _SINGLE, _DOUBLE = "bare", "single", "double"
_OPERATORS = {";", "&&", "||", "|", "&", "(", ")", "<", ">", ">>", "<<", ";;", "|&"}
# The lookbehind starts a match only at the first blank of a run: without it a long run of
# blanks made every position rescan the rest of the run (quadratic time on a 100 KB line).
_BACKEND = re.compile(r"(?<![ \t])[ \t]*--distributed[-_]executor[-_]backend(?:=|[ \t]+)\S+")
# vLLM reads `-tp` and `--tensor-parallel-size` (and `_` for `-`) as the same option.
_ALIASES = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size",
            "-dp": "--data-parallel-size", "-q": "--quantization"}


def placeholders(template: str) -> list[str]:
    """Placeholder names in the order they appear; raises RenderError on malformed braces."""
    return [field for _, field, _, _ in _parse(template) if field is not None]


def substitute(template: str, params: Mapping[str, Any]) -> str:
    """Fill `{name}` placeholders, quoting each value for its place in the shell text."""
    out: list[str] = []
    state, escaped = _BARE, False
    for literal, field, spec, conversion in _parse(template):
        out.append(literal)
        state, escaped = _advance(state, escaped, literal)
        if field is None:
            continue
        if spec or conversion:
            raise RenderError(f"placeholder '{{{field}{'!' + conversion if conversion else ''}"
                              f"{':' + spec if spec else ''}}}' uses a format spec; write just {{{field}}}")
        if field not in params:
            available = ", ".join(sorted(params)) or "(none)"
            raise RenderError(f"unknown placeholder '{{{field}}}' in the command; available: {available}. "
                              "Add it to the recipe's defaults or pass -o "
                              f"{field}=VALUE")
        if escaped:
            raise RenderError(f"placeholder '{{{field}}}' follows a backslash; remove the backslash")
        out.append(_quote(state, _text(params[field])))
    return "".join(out)


def strip_executor_backend(template: str) -> str:
    """Drop `--distributed-executor-backend X` (solo and native multi-node use none) and emptied lines."""
    lines = [_BACKEND.sub("", line) for line in template.splitlines()]
    return "\n".join(ln for ln in lines if ln.strip() not in ("", "\\"))


def drop_backend_args(args: list[str]) -> list[str]:
    """Same as strip_executor_backend, for extra args given as a list."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        name = _flag(arg)
        if name == "--distributed-executor-backend":
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def finish(command: str, extra_args: Iterable[str]) -> str:
    """Trim the trailing continuation and append extra args, each as one quoted word."""
    text = command.rstrip()
    while text.endswith("\\"):
        text = text[:-1].rstrip()
    extra = " ".join(shlex.quote(a) for a in extra_args)
    return f"{text} {extra}" if extra else text


def words(command: str) -> list[str]:
    """The words a shell would see (continuations joined); raises RenderError on unclosed quotes."""
    try:
        return shlex.split(command.replace("\\\n", ""), posix=True)
    except ValueError as exc:
        raise RenderError(f"the command cannot be parsed as shell words: {exc}") from None


def has_operators(command: str) -> bool:
    """True when the command is more than one simple command (so the script must not `exec` it)."""
    lexer = shlex.shlex(command.replace("\\\n", ""), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return any(tok in _OPERATORS for tok in lexer)
    except ValueError:
        return True


def duplicate_flags(command: str, extra_args: Iterable[str]) -> list[str]:
    """Extra args whose flag the rendered command already sets (vLLM keeps the last one)."""
    present = {_flag(w) for w in words(command) if _is_flag(w)}
    return [a for a in extra_args if _is_flag(a) and _flag(a) in present]


def option_value(argv: list[str], *names: str) -> str | None:
    """Last value of an option in argv (`--x v` or `--x=v`), like argparse's last-wins."""
    wanted = {_flag(n) for n in names}
    value = None
    for i, arg in enumerate(argv):
        if not _is_flag(arg) or _flag(arg) not in wanted:
            continue
        if "=" in arg:
            value = arg.split("=", 1)[1]
        elif i + 1 < len(argv):
            value = argv[i + 1]
    return value


def render_template(name: str, **context: Any) -> str:
    """Render templates/<name> with StrictUndefined: a missing value is an error, never ''."""
    import jinja2

    try:
        return _environment().get_template(name).render(**context)
    except jinja2.UndefinedError as exc:
        raise RenderError(f"template {name}: {exc.message}") from None


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = lambda v: shlex.quote(_text(v))
    env.filters["comment"] = lambda v: " ".join(_text(v).split())
    return env


def _parse(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as exc:
        raise RenderError(f"the command has a stray brace ({exc}); write literal braces as {{{{ and }}}}") from None
    for _, field, _, _ in parsed:
        if field is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field):
            shown = field if field else ""
            raise RenderError(f"'{{{shown}}}' is not a placeholder name; "
                              "for literal braces (JSON) write {{ and }}")
    return parsed


def _advance(state: str, escaped: bool, text: str) -> tuple[str, bool]:
    """Follow bash's quoting through literal text."""
    for ch in text:
        if escaped:
            escaped = False
        elif state == _SINGLE:
            state = _BARE if ch == "'" else _SINGLE
        elif ch == "\\":
            escaped = True
        elif state == _DOUBLE:
            state = _BARE if ch == '"' else _DOUBLE
        elif ch == "'":
            state = _SINGLE
        elif ch == '"':
            state = _DOUBLE
    return state, escaped


def _quote(state: str, value: str) -> str:
    if state == _SINGLE:
        return value.replace("'", "'\\''")
    if state == _DOUBLE:
        return re.sub(r'([\\"$`])', r"\\\1", value)
    return shlex.quote(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else format(value)


def _is_flag(arg: str) -> bool:
    return arg.startswith("-") and len(arg) > 1 and not re.fullmatch(r"-[\d.]+", arg)


def _flag(arg: str) -> str:
    name = arg.split("=", 1)[0]
    name = _ALIASES.get(name, name)
    return name[:2] + name[2:].replace("_", "-") if name.startswith("--") else name
