"""Where each field of a YAML file is: 1-based lines of keys and list items, from yaml.compose's marks.

lint names the line of the field at fault; errors carry fields (a path such as ("defaults", "port")),
and this turns a field into a line. Duplicate keys (which YAML silently collapses) are kept too.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from .recipe import SafeLoader


# ----------------------------------------------------------------------------- YAML positions
class Positions:
    """1-based line numbers of fields, from yaml.compose's node marks.

    `line(("defaults", "port"))` is the line of that key; `line(("mods", 1))` of that item.
    Unknown paths fall back to the closest known parent, then to line 1.
    """

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.keys: dict[tuple[Any, ...], int] = {}
        self.spans: dict[tuple[Any, ...], tuple[int, int]] = {}   # value node first/last line
        self.duplicates: list[tuple[tuple[Any, ...], int]] = []
        try:
            root = yaml.compose(text, Loader=SafeLoader)  # noqa: S506 - a SafeLoader subclass
        except (yaml.YAMLError, RecursionError, ValueError):
            root = None
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: yaml.Node, path: tuple[Any, ...]) -> None:
        if len(path) > 3:  # recipes nest two levels; this also stops at self-referencing aliases
            return
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                here = (*path, key)
                line = key_node.start_mark.line + 1
                if here in self.keys and key is not None:
                    self.duplicates.append((here, line))
                else:
                    self.keys[here] = line
                    # end_mark sits just after the value: column 0 of the next line for block scalars
                    end = value_node.end_mark.line + (1 if value_node.end_mark.column else 0)
                    self.spans[here] = (value_node.start_mark.line + 1, max(value_node.start_mark.line + 1, end))
                self._walk(value_node, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.keys[(*path, i)] = item.start_mark.line + 1
                self._walk(item, (*path, i))

    def line(self, path: tuple[Any, ...]) -> int:
        while path:
            if path in self.keys:
                return self.keys[path]
            path = path[:-1]
        return 1

    def find_in(self, field: str, needle: str | re.Pattern[str], nth: int = 0) -> int:
        """Line of the nth match of needle inside a field's value (else the field's line)."""
        start = self.line((field,))
        _, last = self.spans.get((field,), (start, start))
        pattern = needle if isinstance(needle, re.Pattern) else re.compile(re.escape(needle))
        seen = 0
        for number in range(start, min(last, len(self.lines)) + 1):
            for _ in pattern.finditer(self.lines[number - 1]):
                if seen == nth:
                    return number
                seen += 1
        return start
