"""The house's shape, checked: tasks/ has no import loop and its folders are layers that import downward only.

Imports inside functions count too: they hide a loop from Python's import machinery, not from a reader
who has to understand the layers. A module at the top of tasks/ is core; a sub-package is a layer.
"""
from __future__ import annotations

import ast
from pathlib import Path

TASKS = Path(__file__).resolve().parents[2] / "tasks"

# Lowest first: a layer may import its own modules and those of the layers before it, never after.
LAYERS = ("core", "connect", "facts", "cluster", "ops", "stacks", "graph", "serve", "lint", "bench", "cli")
ENTRY = {"__main__"}  # `python -m tasks` runs the CLI: an entry point above every layer, imported by none


def module_name(path: Path) -> str:
    """tasks/ops/launch.py -> ops.launch; tasks/ops/__init__.py -> ops."""
    parts = list(path.relative_to(TASKS).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    return module.split(".")[0] if "." in module or (TASKS / module).is_dir() else "core"


def _targets(module: str, is_package: bool, node: ast.ImportFrom, known: set[str]) -> list[str]:
    """The tasks modules one `from … import …` names (a name that is a module counts as that module)."""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[: len(package) - node.level + 1] if node.level > 1 else package
        parts = base + (node.module.split(".") if node.module else [])
    elif node.module and (node.module == "tasks" or node.module.startswith("tasks.")):
        parts = node.module.split(".")[1:]
    else:
        return []
    prefix = ".".join(parts)
    found = []
    for alias in node.names:
        full = f"{prefix}.{alias.name}".strip(".")
        found.append(full if full in known else prefix)
    return [name for name in found if name in known]


def imports() -> dict[str, set[str]]:
    """Module -> the tasks modules it imports anywhere in its text (relative or absolute)."""
    paths = {module_name(p): p for p in TASKS.rglob("*.py")}
    known = set(paths)
    edges: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                edges[name] |= set(_targets(name, path.name == "__init__.py", node, known)) - {name}
            elif isinstance(node, ast.Import):
                edges[name] |= {a.name[len("tasks."):] for a in node.names
                                if a.name.startswith("tasks.") and a.name[len("tasks."):] in known}
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


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer by a lower one, as 'module -> module'."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    return sorted(f"{a} -> {b}" for a, targets in edges.items() if a not in ENTRY
                  for b in targets if rank[layer(b)] > rank[layer(a)])


def test_the_scan_sees_a_loop_when_there_is_one() -> None:
    assert loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_scan_sees_function_level_and_relative_imports() -> None:
    edges = imports()
    assert "cli.supervise" in edges["cli.main"], "cli.main imports supervise inside a function"
    assert "errors" in edges["ops.launch"], "`from ..errors import` resolves to the core module"


def test_no_module_of_tasks_imports_itself_back() -> None:
    assert loops(imports()) == []


def test_every_folder_of_tasks_is_a_named_layer() -> None:
    folders = {p.name for p in TASKS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LAYERS) - {"core"}


def test_the_contract_sees_an_upward_import() -> None:
    assert upward({"facts.cache": {"ops.launch"}, "ops.launch": {"facts.cache"}}) == ["facts.cache -> ops.launch"]


def test_layers_import_downward_only() -> None:
    assert upward(imports()) == [], f"lower layers import higher ones; order (low to high): {', '.join(LAYERS)}"
