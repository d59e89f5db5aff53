"""No module in tasks/ (or dodo.py) over 450 lines and no function over 60 (issue #25, the house rules):
a long function hides the names of its steps, a long module more than one idea.

Argparse declarations aside: a function counts as one when it is named `parser`, or when at least half of
its statements are `add_argument` / `add_parser` / `add_argument_group` / `add_mutually_exclusive_group`
calls (or assignments of them): a table of flags reads as a table however long it is."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_FUNCTION, MAX_MODULE = 60, 450
DECLARING = {"add_argument", "add_parser", "add_argument_group", "add_mutually_exclusive_group", "add_subparsers"}


def sources() -> list[Path]:
    return sorted((ROOT / "tasks").rglob("*.py")) + [ROOT / "dodo.py"]


def _declares(stmt: ast.stmt) -> bool:
    """A statement that is (or assigns) a call of one of argparse's declaring methods."""
    value = stmt.value if isinstance(stmt, (ast.Expr, ast.Assign)) else None
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr in DECLARING)


def is_parser_declaration(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    if fn.name == "parser":
        return True
    body = [s for s in ast.walk(fn) if isinstance(s, ast.stmt) and s is not fn]
    return bool(body) and sum(map(_declares, body)) * 2 >= len(body)


def long_functions() -> list[str]:
    out = []
    for path in sources():
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = fn.end_lineno - fn.lineno + 1
            if length > MAX_FUNCTION and not is_parser_declaration(fn):
                out.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}() is {length} lines")
    return out


def test_no_function_over_60_lines() -> None:
    assert long_functions() == [], "split these into functions whose names say why (at most 60 lines each)"


def test_no_module_over_450_lines() -> None:
    long = [f"{p.relative_to(ROOT)} has {n} lines" for p in sources()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE]
    assert long == [], "split these modules by idea (at most 450 lines each)"
