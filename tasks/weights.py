"""The weights step: find the models a recipe needs, pin them to a commit, download, prove completeness.

Plain functions with plain data in and out (no CLI, no doit), so the doit task, `--dry-run`, `--verify`
and the tests share one implementation.

Why it looks like this:

- `huggingface_hub` is imported inside functions: importing it costs time on every run, and the common
  case (everything present) needs none of it.
- "Up to date" is decided from the cache alone, by `stat`: the tree listing that huggingface_hub 2.4
  caches per commit (`trees/<commit>.json`) names every file and its size; each must be present in
  `snapshots/<commit>/` with that size. Never reading weight bytes keeps the check O(files) and flat
  in bytes (doit's md5 `file_dep` would read 500 GB on every run after a touch).
- Hashing is a separate, explicit step (`verify_blobs`): LFS blobs are named by their sha256.
- Every hub failure becomes a `WeightsError` whose message tells a person what to do, never holds
  the token, and carries no traceback.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TextIO

from . import masking
from .errors import RunRecipeError
from .units import human_bytes

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_NAME_PART = re.compile(r"^[A-Za-z0-9_](?:[\w.-]*[A-Za-z0-9_])?$")
TREE_FORMAT_VERSION = 1  # huggingface_hub 2.4's trees/<commit>.json format
HF_URL = "https://huggingface.co"


# ----------------------------------------------------------------------------- errors
class WeightsError(RunRecipeError):
    """A failure of the weights step, with a message meant for a person (no traceback needed)."""


class AccessDenied(WeightsError):
    """Gated or private repo and no (or an insufficient) token: 401/403."""


class RepoNotFound(WeightsError):
    pass


class RevisionNotFound(WeightsError):
    pass


class OfflineIncomplete(WeightsError):
    """Offline (HF_HUB_OFFLINE or hub unreachable) and the cache cannot serve the revision."""


class HubUnreachable(WeightsError):
    pass


class NotEnoughDisk(WeightsError):
    def __init__(self, message: str, needed: int = 0, free: int = 0) -> None:
        super().__init__(message)
        self.needed = needed
        self.free = free


class IncompleteDownload(WeightsError):
    pass


class UnsafeListing(WeightsError, ValueError):
    """The hub's file listing names a path outside the snapshot folder (a broken or hostile mirror)."""


# ----------------------------------------------------------------------------- command parsing
def is_local_path(model: str) -> bool:
    """A model given as a filesystem path is used as is (mounted), never downloaded."""
    return model.startswith(("/", ".", "~"))


def is_repo_id(text: str) -> bool:
    """`org/name` as the hub allows it: letters, digits, '-', '_', '.'; no part starting or ending with '-'
    or '.', no '--' or '..', at most 96 characters a part (the client refuses anything else, with a traceback)."""
    return bool(REPO_ID_RE.match(text)) and all(
        _HUB_NAME_PART.match(part) and "--" not in part and ".." not in part and len(part) <= 96
        for part in text.split("/"))


def _repo_ref(value: object) -> str | None:
    if isinstance(value, str) and not is_local_path(value) and REPO_ID_RE.match(value):
        return value
    return None


def model_refs_in_command(argv: Sequence[str]) -> list[str]:
    """HF repo ids the vLLM command names besides the main model (draft models, tokenizer).

    vLLM would otherwise fetch them itself at start, unpinned and unverified, inside the container.
    Recognised: `--speculative-config '{"model": "org/name", ...}'` (also `_`, also `--x={json}`),
    `--speculative-config.model org/name` (also `=`), `--speculative-model`, `--tokenizer`.
    Local paths are skipped. Order kept, duplicates dropped.
    """
    found: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--"):
            continue
        name, eq, value = arg.partition("=")
        if not eq:
            if i < len(args) and not args[i].startswith("--"):
                value = args[i]
            else:
                value = None  # flag without a value
        key = name[2:].replace("_", "-")
        if key == "speculative-config" and value is not None:
            if eq == "":
                i += 1
            try:
                cfg = json.loads(value)
            except ValueError:
                raise WeightsError(f"{name} is not valid JSON: {value!r}") from None
            if isinstance(cfg, dict):
                found.append(_repo_ref(cfg.get("model")) or "")
        elif key in ("speculative-config.model", "speculative-model", "tokenizer") and value is not None:
            if eq == "":
                i += 1
            found.append(_repo_ref(value) or "")
    return list(dict.fromkeys(r for r in found if r))


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


def _write_tree_listing(cache_dir: str | Path, repo: str, commit: str, files: dict[str, dict]) -> None:
    """Store a listing in the client's own format, so snapshot_download skips its tree request."""
    trees = repo_folder(cache_dir, repo) / "trees"
    trees.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=trees, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"format_version": TREE_FORMAT_VERSION, "files": dict(sorted(files.items()))}, f, indent=1)
    os.replace(tmp, trees / f"{commit}.json")


def _selected(paths: Sequence[str] | dict, allow_patterns: Sequence[str] | str | None) -> list[str]:
    """Filter like huggingface_hub's filter_repo_objects (fnmatchcase; 'dir/' means 'dir/*')."""
    if allow_patterns is None:
        return list(paths)
    pats = [allow_patterns] if isinstance(allow_patterns, str) else list(allow_patterns)
    pats = [p + "*" if p.endswith("/") else p for p in pats]
    return [p for p in paths if any(fnmatchcase(p, pat) for pat in pats)]


def _read_ref(cache_dir: str | Path, repo: str, revision: str) -> str | None:
    try:
        return (repo_folder(cache_dir, repo) / "refs" / revision).read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def _write_ref(cache_dir: str | Path, repo: str, revision: str, commit: str) -> None:
    ref = repo_folder(cache_dir, repo) / "refs" / revision
    if _read_ref(cache_dir, repo, revision) == commit:
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
    wanted = _selected(listing, allow_patterns)
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
        ref = _read_ref(cache_dir, repo, revision)
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


# ----------------------------------------------------------------------------- hub errors
def _scrub(text: str, token: str | bool | None) -> str:
    return masking.scrub(text, [token] if isinstance(token, str) else [])


def _translate(exc: BaseException, repo: str, revision: str | None, token: str | bool | None, endpoint: str | None) -> WeightsError | None:
    """Map a huggingface_hub / network / disk exception to a WeightsError with a way out, or None."""
    import errno

    import httpx2
    from huggingface_hub import errors as E

    where = endpoint or "the hub"
    rev = f" (revision {revision!r})" if revision else ""
    has_token = bool(token) if token is not None else any(os.environ.get(k) for k in masking.TOKEN_VARS)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    page = f"{HF_URL}/{repo}"
    if isinstance(exc, E.GatedRepoError) or (isinstance(exc, E.HfHubHTTPError) and status in (401, 403) and not isinstance(exc, E.RepositoryNotFoundError)):
        if has_token:
            msg = (f"{repo} is gated or private and the token in HF_TOKEN has no access to it: "
                   f"accept the licence at {page} with the account that owns the token (or use a token that can read it)")
        else:
            msg = f"{repo} is gated or private: accept the licence at {page} and set HF_TOKEN"
        return AccessDenied(msg)
    if isinstance(exc, E.RevisionNotFoundError):
        return RevisionNotFound(f"revision {revision!r} not found in {repo} on {where}: check the recipe's `revision`")
    if isinstance(exc, E.RepositoryNotFoundError):
        hint = "" if has_token else "; if it is private or gated, set HF_TOKEN"
        return RepoNotFound(f"model repo {repo} not found on {where}: check the name{hint}")
    if isinstance(exc, E.RemoteEntryNotFoundError):
        return IncompleteDownload(f"{repo}{rev}: a listed file is missing on {where}: {_scrub(str(exc).splitlines()[-1], token)}")
    if isinstance(exc, (E.OfflineModeIsEnabled, E.LocalEntryNotFoundError)):
        return OfflineIncomplete(f"{repo}{rev} is not complete in the cache and the hub is not used (offline or unreachable): "
                                 "run the download once with network access (unset HF_HUB_OFFLINE)")
    if isinstance(exc, E.HfHubHTTPError):
        return HubUnreachable(f"{where} answered HTTP {status} for {repo}{rev}: try again later; finished files are kept")
    if isinstance(exc, (httpx2.TransportError,)):
        return HubUnreachable(f"cannot reach {where} for {repo}{rev} ({type(exc).__name__}): "
                              "check the network and re-run; finished files are kept")
    if isinstance(exc, ValueError) and "too large to be downloaded" in str(exc):
        # plain HTTP refuses files over 50 GB (MAX_HTTP_DOWNLOAD_SIZE); only Xet can fetch them
        return IncompleteDownload(f"{repo}{rev} has a file over 50 GB, which huggingface_hub only downloads "
                                  "with hf_xet: install hf_xet and unset HF_HUB_DISABLE_XET")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return NotEnoughDisk(f"disk full while downloading {repo}{rev}: free some space and re-run")
    if isinstance(exc, OSError):
        first = _scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, token)
        return IncompleteDownload(f"download of {repo}{rev} failed: {first}; re-run to resume (finished files are kept)")
    return None


@contextmanager
def _hub_errors(repo: str, revision: str | None, token: str | bool | None, endpoint: str | None) -> Iterator[None]:
    try:
        yield
    except WeightsError:
        raise
    except Exception as exc:
        err = _translate(exc, repo, revision, token, endpoint)
        if err is None:
            raise
        raise err from None


# ----------------------------------------------------------------------------- resolve
def resolve_commit(
    repo: str,
    revision: str = "main",
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    offline: bool | None = None,
    cache_dir: str | Path | None = None,
) -> str:
    """The commit sha a revision names now. A commit pin costs nothing; offline reads `refs/`; else one GET.

    `offline=None` follows HF_HUB_OFFLINE."""
    if COMMIT_RE.match(revision):
        return revision
    if offline is None:
        offline = offline_from_env()
    if offline:
        cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
        sha = _read_ref(cache, repo, revision)
        if sha is None:
            raise OfflineIncomplete(
                f"offline and {repo} has never been downloaded at {revision!r} into {cache}: "
                "run the download once with network access (unset HF_HUB_OFFLINE), or pin a commit"
            )
        return sha
    from huggingface_hub import HfApi

    with _hub_errors(repo, revision, token, endpoint):
        info = HfApi(endpoint=endpoint, token=token).repo_info(repo, revision=revision)
    if not info.sha or not COMMIT_RE.match(info.sha):
        raise WeightsError(f"{endpoint or 'the hub'} did not return a commit for {repo}@{revision}")
    return info.sha


# ----------------------------------------------------------------------------- download
@dataclass
class DownloadSummary:
    repo: str
    commit: str
    path: str  # the snapshot folder (what vLLM is given)
    files: int  # files fetched by this run
    bytes: int  # bytes fetched by this run
    seconds: float
    present: int = 0  # files that were already in the cache

    def line(self) -> str:
        rate = f" ({human_bytes(self.bytes / self.seconds)}/s)" if self.seconds > 0 and self.bytes else ""
        return (f"{self.repo}@{self.commit[:12]}: {self.files} files, {human_bytes(self.bytes)} in {self.seconds:.1f} s"
                f"{rate}; {self.present} already present")


def _free_bytes(path: Path) -> int:
    """Free space where `path` is (or would be): its nearest existing ancestor."""
    for p in [path, *path.parents]:
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return 0


def _remove_stale_partials(cache_dir: Path, repo: str) -> int:
    """Delete `blobs/*.incomplete` left by a killed download; return bytes freed.

    huggingface_hub 2.4 writes each file to `<etag>.<random>.incomplete` and deletes it on error, but a
    kill -9 leaves it forever under a name no later run reuses. A partial is removed only if we can
    take the client's own per-blob lock, i.e. no live download is writing it."""
    from filelock import FileLock, Timeout

    blobs = repo_folder(cache_dir, repo) / "blobs"
    locks = cache_dir / ".locks" / repo_folder(cache_dir, repo).name
    freed = 0
    for part in blobs.glob("*.incomplete"):
        etag = part.name.split(".", 1)[0]
        lock = FileLock(str(locks / f"{etag}.lock"), timeout=0)
        try:
            locks.mkdir(parents=True, exist_ok=True)
            with lock:
                size = part.stat().st_size
                part.unlink()
                freed += size
        except (Timeout, FileNotFoundError):
            continue
    return freed


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


def _fetch_listing(api, repo: str, commit: str) -> dict[str, dict]:
    from huggingface_hub.hf_api import RepoFile

    out: dict[str, dict] = {}
    for f in api.list_repo_tree(repo, revision=commit, recursive=True):
        if isinstance(f, RepoFile):
            info: dict = {"size": f.size, "blob_id": f.blob_id}
            if f.lfs is not None:
                info["lfs_sha256"] = f.lfs.sha256
                info["lfs_size"] = f.lfs.size
            if getattr(f, "xet_hash", None):
                info["xet_hash"] = f.xet_hash
            out[f.path] = info
    return out


class _DiskProgress:
    """A rich bar for the whole snapshot (bytes, rate, ETA), fed by polling the cache with stat.

    Watching the disk instead of hooking the client's tqdm bars keeps it independent of the client's
    progress internals; it moves as the client writes its `.incomplete` files and links blobs."""

    def __init__(self, cache_dir: Path, repo: str, commit: str, paths: list[str], sizes: dict[str, int], stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        self.blobs = repo_folder(cache_dir, repo) / "blobs"
        self.snap = repo_folder(cache_dir, repo) / "snapshots" / commit
        self.todo = {p: sizes[p] for p in paths}
        self.total = sum(self.todo.values())
        self.stop = threading.Event()
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
            console=Console(file=stream), transient=False,
        )
        self.task = self.progress.add_task(f"{repo}@{commit[:8]}", total=self.total)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _done_bytes(self) -> int:
        done = 0
        for p, size in list(self.todo.items()):
            if os.path.exists(self.snap / p):
                done += size
        for part in self.blobs.glob("*.incomplete"):
            try:
                done += part.stat().st_size
            except FileNotFoundError:
                pass
        return min(done, self.total)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            self.progress.update(self.task, completed=self._done_bytes())

    def __enter__(self) -> "_DiskProgress":
        self.progress.start()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.progress.update(self.task, completed=self._done_bytes())
        self.progress.stop()


def _quiet_tqdm():
    """A tqdm class that never draws: we show one bar for the whole snapshot ourselves."""
    from tqdm.auto import tqdm

    class Quiet(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Quiet


def download(
    repo: str,
    commit: str,
    *,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    allow_patterns: Sequence[str] | str | None = None,
    revision: str | None = None,
    progress: bool | None = None,
    offline: bool | None = None,
    max_workers: int = 8,
    stream: TextIO | None = None,
) -> DownloadSummary:
    """Bring `commit` of `repo` into the cache with the real client, then prove it complete.

    - Downloads by commit, so a branch moving mid-run cannot mix revisions; `revision` (a branch or
      tag) is then pointed at the commit in `refs/`, as the client would.
    - Refuses before fetching anything if the missing files exceed the free disk space.
    - Resumable: finished files are kept by the client; a partial file from a killed run is removed.
    - `progress=None`: a bar (bytes, rate, ETA for the whole snapshot) only when `stream` is a TTY.
      A one-line summary is always written to `stream` (stderr by default).
    """
    stream = stream or sys.stderr
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    if not COMMIT_RE.match(commit):
        raise ValueError(f"download() takes a resolved commit sha, got {commit!r}: call resolve_commit first")
    if offline is None:
        offline = offline_from_env()
    start = time.monotonic()
    state = snapshot_state(cache, repo, commit, allow_patterns=allow_patterns)
    snap_path = str(repo_folder(cache, repo) / "snapshots" / commit)
    if state.complete:
        if revision is not None and not COMMIT_RE.match(revision):
            _write_ref(cache, repo, revision, commit)
        summary = DownloadSummary(repo, commit, snap_path, 0, 0, time.monotonic() - start, present=state.files)
        print(summary.line(), file=stream)
        return summary
    if offline:
        raise OfflineIncomplete(
            f"offline (HF_HUB_OFFLINE) and {repo}@{commit[:12]} is not complete in {cache}: {state.reason}; "
            "run the download once with network access"
        )

    from huggingface_hub import HfApi, snapshot_download

    with _hub_errors(repo, revision or commit, token, endpoint):
        listing = read_tree_listing(cache, repo, commit)
        if listing is None:
            fetched = _fetch_listing(HfApi(endpoint=endpoint, token=token), repo, commit)
            check_listing(cache, repo, commit, fetched)  # before it is written, and before any file is touched
            _write_tree_listing(cache, repo, commit, fetched)
            state = snapshot_state(cache, repo, commit, allow_patterns=allow_patterns)
            listing = read_tree_listing(cache, repo, commit) or {}
        if state.wrong_size:  # the client trusts an existing link: drop it (and its bad blob) to refetch
            discard(cache, repo, commit, state.wrong_size)
        _remove_stale_partials(cache, repo)
        blobs = repo_folder(cache, repo) / "blobs"
        todo = state.missing + state.wrong_size
        # a blob already in the cache (same content in another commit) is only linked, not fetched
        fetch = [p for p in todo if not (blobs / listing[p].blob_name).exists()]
        needed = sum(listing[p].size for p in fetch)
        free = _free_bytes(cache)
        if needed > free:
            raise NotEnoughDisk(
                f"{repo}@{commit[:12]} needs {human_bytes(needed)} more but only {human_bytes(free)} is free on {cache}: "
                "free some space or point HF_HUB_CACHE/HF_HOME at a larger disk",
                needed=needed,
                free=free,
            )
        show_bar = progress if progress is not None else bool(getattr(stream, "isatty", lambda: False)())
        kwargs = dict(
            revision=commit, cache_dir=str(cache), endpoint=endpoint, token=token,
            allow_patterns=list(allow_patterns) if isinstance(allow_patterns, (list, tuple)) else allow_patterns,
            max_workers=max_workers, tqdm_class=_quiet_tqdm(),
        )
        if show_bar:
            sizes = {p: e.size for p, e in listing.items()}
            with _DiskProgress(cache, repo, commit, fetch, sizes, stream):
                snapshot_download(repo, **kwargs)
        else:
            snapshot_download(repo, **kwargs)

    after = snapshot_state(cache, repo, commit, allow_patterns=allow_patterns)
    if not after.complete:
        raise IncompleteDownload(f"{repo}@{commit[:12]} is still incomplete after the download: {after.reason}; re-run to resume")
    if revision is not None and not COMMIT_RE.match(revision):
        _write_ref(cache, repo, revision, commit)
    summary = DownloadSummary(
        repo, commit, snap_path, len(fetch), needed, time.monotonic() - start, present=state.files - len(fetch),
    )
    print(summary.line(), file=stream)
    return summary


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

    paths = _selected(listing, allow_patterns)
    # biggest first, so the slowest file does not start last
    paths.sort(key=lambda p: -listing[p].size)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        bad = [p for p in pool.map(check, paths) if p is not None]
    return sorted(bad)
