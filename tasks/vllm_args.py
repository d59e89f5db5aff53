"""The vLLM command as data: parsed once after substitution, edited as a list, made text at the end.

`parse` fills the recipe's placeholders (each value quoted for its shell context, see render) and
splits the result into shell tokens (shellwords). Every change a run makes is then a list operation on
the `vllm serve` simple command: drop the executor flag whatever its value, set it to Ray, add a
native rank's arguments, add extra args after `--`. Words the recipe wrote keep the author's exact
shell text; words runrecipe adds are quoted by `literal`, the one function that turns a value into
shell text. Reading the command (served model name, parallel sizes, any option under any alias or
`_`/`-` spelling) also goes through here, so plan, lint and weights agree on what it says.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Iterable, Iterator, Mapping, Sequence

from . import render
from .errors import RenderError
from .hf_names import REPO_ID_RE, is_local_path
from .shellwords import Op, Token, Word

EXECUTOR = "--distributed-executor-backend"
# vLLM reads `-tp` and `--tensor-parallel-size` (and `_` for `-`) as the same option.
ALIASES = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size",
           "-dp": "--data-parallel-size", "-q": "--quantization"}
PARALLEL = ("--tensor-parallel-size", "--pipeline-parallel-size", "--data-parallel-size")
_NUMBER = re.compile(r"-[\d.]+")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@lru_cache(maxsize=4096)  # a command repeats its words; lint of 20,000 flags asks 300,000 times
def is_flag(arg: str) -> bool:
    """An option word (not a negative number)."""
    return arg.startswith("-") and len(arg) > 1 and not _NUMBER.fullmatch(arg)


@lru_cache(maxsize=4096)
def flag_name(arg: str) -> str:
    """The option as vLLM reads it: `=value` dropped, aliases expanded, `_` as `-` in long names."""
    name = arg.split("=", 1)[0]
    name = ALIASES.get(name, name)
    return name[:2] + name[2:].replace("_", "-") if name.startswith("--") else name


def literal(value: str) -> Word:
    """A word runrecipe adds: the value, quoted for bash (the one place values become shell text)."""
    return Word(value, shlex.quote(value))


@dataclass(frozen=True)
class Command:
    """Shell tokens of the whole command; `start:end` is the simple command that runs vLLM."""

    tokens: tuple[Token, ...]
    start: int
    end: int

    @cached_property
    def argv(self) -> tuple[str, ...]:
        """The serve command's arguments as the program receives them (assignments and redirections left out)."""
        return tuple(self.tokens[i].value for i in self._arg_indexes())  # type: ignore[union-attr]

    @property
    def has_operators(self) -> bool:
        """More than one simple command, or redirections: the script must not `exec` it."""
        return any(isinstance(t, Op) for t in self.tokens)

    @property
    def served_model(self) -> str:
        """The model id /v1/models lists: --served-model-name, else the model after `vllm serve`."""
        return self.option("--served-model-name") or self.model

    @property
    def model(self) -> str:
        """The positional model after `vllm serve`, if any."""
        argv = self.argv
        for i, word in enumerate(argv[:-2]):
            if word.endswith("vllm") and argv[i + 1] == "serve" and not is_flag(argv[i + 2]):
                return argv[i + 2]
        return ""

    @property
    def serve_args(self) -> tuple[str, ...] | None:
        """The words after `vllm serve` (model and options) as vLLM's parser gets them; None for another command."""
        argv = self.argv
        for i, word in enumerate(argv[:-1]):
            if word.endswith("vllm") and argv[i + 1] == "serve":
                return argv[i + 2:]
        return None

    @property
    def options(self) -> tuple[str, ...]:
        """The words after `vllm serve MODEL` (or all arguments when the command is something else)."""
        rest = self.serve_args
        if rest is None:
            return self.argv
        return rest[1:] if rest and not is_flag(rest[0]) else rest

    def option(self, *names: str) -> str | None:
        """Last value of an option (`--x v` or `--x=v`, any alias or spelling), as argparse keeps the last."""
        return _pick(self._by_option, names)

    @cached_property
    def _by_option(self) -> dict[str, tuple[int, str]]:
        """Each option's last value and position, found once: plan and lint ask a 20,000-flag command for several."""
        return _last_values(self.argv)

    def parallel_sizes(self) -> dict[str, str]:
        """tp / pp / dp as written (text: lint judges it), only those the command sets."""
        return {flag: value for flag in PARALLEL if (value := self.option(flag)) is not None}

    def without(self, *names: str) -> "Command":
        """The command with every occurrence of these options removed, value included, whatever it is."""
        wanted = {flag_name(n) for n in names}
        drop: set[int] = set()
        indexes = self._arg_indexes()
        for pos, i in enumerate(indexes):
            word = self.tokens[i]
            assert isinstance(word, Word)
            if i in drop or not is_flag(word.value) or flag_name(word.value) not in wanted:
                continue
            drop.add(i)
            nxt = indexes[pos + 1] if pos + 1 < len(indexes) else None
            if "=" not in word.value and nxt is not None and not is_flag(self.tokens[nxt].value):  # type: ignore[union-attr]
                drop.add(nxt)
        kept = tuple(t for i, t in enumerate(self.tokens) if i not in drop)
        gone_before = sum(1 for i in drop if i < self.start)
        return Command(kept, self.start - gone_before, self.end - len(drop))

    def with_args(self, args: Iterable[str]) -> "Command":
        """The command with these arguments appended to the serve command, each one literal word."""
        added = tuple(literal(a) for a in args)
        tokens = self.tokens[:self.end] + added + self.tokens[self.end:]
        return Command(tokens, self.start, self.end + len(added))

    def with_option(self, name: str, value: str) -> "Command":
        """The option set to exactly this value (earlier occurrences removed)."""
        return self.without(name).with_args([name, value])

    def text(self) -> str:
        """The shell text: the author's words and line breaks as written, added words quoted."""
        out: list[str] = []
        for token in self.tokens:
            if isinstance(token, Op):
                out.append("\n" if token.text == "\n" else f" {token.text} ")
                continue
            if out and not out[-1].endswith((" ", "\n")):
                out.append(" \\\n    " if token.wrapped else " ")
            out.append(token.raw)
        return "".join(out).strip()

    def _arg_indexes(self) -> list[int]:
        out, after_redirect, leading = [], False, True
        for i in range(self.start, self.end):
            token = self.tokens[i]
            if isinstance(token, Op):
                after_redirect = True
                continue
            if after_redirect:
                after_redirect = False
                continue
            if leading and _ASSIGNMENT.match(token.raw):
                continue
            leading = False
            out.append(i)
        return out


def from_tokens(tokens: list[Token]) -> Command:
    """Find the simple command that runs `vllm serve` (else the last one) among the tokens."""
    while tokens and tokens[-1] == Op("\n"):
        tokens = tokens[:-1]
    while tokens and tokens[0] == Op("\n"):
        tokens = tokens[1:]
    segments: list[tuple[int, int]] = []
    begin = 0
    for i, token in enumerate(tokens + [Op(";")]):
        if isinstance(token, Op) and token.control:
            if any(isinstance(t, Word) for t in tokens[begin:i]):
                segments.append((begin, i))
            begin = i + 1
    if not segments:
        return Command(tuple(tokens), len(tokens), len(tokens))
    chosen = segments[-1]
    for begin, end in segments:
        values = [t.value for t in tokens[begin:end] if isinstance(t, Word)]
        if any(v.endswith("vllm") and nxt == "serve" for v, nxt in zip(values, values[1:])):
            chosen = (begin, end)
            break
    return Command(tuple(tokens), *chosen)


def parse(template: str, params: Mapping[str, Any]) -> Command:
    """The recipe's command with its placeholders filled, as tokens (RenderError names what is wrong)."""
    used = set(render.placeholders(template))  # only their values become text (an unused one may be unwritable)
    return _parse(template, tuple((name, render.text(value) if name in used else "") for name, value in params.items()))


@lru_cache(maxsize=8)
def _parse(template: str, params: tuple[tuple[str, str], ...]) -> Command:
    """Cached (a Command is immutable): plan, lint and the graph parse the same command with the same
    values several times per run, and a 1 MB command takes a second."""
    return from_tokens(render.substitute_tokens(template, dict(params)))


def option_value(argv: Iterable[str], *names: str) -> str | None:
    """Last value of an option in argv (`--x v` or `--x=v`), like argparse's last-wins."""
    return _pick(_last_values(list(argv)), names)


def split_options(argv: Sequence[str], *names: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """argv without these options (any spelling, `--x v` or `--x=v`), and what was taken: (option, value)."""
    wanted = {flag_name(n) for n in names}
    kept: list[str] = []
    taken: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if is_flag(arg) and flag_name(arg) in wanted:
            inline = "=" in arg
            value = arg.split("=", 1)[1] if inline else (argv[i + 1] if i + 1 < len(argv) else "")
            taken.append((flag_name(arg), value))
            i += 1 if inline else 2
            continue
        kept.append(arg)
        i += 1
    return tuple(kept), tuple(taken)


def _last_values(args: list[str] | tuple[str, ...]) -> dict[str, tuple[int, str]]:
    """Each option's last value and where it was given, in one pass (a command asks for several options)."""
    out: dict[str, tuple[int, str]] = {}
    for i, arg in enumerate(args):
        if not is_flag(arg):
            continue
        if "=" in arg:
            out[flag_name(arg)] = (i, arg.split("=", 1)[1])
        elif i + 1 < len(args):
            out[flag_name(arg)] = (i, args[i + 1])
    return out


def _pick(last: dict[str, tuple[int, str]], names: Iterable[str]) -> str | None:
    """The value given last among these options (any alias or spelling)."""
    given = [last[name] for name in {flag_name(n) for n in names} if name in last]
    return max(given)[1] if given else None


def duplicates(command: Command, extra_args: Iterable[str]) -> list[str]:
    """Extra args whose option the command already sets (vLLM keeps the last one)."""
    present = {flag_name(w) for w in command.argv if is_flag(w)}
    return [a for a in extra_args if is_flag(a) and flag_name(a) in present]


MODEL_OPTIONS = ("--speculative-model", "--speculative-config.model", "--tokenizer")


def model_options(argv: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(option, value) of every option that names a model besides the served one, in order; the `model`
    of `--speculative-config '{json}'` comes as ("--speculative-config model", value). Recognised in
    every spelling vLLM reads (`_` for `-`, `--x=v`). RenderError when that config is not JSON."""
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--"):
            continue
        name, eq, value = arg.partition("=")
        flag = "--" + name[2:].replace("_", "-")
        if flag != "--speculative-config" and flag not in MODEL_OPTIONS:
            continue
        if not eq:
            if i >= len(args) or args[i].startswith("--"):
                continue  # the option without a value
            value, i = args[i], i + 1
        if flag != "--speculative-config":
            yield flag, value
            continue
        try:
            cfg = json.loads(value)
        except ValueError:
            raise RenderError(f"{name} is not valid JSON: {value!r}") from None
        if isinstance(cfg, dict) and isinstance(cfg.get("model"), str):
            yield f"{flag} model", cfg["model"]


def model_refs(argv: Sequence[str]) -> list[str]:
    """HF repo ids the vLLM command names besides the main model (draft models, tokenizer), in order,
    once each; local paths skipped. vLLM would otherwise fetch them itself at start, unpinned and
    unverified, inside the container."""
    return list(dict.fromkeys(v for _, v in model_options(argv) if not is_local_path(v) and REPO_ID_RE.match(v)))

