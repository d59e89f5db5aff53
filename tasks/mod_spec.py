"""Mods and vLLM pull requests as data: what a recipe's `mods` and a run's --apply-vllm-pr name.

Core: the plan (through mod_sources), lint and the flag types read these. A mod is a folder or .zip with
a run.sh, checked by reading it; a PR is a number whose diff, once fetched into the cache by
vllm_pr.fetch (the operation), is an ordinary mod. `cached` reads that cache and (re)writes the mod's
run.sh from its template; no network here.
"""
from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import settings
from .errors import ConfigError, RecipeError
from .recipe import path_kind
from .render import render_template


BASE_ENV = "RUNRECIPE_VLLM_PR_BASE"
DEFAULT_BASE = "https://patch-diff.githubusercontent.com/raw/vllm-project/vllm/pull"
FLAG = "--apply-vllm-pr"
PR_URL = re.compile(r"https?://github\.com/vllm-project/vllm/pull/([0-9]+)(?:/[A-Za-z0-9/_-]*)?(?:\.diff|\.patch)?/?")
IGNORED_DIRS = (".github/", ".buildkite/", "benchmarks/", "docs/", "examples/", "tests/")
IGNORED_SUFFIXES = (".md", ".rst")
NATIVE_SUFFIXES = (".c", ".cc", ".cpp", ".cu", ".cuh", ".cxx", ".h", ".hpp", ".o", ".so", ".a")
BUILD_FILES = ("CMakeLists.txt", "Makefile", "setup.py")
DIFF_GIT = re.compile(r"^diff --git (\"?)a/(.*?)\1 (\"?)b/(.*?)\3$", re.MULTILINE)
MINUS_PLUS = re.compile(r"^(?:---|\+\+\+) (\"?)[ab]/(.*?)\1(?:\t.*)?$", re.MULTILINE)


@dataclass(frozen=True)
class Mod:
    name: str
    path: Path

    @property
    def is_zip(self) -> bool:
        return self.path.suffix == ".zip"


def check(paths: tuple[Path, ...], source: str, field: str = "mods") -> tuple[Mod, ...]:
    """Every mod must exist and hold a run.sh; the error names the recipe (or flag) and the mod."""
    mods = []
    for path in paths:
        kind = path_kind(path)
        if kind == "dir":
            if not (path / "run.sh").is_file():
                raise _missing(source, path, "has no run.sh", field)
        elif path.suffix == ".zip" and kind == "file":
            zip_root(path, source, field)
        else:
            raise _missing(source, path, "does not exist (a folder or .zip with run.sh)", field)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem if path.suffix == ".zip" else path.name)
        mods.append(Mod(name, path))
    return tuple(mods)


def zip_root(path: Path, source: str, field: str = "mods") -> str:
    """The folder inside the zip that holds run.sh ('' for the top); unsafe names are refused."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise _missing(source, path, f"is not a readable zip: {exc}", field) from None
    names = [PurePosixPath(i.filename) for i in infos]
    if any(n.is_absolute() or ".." in n.parts for n in names):
        raise _missing(source, path, "has entries outside its own folder", field)
    folders = {parent for n in names for parent in n.parents}
    both = sorted(str(n) for n, i in zip(names, infos) if not i.is_dir() and n in folders)
    if both:  # `a` and `a/b`: no folder can hold both, so the mod could not be unpacked
        raise _missing(source, path, f"holds '{both[0]}' both as a file and as the folder of other entries", field)
    if PurePosixPath("run.sh") in names:
        return ""
    roots = {n.parts[0] for n in names if n.parts}
    if len(roots) == 1 and PurePosixPath(next(iter(roots)), "run.sh") in names:
        return next(iter(roots))
    raise _missing(source, path, "has no run.sh", field)


def _missing(source: str, path: Path, problem: str, field: str = "mods") -> RecipeError:
    """A mod that cannot be applied: the error names the recipe (or flag), the mod and what is wrong."""
    where = f"{source}: {field}:" if field else f"{source}"
    return RecipeError(f"{where} '{path}' {problem}", field=(field,) if field else (), reason=problem,
                       fix="give each mod a folder (or .zip) holding run.sh")


@dataclass(frozen=True)
class PullRequest:
    number: int

    @property
    def url(self) -> str:
        base = os.environ.get(BASE_ENV) or DEFAULT_BASE
        return f"{base.rstrip('/')}/{self.number}.diff"

    @property
    def folder(self) -> Path:
        return settings.state_dir() / "cache" / "vllm-pr" / str(self.number)


def parse(text: str) -> PullRequest:
    """A positive PR number, or the PR's URL on github.com/vllm-project/vllm (argparse type: ValueError)."""
    match = PR_URL.fullmatch(text)
    digits = match.group(1) if match else text if re.fullmatch(r"[0-9]+", text) else "0"
    number = int(digits)
    if number <= 0:
        raise ValueError(f"'{text}' is not a vLLM pull request: give its number (e.g. 12345) or its URL "
                         "(https://github.com/vllm-project/vllm/pull/12345)")
    return PullRequest(number)


def touched(diff: str) -> list[str]:
    """Every path the diff names (old and new side of renames), in order, once each."""
    paths = [p for m in DIFF_GIT.finditer(diff) for p in (m.group(2), m.group(4))]
    if not paths:  # a plain unified diff without git headers
        paths = [m.group(2) for m in MINUS_PLUS.finditer(diff)]
    return list(dict.fromkeys(paths))


def refused(paths: list[str]) -> list[str]:
    """The paths the runtime-only rule refuses: anything but the vllm package, and native or build files."""
    bad = []
    for path in paths:
        name = path.rsplit("/", 1)[-1]
        if path.startswith(IGNORED_DIRS) or path.endswith(IGNORED_SUFFIXES):
            continue
        if not path.startswith("vllm/") or path.endswith(NATIVE_SUFFIXES) or name in BUILD_FILES:
            bad.append(path)
    return bad


def check_runtime_only(pr: PullRequest, diff: str) -> None:
    paths = touched(diff)
    bad = refused(paths)
    if bad:
        raise ConfigError(
            f"{FLAG} {pr.number}: the patch changes files a runtime patch cannot (only the installed vllm "
            f"package's files may change; native sources, CMake, Makefiles and setup.py need a rebuild):\n"
            + "".join(f"  {p}\n" for p in bad)
            + "Build an image with the PR applied instead (the origin's build-and-copy.sh --apply-vllm-pr), "
            f"or leave out {FLAG} {pr.number}")
    if not any(p.startswith("vllm/") for p in paths):
        raise ConfigError(f"{FLAG} {pr.number}: the patch changes no file of the vllm package "
                          f"({len(paths)} paths, all docs/tests/CI), so it would change nothing; leave it out")


def cached(pr: PullRequest) -> Mod | None:
    """The PR's mod from the cache, without any network call; None when it was never fetched."""
    entries = sorted((p for p in pr.folder.glob("*/pr.diff") if not p.parent.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime) if pr.folder.is_dir() else []
    if not entries:
        return None
    diff_path = entries[-1]
    data = diff_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != diff_path.parent.name:
        raise ConfigError(f"{diff_path}: its sha256 is {digest}, not the {diff_path.parent.name} it was cached "
                          f"under (edited or damaged): remove {pr.folder} and run again to fetch it anew")
    check_runtime_only(pr, data.decode("utf-8", "replace"))
    write_run_sh(pr, diff_path.parent, digest)
    return Mod(f"vllm-pr-{pr.number}", diff_path.parent)


def write_run_sh(pr: PullRequest, folder: Path, digest: str) -> None:
    """The mod's run.sh, (re)written from the template so a cached PR follows this version's script."""
    text = render_template("vllm-pr-mod.sh.j2", number=pr.number, sha256=digest)
    path = folder / "run.sh"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    path.chmod(0o755)

