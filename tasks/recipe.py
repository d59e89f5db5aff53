"""Recipes: YAML files in the origin's format, loaded into immutable, checked values.

A recipe written for the origin (eugr/spark-vllm-docker) must load unchanged, so
the schema here is the origin's plus a few optional fields of ours. Every problem
names the file and the field and says what was expected.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping

import yaml

from .errors import RecipeError

REQUIRED = ("name", "container", "command", "recipe_version")  # the origin's required fields
OPTIONAL = ("description", "model", "cluster_only", "solo_only", "build_args", "mods",
            "defaults", "env",
            # ours, for pinned and partial weights (the weights issue); model_revision is revision's alias
            "revision", "model_revision", "files", "model_path")
KNOWN_KEYS = REQUIRED + OPTIONAL
RECIPE_VERSIONS = ("1",)  # the origin's only format so far (every recipe of its catalogue says "1")
MAX_RECIPE_BYTES = 1 << 20
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: $ would accept a trailing newline
PARAM_NAME = ENV_NAME
Scalar = (str, int, float, bool)
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Recipe:
    """One recipe, as the file says it; overrides and modes are applied later, in the plan."""

    id: str                    # path below the recipes folder without suffix, e.g. "4x/minimax-m2.5"
    path: Path
    name: str
    container: str
    command: str
    description: str = ""
    model: str = ""
    cluster_only: bool = False
    solo_only: bool = False
    build_args: tuple[str, ...] = ()
    mods: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    recipe_version: str = RECIPE_VERSIONS[-1]
    revision: str = ""
    files: tuple[str, ...] = ()
    model_path: str = ""
    warnings: tuple[str, ...] = ()
    unknown: tuple[tuple[str, str], ...] = ()   # (field, closest known field or "") the engine ignores

    @property
    def mode(self) -> str:
        """What `--list` shows: where this recipe can run."""
        if self.cluster_only:
            return "cluster"
        if self.solo_only:
            return "solo"
        return "either"


if yaml.__with_libyaml__:
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.cyaml import CParser
    from yaml.resolver import Resolver

    class _EventsFromLibyaml(Composer, SafeConstructor, Resolver, CParser):
        """yaml.SafeLoader with libyaml's scanner and parser under the Python composer: the same
        documents and marks, a 1 MB file in ~50 ms instead of ~2 s (CSafeLoader composes in C, out
        of reach of the alias limit below)."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    _Loader: type = _EventsFromLibyaml
else:
    _Loader = yaml.SafeLoader


class SafeLoader(_Loader):  # type: ignore[misc, valid-type]
    """SafeLoader that refuses alias expansion bombs: recipes are small, hand-written files."""

    max_aliases = 100

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > self.max_aliases:
                raise yaml.YAMLError(f"more than {self.max_aliases} YAML aliases")
        return super().compose_node(parent, index)


def _load_mapping(text: str, where: str, document: yaml.Node | None) -> dict[Any, Any]:
    """Read the YAML into a mapping, turning every YAML failure into a RecipeError with its line."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{where}: file is larger than {MAX_RECIPE_BYTES} bytes; a recipe is a short YAML file",
                          file=where, fix="keep the recipe short: the weights and patches live elsewhere")
    try:
        if document is None:
            data = yaml.load(text, Loader=SafeLoader)  # noqa: S506 - a SafeLoader subclass
        else:
            data = SafeLoader("").construct_document(document)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"{where}: YAML syntax error{pos}: {exc.problem or exc.context}", file=where,
                          line=mark.line + 1 if mark else 1, fix="fix the YAML syntax at that line") from None
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise RecipeError(f"{where}: not valid YAML: {exc}", file=where, line=1,
                          fix="fix the YAML (nesting, aliases)") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping of fields (name, container, command, ...), "
                          f"got {_kind(data)}", file=where,
                          fix="write the recipe as fields: name, container, command, ...")
    return data


def _check_keys(data: dict[Any, Any], where: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Refuse missing required fields; warn (with a close match) about unknown ones, which are ignored."""
    warnings, unknown = [], []
    for key in data:
        if not isinstance(key, str):
            raise RecipeError(f"{where}: field names must be text, got {key!r}", file=where,
                              fix="name fields with text (name, container, command, ...)")
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            warnings.append(f"{where}: unknown field '{key}' is ignored{hint}")
            unknown.append((key, close[0] if close else ""))
    for key in REQUIRED:
        if key not in data or data[key] in (None, ""):
            line = f'recipe_version: "{RECIPE_VERSIONS[-1]}"' if key == "recipe_version" else f"{key}: ..."
            raise RecipeError(f"{where}: missing required field '{key}': add the line `{line}`", file=where,
                              field=(key,), fix=f"add `{line}` ({', '.join(REQUIRED)} are required, as in the "
                                               "origin)")
    return warnings, unknown


class _Fields:
    """Typed readers over one recipe mapping, each raising a RecipeError that names the field."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self.data, self.where = data, where

    def text(self, key: str) -> str:
        value = self.data.get(key, "")
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise RecipeError(f"{self.where}: field '{key}' must be text, got {_kind(value)}", file=self.where,
                              field=(key,), fix="write it as text")
        return _plain(self.where, (key,), str(value))

    def flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise RecipeError(f"{self.where}: field '{key}' must be true or false, got {_kind(value)}",
                              file=self.where, field=(key,), fix="write true or false, unquoted")
        return value

    def text_list(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise RecipeError(f"{self.where}: field '{key}' must be a list of text items, got {_kind(value)}",
                              file=self.where, field=(key,), fix="write a YAML list of text items (- item)")
        return tuple(_plain(self.where, (key, i), v) for i, v in enumerate(value))

    def mapping(self, key: str, name_rule: re.Pattern[str], what: str) -> dict[str, Any]:
        where = self.where
        value = self.data.get(key) or {}
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: field '{key}' must be a mapping of {what} to values, got {_kind(value)}",
                              file=where, field=(key,), fix=f"write {key} as `NAME: value` lines")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not name_rule.match(k):
                raise RecipeError(f"{where}: {key}: '{k}' is not a valid {what} "
                                  "(letters, digits and _, not starting with a digit)", file=where, field=(key, k),
                                  fix="name it with letters, digits and _, not starting with a digit")
            if v is None or not isinstance(v, Scalar):
                raise RecipeError(f"{where}: {key}.{k} must be a single value (text or number), "
                                  f"got {_kind(v)}", file=where, field=(key, k),
                                  fix="give one text or number (write JSON as a quoted string)")
            out[k] = _plain(where, (key, k), v) if isinstance(v, str) else v
        return out

    def files(self) -> tuple[str, ...]:
        files = self.data.get("files")
        return (_plain(self.where, ("files",), files),) if isinstance(files, str) else self.text_list("files")


def _checked_name(fields: _Fields) -> str:
    name = fields.text("name")
    if any(ch in name for ch in "\r\n\0"):
        raise RecipeError(f"{fields.where}: field 'name' must be one line", file=fields.where, field=("name",),
                          fix="write the name on one line")
    return name


def _placement_flags(fields: _Fields) -> tuple[bool, bool]:
    """cluster_only and solo_only, refusing both: such a recipe could run nowhere."""
    cluster_only, solo_only = fields.flag("cluster_only"), fields.flag("solo_only")
    if cluster_only and solo_only:
        raise RecipeError(f"{fields.where}: 'cluster_only' and 'solo_only' are both true; set at most one",
                          file=fields.where, field=("solo_only",), fix="set at most one of cluster_only and solo_only")
    return cluster_only, solo_only


def _version(fields: _Fields, warnings: list[str]) -> str:
    """The recipe_version; an unknown one is read as the newest, with a warning."""
    version, where = fields.text("recipe_version"), fields.where
    if version not in RECIPE_VERSIONS:
        warnings.append(f"{where}: recipe_version '{version}' is not one this tool knows (it reads version "
                        f"{', '.join(RECIPE_VERSIONS)}); the recipe is read as version {RECIPE_VERSIONS[-1]}, "
                        "so check its fields against the recipe format")
    return version


def _revision(fields: _Fields) -> str:
    """`revision` and its alias `model_revision` are one field: refuse two different values."""
    revision, alias, where = fields.text("revision"), fields.text("model_revision"), fields.where
    if revision and alias and revision != alias:
        raise RecipeError(f"{where}: 'revision' ({revision}) and 'model_revision' ({alias}) name different "
                          "revisions of the model; they are one field, keep one", file=where,
                          field=("model_revision",), fix="keep either revision or model_revision")
    return revision or alias


def parse(text: str, path: Path, recipe_id: str | None = None, document: yaml.Node | None = None) -> Recipe:
    """Check one recipe document; raise RecipeError naming file, field and expectation.

    `document` is the text's YAML node tree when the caller composed it already (lint, for line
    numbers): pure-Python YAML reads 1 MB in about a second, so it is read once."""
    where = str(path)
    data = _load_mapping(text, where, document)
    warnings, unknown = _check_keys(data, where)
    fields = _Fields(data, where)
    name = _checked_name(fields)
    cluster_only, solo_only = _placement_flags(fields)
    env = {k: str(v) for k, v in fields.mapping("env", ENV_NAME, "environment variable name").items()}
    version = _version(fields, warnings)
    revision = _revision(fields)
    return Recipe(
        id=recipe_id or path.stem,
        path=path,
        name=name,
        container=fields.text("container"),
        command=fields.text("command"),
        description=fields.text("description"),
        model=fields.text("model"),
        cluster_only=cluster_only,
        solo_only=solo_only,
        build_args=fields.text_list("build_args"),
        mods=fields.text_list("mods"),
        defaults=MappingProxyType(fields.mapping("defaults", PARAM_NAME, "parameter name")),
        env=MappingProxyType(env),
        recipe_version=version,
        revision=revision,
        files=fields.files(),
        model_path=fields.text("model_path"),
        warnings=tuple(warnings),
        unknown=tuple(unknown),
    )


def load(path: Path, recipe_id: str | None = None) -> Recipe:
    """Read and check one recipe file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc.strerror}") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: file is larger than {MAX_RECIPE_BYTES} bytes; a recipe is a short YAML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse(text, path, recipe_id)


def find(name: str, recipes_dir: Path, *, paths: bool = True) -> Path:
    """Resolve what the user typed: a path (with or without .yaml/.yml; not with `paths=False`, for a name
    read from a file, which must not depend on the current folder), else a name in the catalogue."""
    typed = [Path(name), Path(name + ".yaml"), Path(name + ".yml")]
    candidates = (typed if paths else []) + [recipes_dir / c for c in typed]
    for cand in candidates:
        if path_kind(cand) == "file":
            return cand
    stem = Path(name).name
    found = sorted(p for p in _recipe_files(recipes_dir) if p.stem == stem or p.name == stem)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        listed = "\n".join(f"  {p}" for p in found)
        raise RecipeError(f"recipe '{name}' is ambiguous; it matches:\n{listed}\n"
                          "Give the path, e.g. " + id_for(found[0], recipes_dir))
    raise RecipeError(f"recipe '{name}' not found (looked {'for the path and ' if paths else ''}in {recipes_dir}); "
                      "see `run-recipe --list`")


def load_named(name: str, recipes_dir: Path, *, paths: bool = True) -> Recipe:
    """find() then load(), giving catalogue recipes their folder-relative id."""
    path = find(name, recipes_dir, paths=paths)
    return load(path, id_for(path, recipes_dir))


@dataclass(frozen=True)
class Listed:
    """One row of `--list`: a recipe, or the error that stopped it from loading."""

    id: str
    path: Path
    recipe: Recipe | None
    error: str = ""


def catalogue(recipes_dir: Path) -> Iterator[Listed]:
    """Every recipe below recipes_dir, sub-folders included; broken ones carry their error."""
    for path in sorted(_recipe_files(recipes_dir)):
        rid = id_for(path, recipes_dir)
        try:
            yield Listed(rid, path, load(path, rid))
        except RecipeError as exc:
            yield Listed(rid, path, None, str(exc))


def path_kind(path: Path) -> str:
    """"dir", "file" or "" for a path a person typed: a name the system cannot hold (too long, say) is
    nothing there, as a missing one is (Path.is_file raises for it)."""
    try:
        return "dir" if path.is_dir() else "file" if path.is_file() else ""
    except OSError:
        return ""


def _recipe_files(recipes_dir: Path) -> Iterator[Path]:
    if recipes_dir.is_dir():
        for pattern in ("*.yaml", "*.yml"):
            yield from (p for p in recipes_dir.rglob(pattern) if p.is_file())


def id_for(path: Path, recipes_dir: Path) -> str:
    try:
        rel = path.resolve().relative_to(recipes_dir.resolve())
    except ValueError:
        return path.stem
    return rel.with_suffix("").as_posix()


def _plain(where: str, field: tuple[Any, ...], text: str) -> str:
    """Refuse text no file, argv or script can carry: NUL, and lone surrogates (YAML's \\ud800 escape)."""
    shown = ".".join(str(f) for f in field if isinstance(f, str))
    if "\0" in text:
        raise RecipeError(f"{where}: field '{shown}' contains a NUL character (\\0)", file=where, field=field,
                          fix="remove the NUL character")
    if _SURROGATE.search(text):
        raise RecipeError(f"{where}: field '{shown}' contains a lone surrogate (e.g. \\ud800), which is not text",
                          file=where, field=field, fix="remove the \\ud800-style escape")
    return text


def _kind(value: Any) -> str:
    # Containers are named, never repr'd: an alias-shared list can stand for billions of items.
    named = {dict: "a mapping", list: "a list", type(None): "nothing"}.get(type(value))
    return named or f"{type(value).__name__} {value!r:.40}"


def suggested_env_name(name: str) -> str:
    """A shell-exportable spelling of an env name a recipe got wrong (for the fix lint suggests)."""
    fixed = re.sub(r"[^A-Za-z0-9_]", "_", name) or "NAME"
    return "_" + fixed if fixed[0].isdigit() else fixed

