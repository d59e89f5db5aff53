"""The library never prints or prompts: only the command line's folder (tasks/cli/) writes to a terminal or asks a person.

Library code emits events (tasks/report.py) and returns data; the front renders them. This scans
every module of tasks/ with ast, so a print() that sneaks into a step fails here with its line.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

TASKS = Path(__file__).resolve().parents[2] / "tasks"

# The front: the command line's own folder (parsers, views, the events' renderers), which may print and ask.
FRONT = "cli"

PROMPT_MODULES = {"questionary", "getpass", "rich.prompt"}


def _is_sys_stream(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr")
            and isinstance(node.value, ast.Name) and node.value.id == "sys")


def _console_to_terminal(call: ast.Call) -> bool:
    """rich's Console() with no file (the terminal) or with sys.stdout/sys.stderr."""
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
    if name != "Console":
        return False
    file = next((k.value for k in call.keywords if k.arg == "file"), None)
    return file is None or _is_sys_stream(file)


def offences(source: str) -> list[tuple[int, str]]:
    """(line, what) for every print, prompt or write to the terminal in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in ("print", "input", "breakpoint"):
                found.append((node.lineno, f"{func.id}()"))
            elif isinstance(func, ast.Attribute) and func.attr in ("write", "writelines") and _is_sys_stream(func.value):
                found.append((node.lineno, f"sys.{func.value.attr}.{func.attr}()"))
            elif isinstance(func, ast.Attribute) and func.attr.startswith("print") and any(
                    _is_sys_stream(a) for a in [*node.args, *(k.value for k in node.keywords)]):
                found.append((node.lineno, f".{func.attr}(sys stream)"))
            elif _console_to_terminal(node):
                found.append((node.lineno, "rich Console on the terminal"))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [(node.lineno, f"import {n}") for n in names if n in PROMPT_MODULES]
    return sorted(found)


LIBRARY = sorted(p for p in TASKS.rglob("*.py") if p.relative_to(TASKS).parts[0] != FRONT)


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(TASKS)))
def test_library_modules_never_print_or_prompt(path: Path) -> None:
    bad = offences(path.read_text())
    assert not bad, (f"{path.relative_to(TASKS)} writes to the terminal or asks a person: "
                     + ", ".join(f"line {line}: {what}" for line, what in bad)
                     + ". Emit an event (tasks/report.py) or return data for the front to show.")


def test_the_front_is_a_folder_and_the_library_is_scanned() -> None:
    assert (TASKS / FRONT / "__init__.py").is_file() and len(LIBRARY) > 50


def test_the_scanner_catches_each_way_of_printing() -> None:
    source = ("import sys\nimport questionary\nfrom rich.console import Console\n"
              "print('x')\ninput()\nsys.stderr.write('x')\nsys.stdout.writelines([])\n"
              "Console().print('x')\nConsole(file=sys.stderr)\nparser.print_usage(sys.stderr)\n"
              "import io\nConsole(file=io.StringIO())\nstream.write('fine: the caller gave it')\n")
    assert [line for line, _ in offences(source)] == [2, 4, 5, 6, 7, 8, 9, 10]
