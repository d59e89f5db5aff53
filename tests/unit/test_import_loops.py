"""No import loop in tasks/, counting imports inside functions (the house plan allows none): a function-level
import hides a loop from Python's import machinery, not from a reader who has to understand the layers."""
from __future__ import annotations

import ast
from pathlib import Path

TASKS = Path(__file__).resolve().parents[2] / "tasks"


def imports() -> dict[str, set[str]]:
    """Module -> the tasks modules it imports anywhere in its text (relative or absolute)."""
    names = {p.stem for p in TASKS.glob("*.py")}
    edges: dict[str, set[str]] = {name: set() for name in names}
    for path in TASKS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tasks."):
                found = [node.module.split(".")[1]]
            elif isinstance(node, ast.ImportFrom) and node.module == "tasks":
                found = [a.name for a in node.names]
            else:
                continue
            edges[path.stem] |= {name for name in found if name in names and name != path.stem}
    return edges


def loops(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(sorted(part))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_scan_sees_a_loop_when_there_is_one() -> None:
    assert loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_of_tasks_imports_itself_back() -> None:
    edges = imports()
    assert "supervise" in edges["cli"], "imports inside functions are counted (cli.main imports supervise there)"
    assert loops(edges) == []
