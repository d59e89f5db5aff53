"""What a commit's weights are on the head and on each worker: sizes, refs and (opt-in) hashes.

The head's truth comes from its tree listing (facts/hub_cache); a worker's from one remote `find -printf`
(stat only, so the no-op path reads no bytes), or with --verify one remote `sha256sum`. The copy itself
is weights_copy.py; this module only asks.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..connect import Link, call, tail
from ..errors import RunError
from ..facts.hub_cache import read_tree_listing, repo_folder, snapshot_state


@dataclass(frozen=True)
class RemoteState:
    manifest: dict[str, int]  # path under the repo folder -> size (snapshot files followed to blobs)
    refs: dict[str, str]  # ref name -> commit
    blobs: dict[str, int] = field(default_factory=dict)  # blobs/<name> -> size, every commit's


# $1 repo folder, $2 commit
MANIFEST_SCRIPT = r"""
cd "$1" 2>/dev/null || { printf 'END\0'; exit 0; }
c=$2
find -L "snapshots/$c" "trees/$c.json" -type f -printf 'F\t%s\t%p\0' 2>/dev/null
[ -d blobs ] && find blobs -maxdepth 1 -type f -printf 'B\t%s\t%p\0' 2>/dev/null
[ -d refs ] && find refs -type f -exec sh -c 'for f; do printf "R\t%s\t%s\0" "${f#refs/}" "$(cat "$f")"; done' x {} + 2>/dev/null
printf 'END\0'
"""


def remote_state(link: Link, cache_dir: str | Path, repo: str, commit: str, name: str | None = None) -> RemoteState:
    """Sizes of every file of `commit` on a node plus its refs, in ONE remote call (stat only)."""
    node = name or link.label
    cache_dir = str(cache_dir)
    folder = str(Path(cache_dir) / ("models--" + repo.replace("/", "--")))
    if cache_dir.startswith("~"):
        folder = cache_dir.rstrip("/") + "/models--" + repo.replace("/", "--")
    cmd = link.script_argv(MANIFEST_SCRIPT, [folder, commit])
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
class Want:
    manifest: dict[str, int]  # what a complete node has
    refs: dict[str, str]  # refs that name this commit on the head
    files: list[str]  # what rsync may send: blobs, snapshot links, tree json, refs
    hashes: dict[str, str]  # snapshot path -> sha256 expected
    blob_of: dict[str, str]  # snapshot path -> blobs/<name>
    sizes: dict[str, int] = field(default_factory=dict)  # regular files a tar carries (not links) -> bytes


def wanted(cache_dir: Path, repo: str, commit: str) -> Want:
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
    sizes: dict[str, int] = {}
    for path, e in sorted(listing.items()):
        snap = f"snapshots/{commit}/{path}"
        manifest[snap] = e.size
        blob = f"blobs/{e.blob_name}"
        if os.path.lexists(folder / blob):
            files.append(blob)
            blob_of[snap] = blob
            sizes[blob] = e.size
        if not (folder / snap).is_symlink():
            sizes[snap] = e.size
        files.append(snap)
        if e.lfs_sha256:
            hashes[snap] = e.lfs_sha256
    tree = f"trees/{commit}.json"
    manifest[tree] = sizes[tree] = (folder / tree).stat().st_size
    files.append(tree)
    refs: dict[str, str] = {}
    refs_dir = folder / "refs"
    if refs_dir.is_dir():
        for p in refs_dir.rglob("*"):
            if p.is_file() and p.read_text().strip() == commit:
                refs[p.relative_to(refs_dir).as_posix()] = commit  # written by content, not rsync
    return Want(manifest, refs, sorted(set(files)), hashes, blob_of, sizes)


def differing(want: Want, have: RemoteState) -> list[str]:
    """Paths whose size differs or that are missing, plus refs not naming the commit."""
    return [p for p, s in want.manifest.items() if have.manifest.get(p) != s]


def stale_refs(want: Want, have: RemoteState) -> list[str]:
    """Refs are 40 bytes whatever they name, so they are compared by content, never by size."""
    return [r for r, c in want.refs.items() if have.refs.get(r) != c]


HASH_SCRIPT = r"""
cd "$1" || exit 3
shift
sha256sum -- "$@"
"""


def remote_hashes(link: Link, folder: str, paths: Sequence[str], node: str,
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
