"""--apply-vllm-pr: a vLLM pull request's diff as one more mod layer (origin-facts 2.7, 6.3).

The origin downloads the diff on every launch and patches the running container. Here the diff is
fetched once into the project's cache, keyed by PR number and sha256 (`.runrecipe/cache/vllm-pr/
<N>/<sha256>/`), and that folder is an ordinary mod (pr.diff + a generated run.sh), so the mods
image is content-hashed like any other: the same diff means the same image and nothing runs.

The origin's runtime-only rule holds: a patch may change files of the installed `vllm` package only
(not native sources, build files or setup.py, which need a rebuild); docs, tests, benchmarks,
examples and CI files are ignored. The fetch uses huggingface_hub's HTTP client (retries, proxies,
and HF_HUB_OFFLINE, which makes the cache the only source); RUNRECIPE_VLLM_PR_BASE points it elsewhere.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import settings
from .errors import ConfigError, RunError
from .hub_cache import offline_from_env
from .mods import Mod
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
    _write_run_sh(pr, diff_path.parent, digest)
    return Mod(f"vllm-pr-{pr.number}", diff_path.parent)


def fetch(pr: PullRequest) -> Mod:
    """The PR's mod: from the cache, else downloaded once (never when HF_HUB_OFFLINE is set)."""
    found = cached(pr)
    if found:
        return found
    if offline_from_env():
        raise ConfigError(f"{FLAG} {pr.number}: the patch is not in the cache ({pr.folder}) and HF_HUB_OFFLINE "
                          "forbids fetching it; run once with network access, then offline runs use the cache")
    data = _download(pr)
    digest = hashlib.sha256(data).hexdigest()
    check_runtime_only(pr, data.decode("utf-8", "replace"))
    folder = pr.folder / digest
    tmp = pr.folder / f".{digest}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "pr.diff").write_bytes(data)
    try:
        os.replace(tmp, folder)
    except OSError:  # another run cached the same diff first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "pr.diff").is_file():
            raise
    _write_run_sh(pr, folder, digest)
    return Mod(f"vllm-pr-{pr.number}", folder)


def fetch_missing(apply: list[tuple[str, Any]]) -> list[str]:
    """Fetch every --apply-vllm-pr of the run the cache lacks (before the plan reads the cache); say what."""
    notes = []
    for kind, pr in apply:
        if kind == "pr" and cached(pr) is None:
            notes.append(f"{FLAG} {pr.number}: fetched {pr.url} into {fetch(pr).path} (its name is its sha256)")
    return notes


def _download(pr: PullRequest) -> bytes:
    from huggingface_hub.utils import http_backoff

    try:
        resp = http_backoff("GET", pr.url, max_retries=3, timeout=60)
    except Exception as exc:  # httpx2's transport errors and the hub's OfflineModeIsEnabled alike
        raise RunError(f"{FLAG} {pr.number}: cannot fetch {pr.url}: {exc}\n  set {BASE_ENV} to another "
                       f"server, or fetch it once where there is network (the cache is {pr.folder})") from None
    if resp.status_code != 200:
        raise RunError(f"{FLAG} {pr.number}: {pr.url} answered HTTP {resp.status_code}: is {pr.number} a "
                       "vLLM pull request?")
    return resp.content


def _write_run_sh(pr: PullRequest, folder: Path, digest: str) -> None:
    """The mod's run.sh, (re)written from the template so a cached PR follows this version's script."""
    text = render_template("vllm-pr-mod.sh.j2", number=pr.number, sha256=digest)
    path = folder / "run.sh"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    path.chmod(0o755)
