"""Weights to cluster workers: only what a node lacks, proven on that node afterwards.

Plain data in, plain data out; every side effect is a command (docker, ssh, rsync). A node is reached
through its link (tasks/connect builds it, and every ssh and rsync remote shell with it), so no value
reaches a remote shell unquoted. The stream through a chain of workers, its hops and their status
lines live in tasks/connect/chain.py; this module decides what goes where.

Why it looks like this (the image's copy is tasks/ops/image_copy.py):

- Weights: what a node lacks (missing or wrong-size files of this commit: blobs, relative snapshot
  links, trees/<commit>.json; refs written by content afterwards), found by one `find -printf` per
  worker. One worker gets `rsync -a --partial --size-only`; several get the union of what they lack
  once, as a tar stream through the same chain (each extracts with --skip-old-files after removing
  its wrong-size files). A worker the chain did not complete gets rsync from the head. The no-op
  path is one ssh call per worker and reads no bytes; `verify=True` adds one remote `sha256sum` per
  worker to catch same-size corruption.
- Every ssh from the head shares one connection per node (tasks/connect); the hops between
  workers are connected in parallel right after preflight (chain.open_hops), so their handshakes
  neither add up nor hold a stream up.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence, TextIO

from . import answers as steps
from ..connect.chain import Chain, Worker, on_threads, run_chain
from ..connect import Link, call, quote_path, tail
from ..errors import RunError
from ..facts.hub_cache import read_tree_listing, repo_folder, snapshot_state


@dataclass
class NodeReport:
    name: str
    action: str  # "up-to-date" | "sent"
    bytes: int = 0  # payload bytes that reached this node
    files: int = 0  # weights: regular files rsync transferred
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Report:
    """What a distribution did, per node; returned only when every node is proven up to date."""

    what: str
    strategy: str
    nodes: list[NodeReport] = field(default_factory=list)
    bytes_sent: int = 0  # bytes that left the head
    stream_seconds: float = 0.0  # image: until the last byte left the head (the rest is loading/verifying)
    seconds: float = 0.0

    @property
    def sent_to(self) -> list[str]:
        return [n.name for n in self.nodes if n.action == "sent"]

    @property
    def up_to_date(self) -> list[str]:
        return [n.name for n in self.nodes if n.action == "up-to-date"]

    @property
    def rate(self) -> float:
        return self.bytes_sent / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class RemoteState:
    manifest: dict[str, int]  # path under the repo folder -> size (snapshot files followed to blobs)
    refs: dict[str, str]  # ref name -> commit
    blobs: dict[str, int] = field(default_factory=dict)  # blobs/<name> -> size, every commit's


# $1 repo folder, $2 commit, $3... refs to point at the commit first (after a sync; saves a round trip)
MANIFEST_SCRIPT = r"""
cd "$1" 2>/dev/null || { printf 'END\0'; exit 0; }
c=$2; shift 2
for r; do
  mkdir -p "refs/$(dirname "$r")" && printf %s "$c" > "refs/$r.rr-tmp" && mv -f "refs/$r.rr-tmp" "refs/$r" || exit 4
done
find -L "snapshots/$c" "trees/$c.json" -type f -printf 'F\t%s\t%p\0' 2>/dev/null
[ -d blobs ] && find blobs -maxdepth 1 -type f -printf 'B\t%s\t%p\0' 2>/dev/null
[ -d refs ] && find refs -type f -exec sh -c 'for f; do printf "R\t%s\t%s\0" "${f#refs/}" "$(cat "$f")"; done' x {} + 2>/dev/null
printf 'END\0'
"""


def remote_state(link: Link, cache_dir: str | Path, repo: str, commit: str,
                 name: str | None = None, write_refs: Sequence[str] = ()) -> RemoteState:
    """Sizes of every file of `commit` on a node plus its refs, in ONE remote call (stat only).

    `write_refs` first points those refs at `commit` in the same call (used right after a sync)."""
    node = name or link.label
    cache_dir = str(cache_dir)
    folder = str(Path(cache_dir) / ("models--" + repo.replace("/", "--")))
    if cache_dir.startswith("~"):
        folder = cache_dir.rstrip("/") + "/models--" + repo.replace("/", "--")
    cmd = link.script_argv(MANIFEST_SCRIPT, [folder, commit, *write_refs])
    proc = call(cmd, node=node, step="weights manifest")
    manifest: dict[str, int] = {}
    refs: dict[str, str] = {}
    blobs: dict[str, int] = {}
    complete = False
    for rec in proc.stdout.decode(errors="surrogateescape").split("\0"):
        f = rec.split("\t")
        if f[0] in ("F", "B") and len(f) == 3 and f[1].isdigit():
            (manifest if f[0] == "F" else blobs)[f[2]] = int(f[1])
        elif f[0] == "R" and len(f) == 3:
            refs[f[1]] = f[2].strip()
        elif f[0] == "END":
            complete = True
    if not complete:
        raise RunError(f"weights manifest on {node} ended early", node=node, command=shlex.join(cmd),
                       exit_code=proc.returncode, tail=tail(proc.stderr.decode(errors="replace")))
    return RemoteState(manifest, refs, blobs)


def remote_manifest(link: Link, cache_dir: str, repo: str, commit: str,
                    name: str | None = None) -> dict[str, int]:
    """path (under the repo's cache folder) -> size for every file of `commit` present on the node."""
    return remote_state(link, cache_dir, repo, commit, name).manifest


@dataclass(frozen=True)
class _Want:
    manifest: dict[str, int]  # what a complete node has
    refs: dict[str, str]  # refs that name this commit on the head
    files: list[str]  # what rsync may send: blobs, snapshot links, tree json, refs
    hashes: dict[str, str]  # snapshot path -> sha256 expected
    blob_of: dict[str, str]  # snapshot path -> blobs/<name>


def _wanted(cache_dir: Path, repo: str, commit: str) -> _Want:
    """The head's truth for this commit, from its tree listing; refuses an incomplete head snapshot."""
    state = snapshot_state(cache_dir, repo, commit)
    if not state.complete:
        raise RunError(f"weights {repo}@{commit[:12]} are not complete on the head: {state.reason}",
                       node="local", command=f"snapshot_state {repo}@{commit}")
    listing = read_tree_listing(cache_dir, repo, commit) or {}
    folder = repo_folder(cache_dir, repo)
    manifest: dict[str, int] = {}
    files: list[str] = []
    hashes: dict[str, str] = {}
    blob_of: dict[str, str] = {}
    for path, e in sorted(listing.items()):
        snap = f"snapshots/{commit}/{path}"
        manifest[snap] = e.size
        blob = f"blobs/{e.blob_name}"
        if os.path.lexists(folder / blob):
            files.append(blob)
            blob_of[snap] = blob
        files.append(snap)
        if e.lfs_sha256:
            hashes[snap] = e.lfs_sha256
    tree = f"trees/{commit}.json"
    manifest[tree] = (folder / tree).stat().st_size
    files.append(tree)
    refs: dict[str, str] = {}
    refs_dir = folder / "refs"
    if refs_dir.is_dir():
        for p in refs_dir.rglob("*"):
            if p.is_file() and p.read_text().strip() == commit:
                refs[p.relative_to(refs_dir).as_posix()] = commit  # written by content, not rsync
    return _Want(manifest, refs, sorted(set(files)), hashes, blob_of)


def _diff(want: _Want, have: RemoteState) -> list[str]:
    """Paths whose size differs or that are missing, plus refs not naming the commit."""
    return [p for p, s in want.manifest.items() if have.manifest.get(p) != s]


def _stale_refs(want: _Want, have: RemoteState) -> list[str]:
    """Refs are 40 bytes whatever they name, so they are compared by content, never by size."""
    return [r for r, c in want.refs.items() if have.refs.get(r) != c]


HASH_SCRIPT = r"""
cd "$1" || exit 3
shift
sha256sum -- "$@"
"""


def _remote_hashes(link: Link, folder: str, paths: Sequence[str], node: str,
                   timeout: float) -> dict[str, str]:
    """sha256 of each path on the node (following snapshot links): reads every byte, hence opt-in."""
    cmd = link.script_argv(HASH_SCRIPT, [folder, *paths])
    proc = call(cmd, node=node, step="weights verify (sha256sum)", timeout=timeout, ok=(0, 1))
    out: dict[str, str] = {}
    for line in proc.stdout.decode(errors="surrogateescape").splitlines():
        m = re.match(r"^\\?([0-9a-f]{64}) [ *](.*)$", line)
        if m:
            out[m.group(2)] = m.group(1)
    return out


_STATS = {"files": re.compile(r"Number of regular files transferred: ([\d,.]+)"),
          "literal": re.compile(r"Literal data: ([\d,.]+)"),
          "sent": re.compile(r"Total bytes sent: ([\d,.]+)")}


def _num(text: str, key: str) -> int:
    m = _STATS[key].search(text)
    return int(re.sub(r"[,.]", "", m.group(1))) if m else 0


@dataclass
class _NodeNeed:
    have: RemoteState
    need: list[str]  # manifest paths missing or of the wrong size
    corrupt: list[str]  # with verify: present, right size, wrong sha256 (their blobs already removed)


@dataclass(frozen=True)
class _Job:
    """One weights copy: what the head has, where it goes, and its bounds."""

    want: _Want
    expect: dict[str, str]  # snapshot path -> sha256 to check (with verify: every file)
    folder_local: Path
    cache_dir_remote: str
    folder_remote: str
    repo: str
    commit: str
    verify: bool
    timeout: float | None
    io_timeout: int

    @property
    def total(self) -> int:
        return sum(self.want.manifest.values())

    def state(self, w: Worker, write_refs: Sequence[str] = ()) -> RemoteState:
        return remote_state(w.link, self.cache_dir_remote, self.repo, self.commit, w.name, write_refs)


def _job(cache_dir_local: str | Path, cache_dir_remote: str | Path, repo: str, commit: str, verify: bool,
         timeout: float | None, io_timeout: int) -> _Job:
    local = Path(cache_dir_local)
    want = _wanted(local, repo, commit)
    folder_local = repo_folder(local, repo)
    remote = str(cache_dir_remote)
    expect = dict(want.hashes)
    if verify:  # non-LFS files are named by git sha1; compare them by sha256 with the head's copy
        for snap in want.manifest:
            if snap.startswith("snapshots/") and snap not in want.hashes:
                expect[snap] = hashlib.sha256((folder_local / snap).read_bytes()).hexdigest()
    return _Job(want, expect, folder_local, remote, remote.rstrip("/") + "/models--" + repo.replace("/", "--"),
                repo, commit, verify, timeout, io_timeout)


def sync_weights(cache_dir_local: str | Path, cache_dir_remote: str | Path, repo: str, commit: str,
                 workers: Sequence[Worker], *, verify: bool = False, io_timeout: int = 120,
                 timeout: float | None = None, parallel: int = 8, progress: TextIO | None = sys.stderr) -> Report:
    """Make `repo@commit` in every worker's HF cache match the head's; send only what is missing.

    Each worker's link reaches it from the head (ssh, and rsync's remote shell); its `hop` from the
    previous worker. When two or more workers lack files, the union of what they lack leaves the
    head once as a tar stream chained through them (each extracts what it lacks, see
    distribute_image); a worker the chain did not complete, or a lone one, gets `rsync --partial`.
    Every worker's manifest is checked afterwards. Raises RunError (node, step, command, stderr
    tail) on the first failure.
    """
    t0 = time.monotonic()
    job = _job(cache_dir_local, cache_dir_remote, repo, commit, verify, timeout, io_timeout)

    def inspect_or_error(w: Worker) -> _NodeNeed | RunError:
        try:
            return _inspect(job, w)
        except RunError as exc:  # the others still get their copy; this error is raised at the end
            return exc

    looked = dict(zip(workers, on_threads(inspect_or_error, list(workers), workers=parallel)))
    failed = [r for r in looked.values() if isinstance(r, RunError)]
    needs = {w.name: r for w, r in looked.items() if isinstance(r, _NodeNeed)}
    ready = [w for w in workers if w.name in needs]
    senders = [w for w in ready if needs[w.name].need or needs[w.name].corrupt]
    chained: dict[str, NodeReport] = {}
    strategy = "rsync per worker, in parallel"
    sent = 0
    if len(senders) >= 2:
        chain, chained = _chain_weights(job.folder_local, job.folder_remote, job.want, senders, needs,
                                        progress, timeout)
        sent += chain.sent
        strategy = "chain (tar stream)" + (f", then rsync to {', '.join(chain.problems)}" if chain.problems else "")
    sending = {w.name for w in senders}
    nodes = on_threads(lambda w: _finish(job, w, needs[w.name], w.name in sending, chained.get(w.name)),
                       ready, workers=parallel)
    if failed:
        raise failed[0]
    return Report("weights", strategy, nodes, bytes_sent=sent + sum(n.bytes for n in nodes if n.name not in chained),
                  seconds=time.monotonic() - t0)


def _inspect(job: _Job, w: Worker) -> _NodeNeed:
    """What one worker lacks; with verify, same-size files of wrong bytes too (their blobs removed)."""
    have = job.state(w)
    need = _diff(job.want, have)
    corrupt: list[str] = []
    if job.verify:
        present = [p for p in job.expect if p not in need]
        # nothing present (a fresh worker has no folder to cd into): nothing to hash
        got = _remote_hashes(w.link, job.folder_remote, present, w.name,
                             job.timeout or max(120, job.total / 50e6)) if present else {}
        corrupt = [p for p in present if got.get(p) != job.expect[p]]
        if corrupt:  # same size, wrong bytes: remove the blob so it counts as missing
            blobs = sorted({job.want.blob_of.get(p, p) for p in corrupt})
            call(w.link.script_argv('cd "$1" && shift && rm -f -- "$@"', [job.folder_remote, *blobs]),
                 node=w.name, step="weights remove corrupt blobs")
    return _NodeNeed(have, need, corrupt)


def _finish(job: _Job, w: Worker, node_need: _NodeNeed, sending: bool, report: NodeReport | None) -> NodeReport:
    """One worker after the chain: rsync what the chain did not bring, write refs, prove the result."""
    w0 = time.monotonic()
    refs = _stale_refs(job.want, node_need.have)
    if not sending:
        if not refs:
            return NodeReport(w.name, "up-to-date", seconds=time.monotonic() - w0)
        if _stale_refs(job.want, job.state(w, refs)):
            raise RunError(f"refs on {w.name} still differ after writing them", node=w.name,
                           command="write refs " + " ".join(refs))
        return NodeReport(w.name, "sent", seconds=time.monotonic() - w0, detail="refs " + " ".join(refs))
    command = "tar stream (chain)"
    if report is None:
        report, command = _rsync(job.folder_local, job.folder_remote, job.want.files, w, job.io_timeout,
                                 job.timeout or max(600, 60 + job.total / 10e6))
    # refs after the files, so a ref never names a commit the node does not have yet
    after = job.state(w, refs)
    left = _diff(job.want, after) + [f"refs/{r}" for r in _stale_refs(job.want, after)]
    if left:
        raise RunError(f"weights on {w.name} still differ after the copy: {', '.join(left[:5])}", node=w.name,
                       command=command, tail=report.detail[-2000:])
    if node_need.corrupt:
        again = _remote_hashes(w.link, job.folder_remote, node_need.corrupt, w.name, job.timeout or 600)
        still = [p for p in node_need.corrupt if again.get(p) != job.expect[p]]
        if still:
            raise RunError(f"weights on {w.name} still corrupt after re-send: {', '.join(still[:5])}",
                           node=w.name, command=command)
    report.seconds = time.monotonic() - w0
    return report


def _rsync(folder_local: Path, folder_remote: str, files: Sequence[str], w: Worker, io_timeout: int,
           timeout: float) -> tuple[NodeReport, str]:
    """rsync exactly `files` (size-only, resumable) to one node; what it sent, and the command."""
    rpath = folder_remote[2:] if folder_remote.startswith("~/") else folder_remote
    argv = ["rsync", "-a", "--partial", "--size-only", "--from0", "--files-from=-", "--itemize-changes",
            "--stats", f"--timeout={io_timeout}", "-e", w.link.rsync_shell(),
            f"--rsync-path=mkdir -p {quote_path(folder_remote)} && rsync",
            f"{folder_local}/", w.link.rsync_target(f"{rpath}/")]
    proc = call(argv, node=w.name, step="weights rsync", input="\0".join(files).encode(), timeout=timeout)
    text = proc.stdout.decode(errors="replace")
    # itemized: "<f..." a file sent to the node, "cL..." a link (re)made there
    changed = [ln.split(" ", 1)[1].split(" -> ")[0] for ln in text.splitlines()
               if ln[:2] in ("<f", ">f", "cL") and " " in ln]
    return NodeReport(w.name, "sent", bytes=_num(text, "literal"), files=_num(text, "files"),
                      detail=" ".join(changed)), shlex.join(argv)


def _chain_weights(folder_local: Path, folder_remote: str, want: _Want, chain_workers: list[Worker],
                   needs: Mapping[str, _NodeNeed], progress: TextIO | None,
                   timeout: float | None) -> tuple[Chain, dict[str, NodeReport]]:
    """The union of what the workers lack, as one tar stream chained through them; reports of the
    nodes whose extraction succeeded (the caller still checks their manifests)."""
    senders = [w.name for w in chain_workers]

    def files_for(node: _NodeNeed) -> list[str]:
        out = []
        for p in node.need + node.corrupt:  # the snapshot link, and its blob unless the node has it whole
            blob = want.blob_of.get(p)
            if blob and (p in node.corrupt or node.have.blobs.get(blob) != want.manifest[p]):
                out.append(blob)
            out.append(p)
        return out

    wanted = {w: files_for(needs[w]) for w in senders}
    union = sorted({f for fs in wanted.values() for f in fs})
    sizes = {f: (folder_local / f).lstat().st_size for f in union if not (folder_local / f).is_symlink()}

    def take(w: Worker) -> str:
        # files of the wrong size would be kept by --skip-old-files: remove them first
        node = needs[w.name]
        wrong = sorted({f for f in wanted[w.name] if f in node.have.blobs}
                       | {p for p in node.need if p in node.have.manifest and p not in want.blob_of})
        rm = f"rm -f -- {' '.join(shlex.quote(f) for f in wrong)} && " if wrong else ""
        q = quote_path(folder_remote)
        return f"mkdir -p {q} && cd {q} && {rm}tar -x --skip-old-files --no-same-owner -f -"

    with tempfile.NamedTemporaryFile("wb", prefix="rr-weights-", suffix=".list") as listing:
        listing.write("\0".join(union).encode())
        listing.flush()
        source = ["tar", "-c", "-C", str(folder_local), "--null", "-T", listing.name, "-f", "-"]
        chain = run_chain(source, chain_workers, take, "tar extract", "weights", sum(sizes.values()), progress,
                           timeout, 60.0, max(600.0, sum(sizes.values()) / 50e6))
    done = {}
    for w in senders:
        if w not in chain.problems:
            regular = [f for f in wanted[w] if f in sizes]
            done[w] = NodeReport(w, "sent", bytes=sum(sizes[f] for f in regular), files=len(regular),
                                 detail=" ".join(wanted[w]))
    return chain, done


def weights_current(cache_dir_local: str | Path, cache_dir_remote: str | Path, repo: str, commit: str,
                    link: Link, name: str | None = None) -> bool:
    """The no-op check alone (a doit `uptodate`): one manifest call, True when sizes and refs match."""
    return isinstance(weights_answer(cache_dir_local, cache_dir_remote, repo, commit, link, name), steps.Noop)


def weights_answer(cache_dir_local: str | Path, cache_dir_remote: str | Path, repo: str, commit: str,
                   link: Link, name: str | None = None) -> steps.Answer:
    """The weights step's answer for one worker, from one manifest call (stat only)."""
    want = _wanted(Path(cache_dir_local), repo, commit)
    have = remote_state(link, cache_dir_remote, repo, commit, name)
    return steps.weights_copy(f"{repo}@{commit[:12]}", name or link.label, want.manifest,
                              have.manifest, _stale_refs(want, have))

