"""Stack files: several recipes placed on chosen nodes, plus an optional gateway, as checked values.

A stack file (`stacks/NAME.yaml` or any path) says which recipes run together and where; this module
only reads and checks the file (every bad field is an error naming the file, the line and the fix).
Ports, names, memory and the plans themselves are stack_plan's.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .. import settings
from ..errors import ConfigError
from ..nodes import Node, parse_list
from ..recipe import ENV_NAME, MAX_RECIPE_BYTES, PARAM_NAME, SafeLoader
from ..yaml_positions import Positions

STACK_KEYS = ("name", "nodes", "models", "gateway", "description")


def gateway_container(stack: str) -> str:
    """The gateway's container name (kept apart from the entries' names by the clash check)."""
    return f"{stack}-gateway"


def entry_id(stack: str, name: str) -> str:
    """The id of a stack's entry or gateway (task names, labels, records): `<stack>//<container name>`. No
    path below recipes/ holds `//`, so no catalogue recipe shares it (a stack `4x` with an entry named
    `minimax-m2.5` is not the recipe `4x/minimax-m2.5`, whose containers it would otherwise replace)."""
    return f"{stack}//{name}"

ENTRY_KEYS = ("recipe", "on", "port", "gpu_mem", "name", "overrides", "extra_args", "mods")
GATEWAY_KEYS = ("port", "api_key_env")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")   # also a docker container name and a label value
ALL = "all"


class StackLoader(SafeLoader):
    """YAML 1.2 booleans: `on:` is a field name here, which YAML 1.1 reads as true."""


StackLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in SafeLoader.yaml_implicit_resolvers.items()}
StackLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                  list("tTfF"))


@dataclass(frozen=True)
class Entry:
    """One model of a stack, as written: None where the file leaves the choice to the stack plan."""

    index: int
    recipe: str
    on: tuple[Node, ...] | None        # None: `all` (every node of the stack); () never
    port: int | None = None
    gpu_mem: float | None = None
    name: str | None = None
    overrides: Mapping[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    mods: tuple[str, ...] = ()


@dataclass(frozen=True)
class Gateway:
    port: int = 4000
    api_key_env: str = ""


@dataclass(frozen=True)
class Stack:
    name: str
    path: Path
    nodes: tuple[Node, ...] | None      # None: .env CLUSTER_NODES, else this machine
    entries: tuple[Entry, ...]
    gateway: Gateway | None
    positions: Positions

    def where(self, field: tuple[Any, ...]) -> str:
        """`FILE, line N` of a field, for messages about the stack found after loading (ports, memory)."""
        return f"{self.path}, line {self.positions.line(field)}"


def find(name: str, stacks_dir: Path | None = None) -> Path:
    """A stack by path (as given, or with .yaml/.yml), else by name in the project's stacks/."""
    folder = stacks_dir or settings.project_root() / "stacks"
    for cand in (Path(name), Path(name + ".yaml"), Path(name + ".yml"),
                 folder / (name + ".yaml"), folder / (name + ".yml")):
        try:
            if cand.is_file():
                return cand.resolve()
        except OSError:
            continue
    known = sorted(p.stem for p in folder.glob("*.y*ml")) if folder.is_dir() else []
    raise ConfigError(f"stack '{name}': no such file, and no {folder}/{name}.yaml"
                      + (f" (stacks there: {', '.join(known)})" if known else ""),
                      fix="give a stack file's path or the name of one in stacks/")


def key_variables(folder: Path) -> set[str]:
    """The variables the stacks in `folder` name as their gateway's key, whatever they are called (--show-env
    masks them); a stack file that does not load names none."""
    found = set()
    for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
        try:
            gateway = load(path).gateway
        except ConfigError:
            continue
        if gateway and gateway.api_key_env:
            found.add(gateway.api_key_env)
    return found


def load(path: Path) -> Stack:
    """Read and check one stack file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the stack file ({exc.strerror})", file=str(path)) from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_RECIPE_BYTES} bytes; a stack is a short YAML file",
                          file=str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})", file=str(path), line=1) from None
    return parse(text, path)


def parse(text: str, path: Path) -> Stack:
    """Check a stack document; every problem raises ConfigError with file, field and line."""
    where = str(path)
    positions = Positions(text)
    try:
        data = yaml.load(text, Loader=StackLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{where}, line {line}: YAML syntax error: {exc.problem or exc.context}", file=where,
                          line=line, fix="fix the YAML syntax at that line") from None
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}", file=where, line=1) from None
    check = _Checker(where, positions)
    if not isinstance(data, dict):
        check.fail((), f"expected a mapping (name, models, ...), got {_kind(data)}",
                   "write the stack as fields: name, models, and optionally nodes and gateway")
    check.unknown_keys(data, (), STACK_KEYS)
    name = check.name(data.get("name"), ("name",), required=True)
    nodes = check.nodes(data["nodes"], ("nodes",)) if data.get("nodes") not in (None, "", []) else None
    models = data.get("models")
    if not isinstance(models, list) or not models:
        check.fail(("models",), f"must be a non-empty list of entries (- recipe: NAME), got {_kind(models)}",
                   "list the models: `models:` then `- recipe: NAME` items")
    entries = tuple(check.entry(i, item) for i, item in enumerate(models))
    gateway = check.gateway(data["gateway"]) if data.get("gateway") is not None else None
    return Stack(name, path, nodes, entries, gateway, positions)


class _Checker:
    """Field checks that raise ConfigError naming the file, the line and the field."""

    def __init__(self, where: str, positions: Positions) -> None:
        self.where, self.positions = where, positions

    def fail(self, field: tuple[Any, ...], problem: str, fix: str) -> None:
        line = self.positions.line(field)
        shown = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in field).replace(".[", "[")
        raise ConfigError(f"{self.where}, line {line}: {shown + ': ' if shown else ''}{problem} ({fix})",
                          file=self.where, field=field, line=line, fix=fix, reason=problem)

    def unknown_keys(self, data: dict, field: tuple[Any, ...], known: tuple[str, ...]) -> None:
        for key in data:
            if not isinstance(key, str):
                self.fail(field, f"field names must be text, got {key!r}", f"use {', '.join(known)}")
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                self.fail((*field, key), "unknown field" + (f"; did you mean '{close[0]}'?" if close else ""),
                          f"the fields here are {', '.join(known)}")

    def name(self, value: Any, field: tuple[Any, ...], required: bool = False) -> str | None:
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not NAME.match(str(value)):
            self.fail(field, f"'{value}' is not a name" if value is not None else "missing",
                      "letters, digits, _ . -, starting with a letter or digit, at most 63 characters")
        return str(value)

    def nodes(self, value: Any, field: tuple[Any, ...]) -> tuple[Node, ...]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = ",".join(value)
        if not isinstance(value, str):
            self.fail(field, f"must be a node list (a, b or `- a` items), got {_kind(value)}",
                      "write nodes as `[user@]host[:port]` text, head first")
        try:
            nodes = parse_list(value, f"{self.where}, line {self.positions.line(field)}: {field[-1]}")
        except ConfigError as exc:
            raise ConfigError(str(exc), file=self.where, field=field, line=self.positions.line(field)) from None
        if len({n.target for n in nodes}) != len(nodes):
            self.fail(field, "a node is listed twice", "list every node once")
        return nodes

    def port(self, value: Any, field: tuple[Any, ...]) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            self.fail(field, f"'{value}' is not a port", "a whole number from 1 to 65535")
        return value

    def entry(self, i: int, item: Any) -> Entry:
        field: tuple[Any, ...] = ("models", i)
        if not isinstance(item, dict):
            self.fail(field, f"must be a mapping (recipe: NAME, on: ...), got {_kind(item)}",
                      "write each model as `- recipe: NAME` with its fields indented below")
        self.unknown_keys(item, field, ENTRY_KEYS)
        recipe = item.get("recipe")
        if not isinstance(recipe, str) or not recipe.strip() or "\0" in recipe:
            self.fail((*field, "recipe"), "missing or not text" if recipe is None else f"'{recipe}' is not text",
                      "name a recipe of recipes/ or give a recipe file's path")
        on_value = item.get("on")
        on: tuple[Node, ...] | None = ()
        if on_value == ALL:
            on = None
        elif on_value is not None:
            on = self.nodes(on_value, (*field, "on"))
        gpu_mem = item.get("gpu_mem")
        if gpu_mem is not None and (isinstance(gpu_mem, bool) or not isinstance(gpu_mem, (int, float))
                                    or not 0 < gpu_mem <= 1):
            self.fail((*field, "gpu_mem"), f"'{gpu_mem}' is not a fraction of memory",
                      "a number above 0 and at most 1, e.g. 0.4")
        overrides = item.get("overrides") or {}
        if not isinstance(overrides, dict):
            self.fail((*field, "overrides"), f"must be a mapping of parameters, got {_kind(overrides)}",
                      "write `overrides:` then `max_model_len: 8192` lines")
        for key, value in overrides.items():
            if not isinstance(key, str) or not PARAM_NAME.match(key):
                self.fail((*field, "overrides", key), f"'{key}' is not a parameter name",
                          "letters, digits and _, not starting with a digit")
            if value is None or not isinstance(value, (str, int, float, bool)) or "\0" in str(value):
                self.fail((*field, "overrides", key), f"must be one value, got {_kind(value)}",
                          "give one text or number")
        lists = {key: self.texts(item.get(key), (*field, key)) for key in ("extra_args", "mods")}
        return Entry(index=i, recipe=recipe.strip(), on=on,
                     port=self.port(item["port"], (*field, "port")) if item.get("port") is not None else None,
                     gpu_mem=float(gpu_mem) if gpu_mem is not None else None,
                     name=self.name(item.get("name"), (*field, "name")),
                     overrides={k: _text(v) for k, v in overrides.items()},
                     extra_args=lists["extra_args"], mods=lists["mods"])

    def texts(self, value: Any, field: tuple[Any, ...]) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                                  and "\0" not in str(v) for v in value):
            self.fail(field, f"must be a list of text items, got {_kind(value)}", "write `- item` lines")
        return tuple(str(v) for v in value)

    def gateway(self, value: Any) -> Gateway:
        if not isinstance(value, dict):
            self.fail(("gateway",), f"must be a mapping (port, api_key_env), got {_kind(value)}",
                      "write `gateway:` then `port: 4000` (and `api_key_env: NAME`) indented below")
        self.unknown_keys(value, ("gateway",), GATEWAY_KEYS)
        key_env = value.get("api_key_env") or ""
        if key_env and (not isinstance(key_env, str) or not ENV_NAME.match(key_env)):
            self.fail(("gateway", "api_key_env"), f"'{key_env}' is not an environment variable name",
                      "the NAME of the variable that holds the key (letters, digits, _), never the key itself")
        port = self.port(value["port"], ("gateway", "port")) if value.get("port") is not None else 4000
        return Gateway(port, key_env)


def _text(value: Any) -> str:
    """A YAML scalar as the text a `-o key=value` would carry (true/false as YAML writes them)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", type(None): "nothing"}.get(type(value), type(value).__name__)

