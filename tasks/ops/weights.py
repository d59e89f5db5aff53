"""The weights step: pin a model to a commit, download it, and say why when the hub will not.

Plain functions with plain data in and out (no CLI, no doit), so the doit task, `--dry-run`, `--verify`
and the tests share one implementation. What is already in the cache, and whether it is complete, is
hub_cache's business (by `stat`, never reading weight bytes); this module talks to the hub.

- `huggingface_hub` is imported inside functions: importing it costs time on every run, and the common
  case (everything present) needs none of it.
- Every hub failure becomes a `WeightsError` whose message tells a person what to do, never holds
  the token, and carries no traceback.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, TextIO

from .. import masking, report
from ..facts.hub_cache import (COMMIT_RE, SnapshotState, WeightsError, check_listing, discard, hub_cache_dir,
                        offline_from_env, read_ref, read_tree_listing, repo_folder, snapshot_state,
                        write_ref, write_tree_listing)
from ..sizes import human_bytes

HF_URL = "https://huggingface.co"


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
        sha = read_ref(cache, repo, revision)
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
    - `progress=None`: a bar (bytes, rate, ETA for the whole snapshot) only when its stream is a TTY:
      `stream`, else where the reporter in force lets live progress draw (none for JSON).
    - The one-line summary goes to `stream` when one is given, else it is a Downloaded event.
    """
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    if not COMMIT_RE.match(commit):
        raise ValueError(f"download() takes a resolved commit sha, got {commit!r}: call resolve_commit first")
    if offline is None:
        offline = offline_from_env()
    start = time.monotonic()
    state = snapshot_state(cache, repo, commit, allow_patterns=allow_patterns)
    snap_path = str(repo_folder(cache, repo) / "snapshots" / commit)
    if state.complete:
        _point_ref(cache, repo, revision, commit)
        return _summarize(DownloadSummary(repo, commit, snap_path, 0, 0, time.monotonic() - start,
                                          present=state.files), stream)
    if offline:
        raise OfflineIncomplete(
            f"offline (HF_HUB_OFFLINE) and {repo}@{commit[:12]} is not complete in {cache}: {state.reason}; "
            "run the download once with network access"
        )
    with _hub_errors(repo, revision or commit, token, endpoint):
        state, listing = _listed(cache, repo, commit, allow_patterns, endpoint, token, state)
        fetch, needed = _to_fetch(cache, repo, commit, state, listing)
        kwargs = dict(
            revision=commit, cache_dir=str(cache), endpoint=endpoint, token=token,
            allow_patterns=list(allow_patterns) if isinstance(allow_patterns, (list, tuple)) else allow_patterns,
            max_workers=max_workers, tqdm_class=_quiet_tqdm(),
        )
        _fetch(repo, kwargs, _bar(progress, stream, cache, repo, commit, fetch, listing))
    after = snapshot_state(cache, repo, commit, allow_patterns=allow_patterns)
    if not after.complete:
        raise IncompleteDownload(f"{repo}@{commit[:12]} is still incomplete after the download: {after.reason}; re-run to resume")
    _point_ref(cache, repo, revision, commit)
    return _summarize(DownloadSummary(repo, commit, snap_path, len(fetch), needed, time.monotonic() - start,
                                      present=state.files - len(fetch)), stream)


def _point_ref(cache: Path, repo: str, revision: str | None, commit: str) -> None:
    """A branch or tag name is pointed at the commit in `refs/`, as the client would."""
    if revision is not None and not COMMIT_RE.match(revision):
        write_ref(cache, repo, revision, commit)


def _listed(cache: Path, repo: str, commit: str, allow_patterns: Sequence[str] | str | None,
            endpoint: str | None, token: str | bool | None, state: SnapshotState) -> tuple[SnapshotState, dict]:
    """The commit's file listing (asked of the hub once, checked before it is written and before any
    file is touched), and the snapshot's state measured against it."""
    from huggingface_hub import HfApi

    listing = read_tree_listing(cache, repo, commit)
    if listing is not None:
        return state, listing
    fetched = _fetch_listing(HfApi(endpoint=endpoint, token=token), repo, commit)
    check_listing(cache, repo, commit, fetched)
    write_tree_listing(cache, repo, commit, fetched)
    state = snapshot_state(cache, repo, commit, allow_patterns=allow_patterns)
    return state, read_tree_listing(cache, repo, commit) or {}


def _to_fetch(cache: Path, repo: str, commit: str, state: SnapshotState, listing: dict) -> tuple[list[str], int]:
    """The files to fetch and their bytes, once the cache is ready for them; refuses (NotEnoughDisk)
    before any byte when they do not fit."""
    if state.wrong_size:  # the client trusts an existing link: drop it (and its bad blob) to refetch
        discard(cache, repo, commit, state.wrong_size)
    _remove_stale_partials(cache, repo)
    blobs = repo_folder(cache, repo) / "blobs"
    # a blob already in the cache (same content in another commit) is only linked, not fetched
    fetch = [p for p in state.missing + state.wrong_size if not (blobs / listing[p].blob_name).exists()]
    needed = sum(listing[p].size for p in fetch)
    free = _free_bytes(cache)
    if needed > free:
        raise NotEnoughDisk(
            f"{repo}@{commit[:12]} needs {human_bytes(needed)} more but only {human_bytes(free)} is free on {cache}: "
            "free some space or point HF_HUB_CACHE/HF_HOME at a larger disk",
            needed=needed,
            free=free,
        )
    return fetch, needed


def _bar(progress: bool | None, stream: TextIO | None, cache: Path, repo: str, commit: str, fetch: list[str],
         listing: dict) -> "_DiskProgress | None":
    """The one bar for the whole snapshot, or None: drawn on `stream`, else where the reporter in force
    lets live progress draw (nowhere for JSON); by default only when that is a TTY."""
    where = stream if stream is not None else report.live_stream()
    if where is None or not (progress if progress is not None else bool(getattr(where, "isatty", lambda: False)())):
        return None
    return _DiskProgress(cache, repo, commit, fetch, {p: e.size for p, e in listing.items()}, where)


def _fetch(repo: str, kwargs: dict, bar: "_DiskProgress | None") -> None:
    """The client's snapshot download, under our one bar for the whole snapshot when there is one."""
    from huggingface_hub import snapshot_download

    if bar is None:
        snapshot_download(repo, **kwargs)
        return
    with bar:
        snapshot_download(repo, **kwargs)


def _summarize(summary: DownloadSummary, stream: TextIO | None) -> DownloadSummary:
    """The summary line to the caller's `stream`, else as an event for the reporter in force."""
    if stream is not None:
        stream.write(summary.line() + "\n")
    else:
        report.emit(report.Downloaded(summary.line(), summary.repo, summary.commit, summary.files,
                                      summary.bytes, summary.seconds))
    return summary

