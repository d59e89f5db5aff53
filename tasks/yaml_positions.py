"""Where each field of a YAML file is: 1-based lines of keys and list items, from yaml.compose's marks.

lint names the line of the field at fault; errors carry fields (a path such as ("defaults", "port")),
and this turns a field into a line. Duplicate keys (which YAML silently collapses) are kept too.
"""
from __future__ import annotations

import bisect
import itertools
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
        self._joined: dict[str, tuple[str, list[int]]] = {}  # field -> its lines joined, where each starts
        self._found: dict[tuple[str, str], int] = {}          # (field, needle) -> line: repeats are asked once
        self.root: yaml.Node | None = None   # the document, for recipe.parse to construct (not read again)
        try:
            self.root = yaml.compose(text, Loader=SafeLoader)  # noqa: S506 - a SafeLoader subclass
        except (yaml.YAMLError, RecursionError, ValueError):
            pass
        if self.root is not None:
            self._walk(self.root, ())

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

    def find_in(self, field: str, needle: str) -> int:
        """Line of the first occurrence of needle inside a field's value (else the field's line).

        The field's lines are joined once and searched with str.find, each needle once: a finding per
        repeated flag (20,000 `--tokenizer` values) must not walk the lines in Python each time."""
        start = self.line((field,))
        if needle.splitlines() != [needle]:
            return start  # empty, or spans lines: no single line holds it
        if field not in self._joined:
            _, last = self.spans.get((field,), (start, start))
            lines = self.lines[start - 1:min(last, len(self.lines))]
            offsets = list(itertools.accumulate((len(line) + 1 for line in lines[:-1]), initial=0))
            self._joined[field] = ("\n".join(lines), offsets)
        if (field, needle) not in self._found:
            text, offsets = self._joined[field]
            at = text.find(needle)
            self._found[(field, needle)] = start + bisect.bisect_right(offsets, at) - 1 if at >= 0 else start
        return self._found[(field, needle)]

