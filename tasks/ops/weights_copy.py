"""Weights to cluster workers: only what a node lacks, by Commands the executor runs, proven afterwards.

What each node has is weights_state.py's (one `find -printf` per worker, stat only). Here the answer
per worker and the commands it names, which `run-recipe plan` prints and the executor then runs:

- One worker lacks files: `rsync -a --partial --size-only` of the commit's files (names on stdin).
  Several: the union of what they lack leaves the head once, a tar stream chained through them
  (copy_chain.py; each extracts with --skip-old-files after removing its wrong-size files). A worker
  the chain did not complete gets rsync from the head afterwards (a fallback no plan can foresee).
- Refs are written by content after the files, so a ref never names a commit a node lacks.
- A worker counts as done only when its manifest (and with --verify, its hashes) equals the head's.
  `verify=True` adds one remote `sha256sum` per worker to catch same-size corruption.
"""
from __future__ import annotations

import hashlib
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence, TextIO

from . import answers as steps, execute
from .commands import Command, Input
from .copy_chain import NodeReport, Report, chain_command, run_chain
from ..connect.chain import Worker
from ..connect import Link, quote_path
from ..errors import RunError
from ..fanout import each
from ..facts.hub_cache import repo_folder
from .weights_state import RemoteState, Want, differing, remote_hashes, remote_state, stale_refs, wanted

_CD = 'd=$1; case $d in "~/"*) d=$HOME/${d#"~/"} ;; esac; cd "$d" || exit 3; shift\n'
REFS_SCRIPT = "# runrecipe weights refs: point refs at the commit\n" + _CD + r"""c=$1; shift
for r; do
  mkdir -p "refs/$(dirname "$r")" && printf %s "$c" > "refs/$r.rr-tmp" && mv -f "refs/$r.rr-tmp" "refs/$r" || exit 4
done
"""
REMOVE_SCRIPT = "# runrecipe weights: remove corrupt blobs\n" + _CD + 'rm -f -- "$@"\n'

_STATS = {"files": re.compile(r"Number of regular files transferred: ([\d,.]+)"),
          "literal": re.compile(r"Literal data: ([\d,.]+)")}


def _num(text: str, key: str) -> int:
    m = _STATS[key].search(text)
    return int(re.sub(r"[,.]", "", m.group(1))) if m else 0


@dataclass
class _NodeNeed:
    have: RemoteState
    need: list[str]  # manifest paths missing or of the wrong size
    corrupt: list[str]  # with verify: present, right size, wrong sha256 (their blobs already removed)


@dataclass(frozen=True)
class Job:
    """One weights copy: what the head has, where it goes, and its bounds."""

    want: Want
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

    @property
    def key(self) -> str:
        return f"{self.repo}@{self.commit[:12]}"

    def state(self, w: Worker) -> RemoteState:
        return remote_state(w.link, self.cache_dir_remote, self.repo, self.commit, w.name)

    def need(self, w: Worker, have: RemoteState | None = None) -> _NodeNeed:
        have = have or self.state(w)
        return _NodeNeed(have, differing(self.want, have), [])


def _job(cache_dir_local: str | Path, cache_dir_remote: str | Path, repo: str, commit: str, verify: bool = False,
         timeout: float | None = None, io_timeout: int = 120) -> Job:
    local = Path(cache_dir_local)
    want = wanted(local, repo, commit)
    folder_local = repo_folder(local, repo)
    remote = str(cache_dir_remote)
    expect = dict(want.hashes)
    if verify:  # non-LFS files are named by git sha1; compare them by sha256 with the head's copy
        for snap in want.manifest:
            if snap.startswith("snapshots/") and snap not in want.hashes:
                expect[snap] = hashlib.sha256((folder_local / snap).read_bytes()).hexdigest()
    return Job(want, expect, folder_local, remote, remote.rstrip("/") + "/models--" + repo.replace("/", "--"),
                repo, commit, verify, timeout, io_timeout)


# ----------------------------------------------------------------------------- the commands
def rsync_command(job: Job, w: Worker) -> Command:
    """Exactly the commit's files (size-only, resumable) from the head to one worker; names on stdin."""
    rpath = job.folder_remote[2:] if job.folder_remote.startswith("~/") else job.folder_remote
    files = job.want.files
    argv = ("rsync", "-a", "--partial", "--size-only", "--from0", "--files-from=-", "--itemize-changes", "--stats",
            f"--timeout={job.io_timeout}", f"--rsync-path=mkdir -p {quote_path(job.folder_remote)} && rsync",
            f"{job.folder_local}/", f"{w.name}:{rpath}/")
    return Command(argv, w.name, Input(f"the names of {len(files)} files of {job.key}",
                                       lambda: "\0".join(files).encode()),
                   timeout=job.timeout or max(600, 60 + job.total / 10e6), sends=True)


def refs_command(job: Job, w: Worker, refs: Sequence[str]) -> Command:
    return Command(("sh", "-c", REFS_SCRIPT, "rr", job.folder_remote, job.commit, *refs), w.name)


def _chained(job: Job, needs: dict[str, _NodeNeed]) -> dict[str, list[str]]:
    """Per worker, what the tar stream must bring it: each lacking snapshot link, and its blob unless
    the worker already has that blob whole."""
    out = {}
    for name, node in needs.items():
        files = []
        for p in node.need + node.corrupt:
            blob = job.want.blob_of.get(p)
            if blob and (p in node.corrupt or node.have.blobs.get(blob) != job.want.manifest[p]):
                files.append(blob)
            files.append(p)
        out[name] = files
    return out


def tar_command(job: Job, senders: Sequence[Worker], needs: dict[str, _NodeNeed]) -> Command:
    """The union of what `senders` lack, one tar stream chained through them."""
    wanted_by = _chained(job, {w.name: needs[w.name] for w in senders})
    union = sorted({f for fs in wanted_by.values() for f in fs})
    size = sum(job.want.sizes.get(f, 0) for f in union)

    def take(w: Worker) -> str:
        # files of the wrong size would be kept by --skip-old-files: remove them first
        node = needs[w.name]
        wrong = sorted({f for f in wanted_by[w.name] if f in node.have.blobs}
                       | {p for p in node.need if p in node.have.manifest and p not in job.want.blob_of})
        rm = f"rm -f -- {' '.join(shlex.quote(f) for f in wrong)} && " if wrong else ""
        q = quote_path(job.folder_remote)
        return f"mkdir -p {q} && cd {q} && {rm}tar -x --skip-old-files --no-same-owner -f -"

    return chain_command(("tar", "-c", "-C", str(job.folder_local), "--null", "-T", "-", "-f", "-"), senders, take,
                         "weights", size=size, feed=lambda: "\0".join(union).encode(), timeout=job.timeout,
                         take_timeout=max(600.0, size / 50e6))


def planned(job: Job, targets: Sequence[Worker], needs: dict[str, _NodeNeed]) -> list[Command]:
    """The commands a copy to `targets` runs when nothing fails: the files (rsync to a lone worker, a tar
    chain through several), then each worker's refs."""
    senders = [w for w in targets if needs[w.name].need or needs[w.name].corrupt]
    files = [tar_command(job, senders, needs)] if len(senders) >= 2 else [rsync_command(job, w) for w in senders]
    refs = [(w, stale_refs(job.want, needs[w.name].have)) for w in targets]
    return files + [refs_command(job, w, r) for w, r in refs if r]


# ----------------------------------------------------------------------------- the answer (plan, up-to-date)
def weights_current(cache_dir_local: str | Path, cache_dir_remote: str | Path, repo: str, commit: str,
                    link: Link, name: str | None = None) -> bool:
    """The no-op check alone: one manifest call, True when sizes and refs match."""
    job = _job(cache_dir_local, cache_dir_remote, repo, commit)
    have = remote_state(link, job.cache_dir_remote, repo, commit, name)
    return not differing(job.want, have) and not stale_refs(job.want, have)


def weights_answer(cache_dir_local: str | Path, cache_dir_remote: str | Path, repo: str, commit: str,
                   chain: Sequence[Worker], node: str, verify: bool = False) -> steps.Answer:
    """The weights step's answer for `node`, one of `chain` (the copy workers in order): Noop from one
    manifest call (stat only); else it asks the other workers too, for the commands its copy runs."""
    job = _job(cache_dir_local, cache_dir_remote, repo, commit)
    at = [w.name for w in chain].index(node)
    have = job.state(chain[at])
    if (not differing(job.want, have) and not stale_refs(job.want, have)) or verify:
        return answer(job, chain[at:at + 1], node, {node: have})
    others = [w for w in chain if w.name != node]
    return answer(job, chain, node, {node: have, **dict(zip([w.name for w in others], each(job.state, others)))})


def answer(job: Job, chain: Sequence[Worker], node: str, haves: Mapping[str, RemoteState]) -> steps.Answer:
    """From what each worker of `chain` has (`haves`, by name): Noop for `node`, or the commands that copy
    to it and the workers after it, or none when an earlier worker's copy carries it (planned)."""
    needs = {w.name: job.need(w, haves[w.name]) for w in chain}
    stale = [w for w in chain if needs[w.name].need or stale_refs(job.want, needs[w.name].have)]
    have, refs = haves[node], stale_refs(job.want, haves[node])
    if stale and stale[0].name != node and node in [w.name for w in stale]:
        return steps.weights_copy(job.key, node, job.want.manifest, have.manifest, refs, carried_by=stale[0].name)
    targets = chain[[w.name for w in chain].index(node):]
    return steps.weights_copy(job.key, node, job.want.manifest, have.manifest, refs,
                              commands=planned(job, targets, needs))


# ----------------------------------------------------------------------------- the copy
def sync_weights(cache_dir_local: str | Path, cache_dir_remote: str | Path, repo: str, commit: str,
                 workers: Sequence[Worker], *, verify: bool = False, io_timeout: int = 120,
                 timeout: float | None = None, parallel: int = 8, progress: TextIO | None = sys.stderr) -> Report:
    """Make `repo@commit` in every worker's HF cache match the head's; send only what is missing.

    Runs the commands `planned` names (a worker the chain did not complete gets rsync afterwards) and
    checks every worker's manifest afterwards. Raises RunError (node, step, command, stderr tail) on the
    first failure; the other workers still get their copy first.
    """
    t0 = time.monotonic()
    job = _job(cache_dir_local, cache_dir_remote, repo, commit, verify, timeout, io_timeout)

    def inspect_or_error(w: Worker) -> _NodeNeed | RunError:
        try:
            return _inspect(job, w)
        except RunError as exc:  # the others still get their copy; this error is raised at the end
            return exc

    looked = dict(zip([w.name for w in workers], each(inspect_or_error, list(workers), workers=parallel)))
    failed = [r for r in looked.values() if isinstance(r, RunError)]
    needs = {name: r for name, r in looked.items() if isinstance(r, _NodeNeed)}
    ready = [w for w in workers if w.name in needs]
    senders = [w for w in ready if needs[w.name].need or needs[w.name].corrupt]
    chained: dict[str, NodeReport] = {}
    strategy, sent = "rsync per worker, in parallel", 0
    if len(senders) >= 2:
        chain = run_chain(tar_command(job, senders, needs), senders, "tar extract", progress)
        sent += chain.sent
        chained = _chain_reports(job, senders, needs, chain.problems)
        strategy = "chain (tar stream)" + (f", then rsync to {', '.join(chain.problems)}" if chain.problems else "")
    sending = {w.name for w in senders}
    nodes = each(lambda w: _finish(job, w, needs[w.name], w.name in sending, chained.get(w.name)),
                       ready, workers=parallel)
    if failed:
        raise failed[0]
    return Report("weights", strategy, nodes, bytes_sent=sent + sum(n.bytes for n in nodes if n.name not in chained),
                  seconds=time.monotonic() - t0)


def _chain_reports(job: Job, senders: Sequence[Worker], needs: dict[str, _NodeNeed],
                   problems: dict[str, tuple[str, str]]) -> dict[str, NodeReport]:
    """Reports of the workers whose extraction succeeded (their manifests are still checked after)."""
    done = {}
    for name, files in _chained(job, {w.name: needs[w.name] for w in senders}).items():
        if name not in problems:
            regular = [f for f in files if f in job.want.sizes]
            done[name] = NodeReport(name, "sent", bytes=sum(job.want.sizes[f] for f in regular),
                                    files=len(regular), detail=" ".join(files))
    return done


def _inspect(job: Job, w: Worker) -> _NodeNeed:
    """What one worker lacks; with verify, same-size files of wrong bytes too (their blobs removed)."""
    node = job.need(w)
    if job.verify:
        present = [p for p in job.expect if p not in node.need]
        # nothing present (a fresh worker has no folder to cd into): nothing to hash
        got = remote_hashes(w.link, job.folder_remote, present, w.name,
                            job.timeout or max(120, job.total / 50e6)) if present else {}
        node.corrupt = [p for p in present if got.get(p) != job.expect[p]]
        if node.corrupt:  # same size, wrong bytes: remove the blob so it counts as missing
            blobs = sorted({job.want.blob_of.get(p, p) for p in node.corrupt})
            execute.run(w.first, Command(("sh", "-c", REMOVE_SCRIPT, "rr", job.folder_remote, *blobs), w.name))
    return node


def _finish(job: Job, w: Worker, node: _NodeNeed, sending: bool, report: NodeReport | None) -> NodeReport:
    """One worker after the chain: rsync what the chain did not bring, write refs, prove the result."""
    w0 = time.monotonic()
    refs = stale_refs(job.want, node.have)
    if not sending and not refs:
        return NodeReport(w.name, "up-to-date", seconds=time.monotonic() - w0)
    command = "tar stream (chain)"
    if sending and report is None:
        report, command = _rsync(job, w)
    if refs:  # after the files, so a ref never names a commit the node does not have yet
        execute.run(w.first, refs_command(job, w, refs))
    after = job.state(w)
    left = differing(job.want, after) + [f"refs/{r}" for r in stale_refs(job.want, after)]
    if left:
        raise RunError(f"weights on {w.name} still differ after the copy: {', '.join(left[:5])}", node=w.name,
                       command=command, tail=report.detail[-2000:] if report else "")
    if node.corrupt:
        again = remote_hashes(w.link, job.folder_remote, node.corrupt, w.name, job.timeout or 600)
        still = [p for p in node.corrupt if again.get(p) != job.expect[p]]
        if still:
            raise RunError(f"weights on {w.name} still corrupt after re-send: {', '.join(still[:5])}",
                           node=w.name, command=command)
    report = report or NodeReport(w.name, "sent", detail="refs " + " ".join(refs))
    report.seconds = time.monotonic() - w0
    return report


def _rsync(job: Job, w: Worker) -> tuple[NodeReport, str]:
    """rsync the commit's files to one worker; what it sent (from rsync's itemized list), and the command."""
    command = rsync_command(job, w)
    text = execute.run(w.first, command).stdout
    # itemized: "<f..." a file sent to the node, "cL..." a link (re)made there
    changed = [ln.split(" ", 1)[1].split(" -> ")[0] for ln in text.splitlines()
               if ln[:2] in ("<f", ">f", "cL") and " " in ln]
    return NodeReport(w.name, "sent", bytes=_num(text, "literal"), files=_num(text, "files"),
                      detail=" ".join(changed)), command.shown()
