"""The recipe rules of `run-recipe lint` (lint_cli): check recipes without Docker, GPUs or the network.

Each rule reads data only (the YAML, the mods folders, the build-flag table) and
reports Findings that name the file and line of the field at fault and say how to
fix it. The engine's own code does the parsing and rendering (recipe.parse,
render, vllm_args, plan.make_plan), so lint and run never disagree on what a recipe means.

Rules (the `rule` of a Finding):

    yaml            the file cannot be read or is not YAML
    schema          recipe.parse refuses the file (missing field, wrong type, ...)
    unknown-key     a top-level field the engine ignores (warning)
    duplicate-key   a YAML mapping names the same key twice (the last silently wins)
    placeholder     a {placeholder} no default supplies, or a malformed brace
    unused-default  a default no placeholder uses, so its override does nothing (warning)
    parallelism     cluster_only / solo_only against tp * pp * dp (one GPU per node)
    mod             a mod path that does not exist or has no run.sh
    build-arg       a build flag the build step does not know
    model-id        `model` or an extra model (draft, tokenizer) that is not org/name
    duplicate-flag  a vLLM option given twice in the command
    env-name        an env name a shell cannot export
    bash-syntax     the command is not shell words, or the launch script that would run fails `bash -n`
    render          the engine cannot build the launch plan for another reason (e.g. --port not a number)
    executor, recipe-version   origin_rules: what an origin recipe says but means nothing here (warnings)
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from .. import build_spec, mod_sources, render, settings, vllm_args
from . import origin as origin_rules
from ..errors import RenderError, RunRecipeError
from ..hf_names import is_model_ref
from ..plan import bash_problem
from ..recipe import ENV_NAME, Recipe, id_for, parse, path_kind, suggested_env_name
from ..yaml_positions import Positions

ERROR, WARNING = "error", "warning"
# Options vLLM accepts more than once and accumulates (argparse action="append").
# `--json-arg.list+ value` (list append syntax) is also allowed to repeat.
REPEATABLE_FLAGS = frozenset({"--middleware"})
PARALLEL_FLAGS = (("tp", "--tensor-parallel-size"), ("pp", "--pipeline-parallel-size"),
                  ("dp", "--data-parallel-size"))
TEST_NODES = "198.18.0.11,198.18.0.12"  # RFC 2544 benchmarking addresses; never contacted
BASH_TIMEOUT = 20


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    severity: str      # "error" | "warning"
    rule: str
    message: str
    fix: str = ""

    def format(self) -> str:
        fix = f" (fix: {self.fix})" if self.fix else ""
        return f"{self.file}:{self.line}: {self.severity}: {self.message}{fix}"


# ----------------------------------------------------------------------------- linting one file
class _FileLint:
    def __init__(self, path: Path, shown: str, recipes_dir: Path) -> None:
        self.path, self.shown, self.recipes_dir = path, shown, recipes_dir
        self.findings: list[Finding] = []
        self.pos: Positions | None = None
        self._option_index: dict[bool, dict[str, list[int]]] = {}  # fold_no -> option key -> lines

    def add(self, severity: str, rule: str, where: tuple[Any, ...] | int, message: str, fix: str = "") -> None:
        line = where if isinstance(where, int) else (self.pos.line(where) if self.pos else 1)
        self.findings.append(Finding(self.shown, line, severity, rule, message, fix))

    def run(self) -> list[Finding]:
        try:
            text = self.path.read_bytes().decode("utf-8")
        except OSError as exc:
            self.add(ERROR, "yaml", 1, f"cannot read the file: {exc.strerror or exc}",
                     "check the path and its permissions")
            return self.findings
        except UnicodeDecodeError as exc:
            self.add(ERROR, "yaml", 1, f"not UTF-8 text (byte {exc.start})", "save the file as UTF-8")
            return self.findings
        self.pos = Positions(text)
        self._duplicate_keys()
        env_bad = self._env_names()
        recipe = self._schema(text, env_bad)
        if recipe is None:
            return self.findings
        self._unknown_keys(recipe)
        params = self._placeholders(recipe)
        if params is None:
            return self.findings
        self._parallelism(recipe, params)
        self._mods(recipe)
        self._build_args(recipe)
        command = self._command(recipe.command, params)
        if command is not None:
            self._model_ids(recipe, command)
            self._duplicate_flags(command)
            for note in origin_rules.check(recipe, command):
                where = self._flag_line(note.flag) if note.flag else (note.field,)
                self.add(WARNING, note.rule, where, note.message, note.fix)
        self._bash(recipe)
        return self.findings

    # -- schema ---------------------------------------------------------------------------
    def _schema(self, text: str, env_bad: bool) -> Recipe | None:
        try:
            return parse(text, self.path, self._recipe_id(), self.pos.root if self.pos else None)
        except RunRecipeError as exc:
            message = str(exc)
            prefix = f"{self.path}: "
            message = message[len(prefix):] if message.startswith(prefix) else message
            if env_bad and exc.field[:1] == ("env",) and len(exc.field) == 2:
                return None  # already reported, with its line, by the env-name rule
            rule = "yaml" if exc.line is not None and not exc.field else "schema"
            where = exc.line if exc.line is not None else exc.field
            self.add(ERROR, rule, where, message,
                     exc.fix or "see the recipe format in recipes-readme (Recipe Format)")
            return None

    def _recipe_id(self) -> str:
        return id_for(self.path, self.recipes_dir)

    def _unknown_keys(self, recipe: Recipe) -> None:
        for key, close in recipe.unknown:
            self.add(WARNING, "unknown-key", (key,), f"unknown field '{key}' is ignored",
                     f"rename it to '{close}'" if close else "remove it, or check its spelling")

    def _duplicate_keys(self) -> None:
        assert self.pos is not None
        for path, line in self.pos.duplicates:
            name = ".".join(str(p) for p in path)
            self.add(ERROR, "duplicate-key", line,
                     f"'{name}' is given twice (first on line {self.pos.keys[path]}); YAML keeps only the last",
                     "keep one of them")

    def _env_names(self) -> bool:
        assert self.pos is not None
        bad = False
        for path in self.pos.keys:
            if len(path) == 2 and path[0] == "env" and not (isinstance(path[1], str) and ENV_NAME.match(path[1])):
                bad = True
                self.add(ERROR, "env-name", path,
                         f"env: '{path[1]}' is not a valid environment variable name",
                         "use letters, digits and _, not starting with a digit (e.g. "
                         f"{suggested_env_name(str(path[1]))})")
        return bad

    # -- command ----------------------------------------------------------------------------
    def _placeholders(self, recipe: Recipe) -> dict[str, Any] | None:
        """Defaults, plus a stand-in for each missing placeholder so the other rules still run."""
        assert self.pos is not None
        try:
            names = render.placeholders(recipe.command)
        except RunRecipeError as exc:
            self.add(ERROR, "placeholder", self._brace_line(), f"command: {exc}",
                     "write literal braces (JSON) as {{ and }}")
            return None
        params: dict[str, Any] = dict(recipe.defaults)
        provided = set(params) | ({"tensor_parallel"} if recipe.solo_only else set())
        for name in dict.fromkeys(names):
            if name not in provided:
                self.add(ERROR, "placeholder", self.pos.find_in("command", f"{{{name}}}"),
                         f"placeholder '{{{name}}}' has no value in defaults",
                         f"add '{name}: VALUE' under defaults")
            params.setdefault(name, 1)  # a stand-in that every numeric option accepts: no double report
        for name in recipe.defaults:
            if name not in names:
                self.add(WARNING, "unused-default", ("defaults", name),
                         f"default '{name}' is not used by the command, so overriding it changes nothing",
                         f"use {{{name}}} in the command or remove the default")
        return params

    def _brace_line(self) -> int:
        """The first command line whose braces do not parse on their own (else the command's line)."""
        assert self.pos is not None
        start = self.pos.line(("command",))
        _, last = self.pos.spans.get(("command",), (start, start))
        for number in range(start + 1, min(last, len(self.pos.lines)) + 1):
            try:
                render.placeholders(self.pos.lines[number - 1])
            except RunRecipeError:
                return number
        return start

    def _command(self, command: str, params: dict[str, Any]) -> vllm_args.Command | None:
        try:
            return vllm_args.parse(command, params)
        except RunRecipeError as exc:
            self.add(ERROR, "bash-syntax", ("command",), f"command: {exc}", "fix the quoting of the command")
            return None

    def _parallelism(self, recipe: Recipe, params: dict[str, Any]) -> None:
        """GPUs the command asks for (tp * pp * dp); a Spark node has one."""
        cluster = self._gpus(recipe, params)
        solo = self._gpus(recipe, {**params, "tensor_parallel": 1}, solo=True)
        if cluster is None or solo is None:
            return
        (gpus, shown, where), (solo_gpus, solo_shown, solo_where) = cluster, solo
        if recipe.solo_only and gpus > 1:
            self.add(ERROR, "parallelism", where,
                     f"solo_only, but the defaults ask for {shown} = {gpus} GPUs; a solo run has one GPU "
                     "(and forces tensor_parallel to 1), so these defaults never apply",
                     "set the parallel defaults to 1, or drop solo_only so the recipe can run on a cluster")
        elif not recipe.cluster_only and solo_gpus > 1:
            self.add(ERROR, "parallelism", solo_where,
                     f"a solo run of this recipe asks vLLM for {solo_shown} = {solo_gpus} GPUs, but one node "
                     "has one GPU (solo mode only resets {tensor_parallel})",
                     "use -tp {tensor_parallel} and default pipeline/data parallel sizes of 1, "
                     "or set cluster_only: true")
        if recipe.cluster_only and gpus == 1:
            self.add(WARNING, "parallelism", where if where != ("command",) else ("cluster_only",),
                     "cluster_only, but the command asks for one GPU (tp * pp = 1), so a cluster run "
                     "would leave the other nodes idle",
                     "set tensor_parallel (or pipeline_parallel) to the number of nodes, or drop cluster_only")
        folder = re.fullmatch(r"(\d+)x", self.path.parent.name)
        if recipe.cluster_only and folder and gpus > 1 and int(folder.group(1)) != gpus:
            self.add(WARNING, "parallelism", where,
                     f"the recipe sits in {folder.group(0)}/ (for {folder.group(1)} nodes) but asks for "
                     f"{shown} = {gpus} GPUs", "make the folder and the parallel sizes agree")

    def _gpus(self, recipe: Recipe, params: dict[str, Any], *, solo: bool = False
              ) -> tuple[int, str, tuple[Any, ...] | int] | None:
        try:
            command = vllm_args.parse(recipe.command, params)
        except RunRecipeError:
            return None  # reported by the placeholder rule
        assert self.pos is not None
        product, parts, where = 1, [], None
        for short, flag in PARALLEL_FLAGS:
            value = command.option(flag)
            if value is None:
                continue
            if not value.isdigit() or int(value) < 1:
                if not solo:
                    self.add(ERROR, "parallelism", self._flag_line(flag),
                             f"{flag} is '{value}', not a positive whole number", f"give {flag} a number")
                return None
            product *= int(value)
            parts.append(f"{short} {value}")
            if int(value) > 1 and where is None:
                where = self._flag_line(flag)
        return product, " * ".join(parts) or "tp 1", where if where is not None else ("command",)

    def _option_lines(self, key: str, fold_no: bool = False) -> list[int]:
        """Lines of the command where an option spelled any way vLLM reads as `key` appears, in order."""
        if fold_no not in self._option_index:
            self._option_index[fold_no] = self._index_options(fold_no)
        return self._option_index[fold_no].get(key, [])

    def _index_options(self, fold_no: bool) -> dict[str, list[int]]:
        """Every option's lines, from one pass over the command: a finding per repeated flag must not
        rescan the command (20,000 repeats took minutes)."""
        assert self.pos is not None
        _, last = self.pos.spans.get(("command",), (1, 1))
        index: dict[str, list[int]] = {}
        for number in range(self.pos.line(("command",)), min(last, len(self.pos.lines)) + 1):
            for token in _OPTION.findall(self.pos.lines[number - 1]):
                index.setdefault(_option_key(token, fold_no), []).append(number)
        return index

    def _flag_line(self, flag: str) -> int:
        """Line of the last occurrence of an option (any alias or _/- spelling) in the command."""
        assert self.pos is not None
        return (self._option_lines(flag) or [self.pos.line(("command",))])[-1]

    def _duplicate_flags(self, command: vllm_args.Command) -> None:
        assert self.pos is not None
        seen: dict[str, str] = {}
        count: dict[str, int] = {}
        for word in command.options:
            if not vllm_args.is_flag(word) or word == "--":
                continue
            name = vllm_args.flag_name(word)
            if name in REPEATABLE_FLAGS or name.endswith("+"):
                continue
            key = _option_key(word, fold_no=True)
            count[key] = count.get(key, 0) + 1
            raw = word.split("=", 1)[0]
            if key not in seen:
                seen[key] = raw
                continue
            first = seen[key]
            same = vllm_args.flag_name(first) == name
            lines = self._option_lines(key, fold_no=True)
            line = lines[count[key] - 1] if len(lines) >= count[key] else self.pos.line(("command",))
            what = f"'{raw}' repeats '{first}'" if same else f"'{raw}' contradicts '{first}'"
            self.add(ERROR, "duplicate-flag", line, f"{what} in the command; vLLM keeps only the last value",
                     "keep one of them" if same else "keep one of them (the --no- form turns the option off)")

    def _model_ids(self, recipe: Recipe, command: vllm_args.Command) -> None:

        assert self.pos is not None
        if recipe.model and not is_model_ref(recipe.model):
            self.add(ERROR, "model-id", ("model",),
                     f"model '{recipe.model}' is not a HuggingFace repo id (org/name)",
                     "write it as org/name, e.g. Qwen/Qwen3.6-35B-A3B-FP8")
        argv = list(command.argv)
        served = command.model
        if served and recipe.model and is_model_ref(served) and served != recipe.model:
            self.add(WARNING, "model-id", self.pos.find_in("command", served),
                     f"the command serves '{served}' but model is '{recipe.model}' (--setup downloads model)",
                     "make model and the model after `vllm serve` the same")
        try:
            vllm_args.model_refs(argv)
        except RenderError as exc:
            self.add(ERROR, "model-id", self.pos.find_in("command", "speculative"), str(exc),
                     "write the option's value as valid JSON (literal braces as {{ and }})")
            return
        for flag, value in vllm_args.model_options(argv):
            if not is_model_ref(value):
                self.add(ERROR, "model-id", self.pos.find_in("command", value),
                         f"{flag} names '{value}', which is neither an org/name repo id nor a local path",
                         "write it as org/name (or a path starting with / or .)")

    # -- files the recipe refers to ---------------------------------------------------------
    def _mods(self, recipe: Recipe) -> None:
        roots = mod_sources.search_roots(recipe.path)
        for i, mod in enumerate(recipe.mods):
            problem = mod_sources.problem(mod, roots)
            if problem:
                self.add(ERROR, "mod", ("mods", i), f"mod '{mod}': {problem}",
                         f"add {mod}/run.sh, or fix the path (relative to the folder that holds recipes/)")

    def _build_args(self, recipe: Recipe) -> None:
        for i, what, fix in build_spec.flag_problems(recipe.build_args):
            close = difflib.get_close_matches(recipe.build_args[i], list(build_spec.KNOWN_FLAGS), n=1)
            self.add(ERROR, "build-arg", ("build_args", i), what,
                     f"use '{close[0]}'" if close and "unknown" in what else fix)

    def _source_line(self, source: str) -> int:
        """The command line holding rendered script text (values differ from placeholders: try its last word)."""
        assert self.pos is not None
        start = self.pos.line(("command",))
        for needle in (source, (source.split() or [""])[-1]):
            if needle:
                line = self.pos.find_in("command", needle)
                if line != start or needle in self.pos.lines[start - 1]:
                    return line
        return start

    # -- the script that would run -----------------------------------------------------------
    def _bash(self, recipe: Recipe) -> None:
        from ..plan import Options, make_plan

        modes = []
        if not recipe.cluster_only:
            modes.append(("solo", Options(solo=True)))
        if not recipe.solo_only:
            modes.append(("cluster", Options(nodes=TEST_NODES)))
        seen: set[str] = set()
        for mode, options in modes:
            try:
                script = make_plan(recipe, options, check_shell=False).script
            except RunRecipeError as exc:
                if not any(f.severity == ERROR for f in self.findings):
                    self.add(ERROR, "render", ("command",), f"the {mode} launch script cannot be rendered: "
                             f"{str(exc).splitlines()[0]}", "fix the command")
                return
            problem, source = bash_problem(script, BASH_TIMEOUT)
            if problem and problem not in seen:
                seen.add(problem)
                line = self._source_line(source)
                self.add(ERROR, "bash-syntax", line,
                         f"the {mode} launch script fails `bash -n`: {problem}"
                         + (f" in `{source}`" if source else ""),
                         "fix the command's quoting or shell syntax")


_OPTION = re.compile(r"(?:(?<=^)|(?<=\s))(--?[A-Za-z][\w.+-]*)")


def _option_key(word: str, fold_no: bool = False) -> str:
    """What vLLM reads an option as: aliases and `_` folded (render's rule); --no-x as --x if asked."""
    name = vllm_args.flag_name(word)
    return "--" + name[5:] if fold_no and name.startswith("--no-") else name


# ----------------------------------------------------------------------------- files and output
def recipe_files(paths: Iterable[Path]) -> Iterator[tuple[Path, bool]]:
    """(file, exists) for each path: files as given, folders searched for *.yaml / *.yml."""
    for path in paths:
        kind = path_kind(path)
        if kind == "dir":
            yield from ((p, True) for p in sorted({*path.rglob("*.yaml"), *path.rglob("*.yml")}) if p.is_file())
        else:
            yield path, kind == "file"


def lint_file(path: Path, shown: str | None = None, recipes_dir: Path | None = None) -> list[Finding]:
    """All findings for one recipe file, ordered by line."""
    shown = shown or str(path)
    try:
        findings = _FileLint(path, shown, recipes_dir or settings.recipes_dir()).run()
    except RunRecipeError as exc:
        findings = [Finding(shown, 1, ERROR, "schema", str(exc).splitlines()[0], "fix the recipe")]
    return sorted(findings, key=lambda f: (f.line, f.severity != ERROR))


def lint_paths(paths: Iterable[Path]) -> tuple[list[Finding], int]:
    findings: list[Finding] = []
    count = 0
    for path, exists in recipe_files(paths):
        shown = _shown(path)
        if not exists:
            findings.append(Finding(shown, 1, ERROR, "yaml", "no such file or folder",
                                    "give a recipe file or a folder of recipes"))
            continue
        count += 1
        findings.extend(lint_file(path, shown))
    return findings, count


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)

