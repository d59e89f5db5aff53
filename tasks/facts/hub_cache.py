"""The HuggingFace cache as huggingface_hub 2.4 lays it out, read and checked without the hub.

`models--org--name/` holds `blobs/` (content-addressed), `snapshots/<commit>/` (links to blobs), `refs/`
(branch or tag -> commit) and `trees/<commit>.json` (the file listing the client caches per commit).
"Up to date" is decided from here alone, by `stat`: every file the listing names must be in the
snapshot with its size; never reading weight bytes keeps the check O(files) and flat in bytes.
Hashing is a separate, explicit step (`verify_blobs`): LFS blobs are named by their sha256. A
listing that names a path outside the snapshot (a broken or hostile mirror) is refused before
anything is written or deleted.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import RunRecipeError
from ..fanout import each

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
TREE_FORMAT_VERSION = 1  # huggingface_hub 2.4's trees/<commit>.json format

# ----------------------------------------------------------------------------- errors
class WeightsError(RunRecipeError):
    """A failure of the weights step, with a message meant for a person (no traceback needed)."""

class UnsafeListing(WeightsError, ValueError):
    """The hub's file listing names a path outside the snapshot folder (a broken or hostile mirror)."""

# ----------------------------------------------------------------------------- cache layout
def hub_cache_dir(env: dict[str, str] | None = None) -> Path:
    """The cache huggingface_hub uses (HF_HUB_CACHE, else HF_HOME/hub, else XDG/~/.cache), without importing it."""
    env = dict(os.environ if env is None else env)
    if env.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.path.expanduser(env["HF_HUB_CACHE"])))
    if env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.path.expandvars(os.path.expanduser(env["HUGGINGFACE_HUB_CACHE"])))
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"

def offline_from_env(env: dict[str, str] | None = None) -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it."""
    env = os.environ if env is None else env
    value = env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}

def repo_folder(cache_dir: str | Path, repo: str) -> Path:
    return Path(cache_dir) / ("models--" + repo.replace("/", "--"))

@dataclass(frozen=True)
class TreeEntry:
    size: int
    blob_id: str  # git blob sha1: the blob name of a non-LFS file
    lfs_sha256: str | None = None  # the blob name of an LFS file

    @property
    def blob_name(self) -> str:
        return self.lfs_sha256 or self.blob_id

def check_listing(cache_dir: str | Path, repo: str, commit: str, paths: Iterable[str]) -> None:
    """Refuse a listing with a path that is absolute, has '..' or '.' or empty parts, or resolves outside
    the snapshot folder: every later step (stat, discard, download, copy) joins these paths to it."""
    snap = repo_folder(cache_dir, repo) / "snapshots" / commit
    inside = os.path.realpath(snap)
    for path in paths:
        parts = path.split("/")
        parent = os.path.realpath(snap.joinpath(*parts[:-1])) if len(parts) > 1 else inside
        if (not path or "\0" in path or path.startswith("/") or any(p in ("", ".", "..") for p in parts)
                or os.path.commonpath([inside, parent]) != inside):
            raise UnsafeListing(f"{repo}@{commit[:12]}: the hub's file listing names {path!r}, which is not a "
                                f"file inside the snapshot folder {snap}: nothing was downloaded or removed; "
                                "the hub (HF_ENDPOINT) is broken or hostile: use another")

def read_tree_listing(cache_dir: str | Path, repo: str, commit: str) -> dict[str, TreeEntry] | None:
    """The per-commit file listing huggingface_hub 2.4 caches in `trees/<commit>.json` (None if absent/unknown).

    A commit is immutable, so its listing is too: it is the authority for "which files, which sizes".
    A listing naming a path outside the snapshot raises UnsafeListing (the client caches what the hub says)."""
    path = repo_folder(cache_dir, repo) / "trees" / f"{commit}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format_version") != TREE_FORMAT_VERSION:
            return None
        check_listing(cache_dir, repo, commit, data["files"])
        return {
            p: TreeEntry(
                size=int(info["lfs_size"] if info.get("lfs_size") is not None else info["size"]),
                blob_id=info["blob_id"],
                lfs_sha256=info.get("lfs_sha256"),
            )
            for p, info in data["files"].items()
        }
    except UnsafeListing:
        raise
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None

def write_tree_listing(cache_dir: str | Path, repo: str, commit: str, files: dict[str, dict]) -> None:
    """Store a listing in the client's own format, so snapshot_download skips its tree request."""
    trees = repo_folder(cache_dir, repo) / "trees"
    trees.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=trees, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"format_version": TREE_FORMAT_VERSION, "files": dict(sorted(files.items()))}, f, indent=1)
    os.replace(tmp, trees / f"{commit}.json")

def selected(paths: Sequence[str] | dict, allow_patterns: Sequence[str] | str | None) -> list[str]:
    """Filter like huggingface_hub's filter_repo_objects (fnmatchcase; 'dir/' means 'dir/*')."""
    if allow_patterns is None:
        return list(paths)
    pats = [allow_patterns] if isinstance(allow_patterns, str) else list(allow_patterns)
    pats = [p + "*" if p.endswith("/") else p for p in pats]
    return [p for p in paths if any(fnmatchcase(p, pat) for pat in pats)]

def read_ref(cache_dir: str | Path, repo: str, revision: str) -> str | None:
    try:
        return (repo_folder(cache_dir, repo) / "refs" / revision).read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None

def write_ref(cache_dir: str | Path, repo: str, revision: str, commit: str) -> None:
    ref = repo_folder(cache_dir, repo) / "refs" / revision
    if read_ref(cache_dir, repo, revision) == commit:
        return
    ref.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=ref.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(commit)
    os.replace(tmp, ref)

# ----------------------------------------------------------------------------- up to date
@dataclass
class SnapshotState:
    """What the cache holds for one commit. `complete` is the only thing a task should trust."""

    complete: bool
    missing: list[str] = field(default_factory=list)
    wrong_size: list[str] = field(default_factory=list)
    files: int = 0  # files the revision (after allow_patterns) should have
    bytes: int = 0  # their total size
    reason: str = ""  # why not complete, for a person ("" when complete)
    missing_bytes: int = 0  # size of missing + wrong-size files (what a download must fetch, at most)

def snapshot_state(
    cache_dir: str | Path,
    repo: str,
    commit: str,
    *,
    allow_patterns: Sequence[str] | str | None = None,
    revision: str | None = None,
) -> SnapshotState:
    """Is `commit` of `repo` fully in the cache? Stat only: O(files), never reads weight bytes.

    Complete means: the commit's tree listing is cached, every listed file (filtered by
    `allow_patterns`) is in `snapshots/<commit>/` with the listed size, and, when `revision` is a
    branch or tag, `refs/<revision>` names this commit. A file counts only once the client has
    moved its finished blob into place and linked it, so a killed download is never complete.
    """
    listing = read_tree_listing(cache_dir, repo, commit)
    if listing is None:
        return SnapshotState(False, reason=f"no cached file listing for {repo}@{commit[:12]}")
    wanted = selected(listing, allow_patterns)
    snap = repo_folder(cache_dir, repo) / "snapshots" / commit
    missing: list[str] = []
    wrong: list[str] = []
    total = missing_bytes = 0
    for path in wanted:
        size = listing[path].size
        total += size
        try:
            st = os.stat(snap / path)  # follows the snapshot symlink to the blob
            ok = st.st_size == size and stat.S_ISREG(st.st_mode)
        except (FileNotFoundError, NotADirectoryError):
            missing.append(path)
            missing_bytes += size
            continue
        if not ok:
            wrong.append(path)
            missing_bytes += size
    reasons = []
    if missing:
        reasons.append(f"{len(missing)} of {len(wanted)} files missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if wrong:
        reasons.append(f"{len(wrong)} files with the wrong size ({', '.join(wrong[:3])})")
    if revision is not None and not COMMIT_RE.match(revision):
        ref = read_ref(cache_dir, repo, revision)
        if ref != commit:
            reasons.append(f"refs/{revision} is {ref[:12] if ref else 'absent'}, not {commit[:12]}")
    return SnapshotState(
        complete=not reasons,
        missing=missing,
        wrong_size=wrong,
        files=len(wanted),
        bytes=total,
        reason="; ".join(reasons),
        missing_bytes=missing_bytes,
    )

def discard(cache_dir: str | Path, repo: str, commit: str, paths: Sequence[str]) -> None:
    """Remove files (snapshot link and blob) so the next download fetches them again (after a failed verify)."""
    check_listing(cache_dir, repo, commit, paths)  # never unlink outside the snapshot, whatever the caller passes
    folder = repo_folder(cache_dir, repo)
    blobs = os.path.realpath(folder / "blobs")
    snap = folder / "snapshots" / commit
    for path in paths:
        link = snap / path
        target = Path(os.path.realpath(link))
        doomed = [link] + ([target] if str(target.parent) == blobs else [])  # never outside our blobs/
        for p in doomed:
            try:
                p.unlink()
            except FileNotFoundError:
                pass

# ----------------------------------------------------------------------------- verify
def _digest(path: Path, algo: str, git_size: int | None = None) -> str:
    h = hashlib.new(algo)
    if git_size is not None:
        h.update(b"blob %d\0" % git_size)
    buf = bytearray(8 * 1024 * 1024)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()

def verify_blobs(
    cache_dir: str | Path,
    repo: str,
    commit: str,
    workers: int = 4,
    *,
    allow_patterns: Sequence[str] | str | None = None,
) -> list[str]:
    """Hash every file of the snapshot against its name in the listing; return the paths that do not match.

    LFS files (the weights) are checked by sha256 (their blob name), small files by git blob sha1.
    Missing files count as mismatches. Reads every byte, so it is opt-in (`--verify`); `workers`
    bounds the parallel reads (hashlib releases the GIL)."""
    listing = read_tree_listing(cache_dir, repo, commit)
    if listing is None:
        raise WeightsError(f"no cached file listing for {repo}@{commit[:12]}: download it first")
    snap = repo_folder(cache_dir, repo) / "snapshots" / commit

    def check(path: str) -> str | None:
        e = listing[path]
        try:
            if e.lfs_sha256:
                ok = _digest(snap / path, "sha256") == e.lfs_sha256
            else:
                ok = _digest(snap / path, "sha1", git_size=os.stat(snap / path).st_size) == e.blob_id
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            ok = False
        return None if ok else path

    paths = selected(listing, allow_patterns)
    # biggest first, so the slowest file does not start last
    paths.sort(key=lambda p: -listing[p].size)
    return sorted(p for p in each(check, paths, workers=workers) if p is not None)

