"""Turn a recipe's command into shell text that runs exactly what the author meant.

Recipes keep the origin's str.format syntax (`{param}`, `{{`/`}}` for literal
braces). Unlike the origin, each substituted value is quoted for the shell
context it lands in (bare word, inside '...', inside "..."), so a value reaches
the program as one literal argument and never executes; a placeholder where no
quoting can do that (inside `$( )`, backticks, a comment ...) is refused with its
line. The shellwords scanner follows the text to tell the context, and hands
vllm_args the filled command as words. Scripts that run on a node are rendered
from Jinja templates with StrictUndefined and a `q` filter.
"""
from __future__ import annotations

import re
import shlex
from functools import lru_cache
from pathlib import Path
from string import Formatter
from typing import Any, Callable, Mapping

from . import memo, settings
from .errors import RenderError
from .shellwords import DOUBLE, SINGLE, Scanner, Token

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TEMPLATES_DIR = settings.CODE_ROOT / "templates"
# How a value is written into each quoting context a placeholder may stand in.
_QUOTERS: dict[str, Callable[[str], str]] = {
    "bare": shlex.quote,
    SINGLE: lambda v: v.replace("'", "'\\''"),
    DOUBLE: lambda v: re.sub(r'([\\"$`])', r"\\\1", v),
}


def placeholders(template: str) -> list[str]:
    """Placeholder names in the order they appear; raises RenderError on malformed braces."""
    return [field for _, field, _, _ in _parse(template) if field is not None]


def substitute(template: str, params: Mapping[str, Any]) -> str:
    """Fill `{name}` placeholders, quoting each value for its place in the shell text."""
    return "".join(_fill(template, params, Scanner()))


def substitute_tokens(template: str, params: Mapping[str, Any]) -> list[Token]:
    """The filled command as shell words and operators (see shellwords), for vllm_args."""
    scanner = Scanner()
    _fill(template, params, scanner)
    return scanner.finish()


def _fill(template: str, params: Mapping[str, Any], scanner: Scanner) -> list[str]:
    """The filled text in pieces; the scanner follows along to know each placeholder's quoting context.

    A quoted value joins the scanner as one literal piece (it cannot change the context it was quoted
    for), and each placeholder is quoted once per context: 300,000 placeholders fill in linear time."""
    out: list[str] = []
    quoted_values: dict[str, dict[str, tuple[str, str]]] = {}  # context -> field -> (quoted, value)
    add, keep = scanner.quoted, out.append
    line, context = 1, scanner.context
    known = quoted_values.setdefault(context, {})
    for literal, field, spec, conversion in _parse(template):
        if literal:
            keep(literal)
            scanner.feed(literal)
            line += literal.count("\n")
            context = scanner.context
            known = quoted_values.setdefault(context, {})
        if field is None:
            continue
        if spec or conversion:
            raise RenderError(f"placeholder '{{{field}{'!' + conversion if conversion else ''}"
                              f"{':' + spec if spec else ''}}}' uses a format spec; write just {{{field}}}")
        quoted, value = known.get(field) or known.setdefault(field, _quote(field, params, context, line))
        add(quoted, value)
        keep(quoted)
    return out


def _quote(field: str, params: Mapping[str, Any], context: str, line: int) -> tuple[str, str]:
    """(the value quoted for its context, the value itself), or RenderError saying why it cannot be."""
    if field not in params:
        available = ", ".join(sorted(params)) or "(none)"
        raise RenderError(f"unknown placeholder '{{{field}}}' in the command; available: {available}. "
                          f"Add it to the recipe's defaults or pass -o {field}=VALUE")
    if context not in _QUOTERS:
        raise RenderError(f"line {line}: placeholder '{{{field}}}' is {_where(context)}, where no quoting can "
                          "keep its value literal; make it an argument of its own (or move it into the recipe's "
                          "env)")
    value = text(params[field])
    return _QUOTERS[context](value), value


def render_template(name: str, **context: Any) -> str:
    """Render templates/<name> with StrictUndefined: a missing value is an error, never ''.

    Kept in the memo under the template's text, this module's (its filters) and the values, so a
    re-run with nothing changed neither imports nor compiles Jinja."""
    digest = _memo_key(name, context)
    done = memo.get(digest) if digest else None
    if done is not None:
        return done
    import jinja2

    try:
        text = _environment().get_template(name).render(**context)
    except jinja2.UndefinedError as exc:
        raise RenderError(f"template {name}: {exc.message}") from None
    if digest:
        memo.put(digest, text)
    return text


def _memo_key(name: str, context: dict[str, Any]) -> str | None:
    """None when a value is not plain data (its repr could not stand for what the template sees)."""
    if not _plain(context):
        return None
    try:  # every template: one may include another
        sources = [p.read_bytes() for p in sorted(TEMPLATES_DIR.iterdir()) if p.is_file()]
    except OSError:
        return None  # Jinja's own error says what is missing
    return memo.key("template", name, *sources, Path(__file__).read_bytes(), repr(context))


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, dict) and all(isinstance(k, str) and _plain(v) for k, v in value.items())


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
    env.filters["q"] = lambda v: shlex.quote(text(v))
    env.filters["comment"] = lambda v: " ".join(text(v).split())
    env.filters["yaml"] = yaml_text
    return env


def yaml_text(value: Any) -> str:
    """One YAML double-quoted scalar that reads back as exactly `value` (tojson writes a character beyond
    the BMP as a surrogate pair, which YAML reads as two broken characters)."""
    import yaml

    return yaml.safe_dump(text(value), allow_unicode=True, default_style='"', width=float("inf")).rstrip("\n")


@lru_cache(maxsize=8)
def _parse(template: str) -> tuple[tuple[str, str | None, str | None, str | None], ...]:
    """str.format's pieces of a template, names checked; cached: plan and lint ask for the same command."""
    try:
        parsed = tuple(Formatter().parse(template))
    except ValueError as exc:
        raise RenderError(f"the command has a stray brace ({exc}); write literal braces as {{{{ and }}}}") from None
    for field in dict.fromkeys(field for _, field, _, _ in parsed if field is not None):
        if not _NAME.fullmatch(field):
            raise RenderError(f"'{{{field}}}' is not a placeholder name; "
                              "for literal braces (JSON) write {{ and }}")
    return parsed


def _where(context: str) -> str:
    return context if context.startswith("right after") else f"inside {context}"


def text(value: Any) -> str:
    """A value as the text a placeholder receives (an int of over 4,300 digits, e.g. YAML's 0xfff..., has none)."""
    if isinstance(value, str):
        return value
    try:
        return format(value)
    except ValueError as exc:
        raise RenderError(f"a value cannot be written as text: {exc}") from None

