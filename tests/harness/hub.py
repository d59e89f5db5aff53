"""A small local HuggingFace hub for tests: the real `huggingface_hub` client talks to it over loopback.

Why: the weights step must be proven against the client we ship (huggingface_hub 2.4), including its
cache layout, resume behaviour and error classes, without any traffic leaving 127.0.0.1.

It serves the endpoints `snapshot_download`, `hf_hub_download` and `HfApi.repo_info` use:

- `GET /api/models/{repo}[/revision/{rev}]`                 -> JSON with `sha`, `siblings`, ...
- `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=..`  -> list of {type, path, size, oid, lfs}
- `HEAD|GET /{repo}/resolve/{rev}/{path}`                  -> bytes, with `X-Repo-Commit`, `ETag`,
  `Content-Length`, `X-Linked-Size`/`X-Linked-Etag` for LFS files, `Range` -> 206.

Errors are 404 with `X-Error-Code: RepoNotFound|RevisionNotFound|EntryNotFound`; a gated repo answers
401 (no token) or 403 (wrong token) with `X-Error-Code: GatedRepo` unless `Authorization: Bearer
<hub.token>` is sent.

Usage::

    with LocalHub() as hub:
        sha = hub.create_repo("org/model", files={"config.json": b"{}"})
        snapshot_download("org/model", cache_dir=tmp, endpoint=hub.endpoint)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import secrets
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

# Safety net: anything that reads HF_ENDPOINT without being given `endpoint=` must stay on loopback.
# Port 9 (discard) on 127.0.0.1 refuses connections, so a forgotten `endpoint=` fails fast and locally.
if not os.environ.get("HF_ENDPOINT", "").startswith(("http://127.0.0.1", "http://localhost")):
    os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

LFS_THRESHOLD = 1024 * 1024  # files larger than this (or *.safetensors) are served as LFS files
_CHUNK = 64 * 1024


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file: what the Hub uses as ETag for non-LFS files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, data: bytes) -> bool:
    return path.endswith(".safetensors") or len(data) > LFS_THRESHOLD


def fake_safetensors(n_values: int = 1024, seed: int = 0) -> bytes:
    """A valid, small safetensors file of float32 values generated from `seed` (distinct per seed)."""
    import random

    rng = random.Random(seed)
    payload = struct.pack(f"<{n_values}f", *(rng.random() for _ in range(n_values)))
    header = json.dumps(
        {"weight": {"dtype": "F32", "shape": [n_values], "data_offsets": [0, len(payload)]}},
        separators=(",", ":"),
    ).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + payload


@dataclass
class _File:
    data: bytes
    blob_sha1: str
    sha256: str | None  # set for LFS files

    @classmethod
    def of(cls, path: str, data: bytes) -> "_File":
        return cls(
            data=data,
            blob_sha1=git_blob_sha1(data),
            sha256=hashlib.sha256(data).hexdigest() if is_lfs(path, data) else None,
        )

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_sha1


@dataclass
class _Repo:
    gated: bool
    commits: dict[str, dict[str, _File]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)


@dataclass
class _Cut:
    nbytes: int
    then: str  # "resume" | "outage" | "hang"
    event: threading.Event


class LocalHub:
    """An in-memory hub on 127.0.0.1:<random port>, served by a thread. Use as a context manager."""

    def __init__(self) -> None:
        self.token = "hf_test_" + secrets.token_hex(12)
        self.requests: list[tuple[str, str]] = []  # (method, raw path with query), in arrival order
        self.log: list[dict] = []  # one dict per request: method, path, status, range, auth
        self.outage = False  # when True every request gets 503 (set by cut_after(..., then="outage"))
        self._repos: dict[str, _Repo] = {}
        self._cuts: dict[str, _Cut] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._saved_endpoint: str | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> "LocalHub":
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="LocalHub", daemon=True
        )
        self._thread.start()
        self._saved_endpoint = os.environ.get("HF_ENDPOINT")
        os.environ["HF_ENDPOINT"] = self.endpoint  # for subprocesses started by the test
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases handlers held by cut_after(..., then="hang")
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._saved_endpoint is not None:
            os.environ["HF_ENDPOINT"] = self._saved_endpoint

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "hub not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ----------------------------------------------------------------- repos
    def create_repo(self, repo: str, files: Mapping[str, bytes], gated: bool = False) -> str:
        """Create `org/name` with one commit on `main`; return its sha."""
        if repo.count("/") != 1:
            raise ValueError("repo ids are 'org/name'")
        with self._lock:
            if repo in self._repos:
                raise ValueError(f"{repo} exists")
            self._repos[repo] = _Repo(gated=gated)
        return self.commit(repo, files=files)

    def commit(
        self,
        repo: str,
        files: Mapping[str, bytes] | None = None,
        delete: Iterable[str] = (),
        branch: str = "main",
    ) -> str:
        """Publish a new commit on `branch` (files added/replaced, `delete`d paths removed); return its sha.

        Older commits stay resolvable by sha, like on the real Hub."""
        with self._lock:
            r = self._repos[repo]
            parent = r.refs.get(branch)
            tree = dict(r.commits[parent]) if parent else {}
            for path in delete:
                tree.pop(path)
            for path, data in (files or {}).items():
                tree[path] = _File.of(path, bytes(data))
            h = hashlib.sha1(f"{repo}\0{parent}\0{len(r.commits)}".encode())
            for path in sorted(tree):
                h.update(f"{path}\0{tree[path].etag}\0".encode())
            sha = h.hexdigest()
            r.commits[sha] = tree
            r.refs[branch] = sha
            return sha

    def tag(self, repo: str, name: str, sha: str) -> None:
        with self._lock:
            self._repos[repo].refs[name] = sha

    def file_info(self, repo: str, path: str, rev: str = "main") -> dict:
        """Size, etag, sha256 (LFS only) of a file, as the hub publishes them (for assertions)."""
        with self._lock:
            r = self._repos[repo]
            f = r.commits[r.refs.get(rev, rev)][path]
        return {"size": len(f.data), "etag": f.etag, "sha256": f.sha256, "blob_sha1": f.blob_sha1}

    def cut_after(self, path: str, nbytes: int, then: str = "resume") -> threading.Event:
        """The next GET of `path` ('file' or 'org/name/file') sends `nbytes` of body, then:

        - "resume": drops the connection (the next request is served normally);
        - "outage": drops it and answers 503 to every request until `hub.outage = False`;
        - "hang":   keeps the connection open without sending more, until the hub stops
                    (lets a test SIGKILL the client mid-file).

        Returns an Event set once the cut point is reached."""
        if then not in ("resume", "outage", "hang"):
            raise ValueError(then)
        ev = threading.Event()
        with self._lock:
            self._cuts[path] = _Cut(nbytes, then, ev)
        return ev

    def count(self, method: str | None = None, contains: str = "") -> int:
        return sum(1 for m, p in list(self.requests) if (method is None or m == method) and contains in p)

    # ----------------------------------------------------------------- lookups (used by the handler)
    def _lookup(self, repo: str, rev: str | None) -> tuple[_Repo, str, dict[str, _File]] | tuple[int, str]:
        with self._lock:
            r = self._repos.get(repo)
            if r is None:
                return 404, "RepoNotFound"
            rev = rev or "main"
            sha = r.refs.get(rev) or (rev if rev in r.commits else None)
            if sha is None:
                return 404, "RevisionNotFound"
            return r, sha, r.commits[sha]

    def _take_cut(self, repo: str, path: str) -> _Cut | None:
        with self._lock:
            return self._cuts.pop(f"{repo}/{path}", None) or self._cuts.pop(path, None)


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server_version = "LocalHub/1"

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    # ------------------------------------------------------------ plumbing
    def _record(self, status: int) -> None:
        self.hub.log.append(
            {
                "method": self.command,
                "path": self.path,
                "status": status,
                "range": self.headers.get("Range"),
                "auth": self.headers.get("Authorization") is not None,
            }
        )

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        self._record(status)
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str = "") -> None:
        headers = {"X-Error-Code": code, "Content-Type": "application/json"}
        if message:
            headers["X-Error-Message"] = message
        self._send(status, json.dumps({"error": message or code}).encode(), headers)

    def _json(self, obj: object) -> None:
        self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _authorized(self, repo: _Repo) -> bool:
        if not repo.gated:
            return True
        auth = self.headers.get("Authorization", "")
        if not auth:
            self._error(401, "GatedRepo", "Access to model is restricted. You must have access to it and be authenticated.")
            return False
        if auth != f"Bearer {self.hub.token}":
            self._error(403, "GatedRepo", "Access to model is restricted and you are not in the authorized list.")
            return False
        return True

    # ------------------------------------------------------------ dispatch
    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        self.hub.requests.append((self.command, self.path))
        try:
            if self.hub.outage:
                return self._error(503, "ServiceUnavailable", "hub outage (test)")
            url = urlsplit(self.path)
            parts = url.path.split("/")[1:]  # still percent-encoded: revisions are quoted with safe=''
            query = parse_qs(url.query)
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo = f"{unquote(parts[2])}/{unquote(parts[3])}"
                rest = parts[4:]
                if not rest:
                    return self._repo_info(repo, None)
                if rest[0] == "revision" and len(rest) == 2:
                    return self._repo_info(repo, unquote(rest[1]))
                if rest[0] == "tree" and len(rest) >= 2:
                    sub = "/".join(unquote(p) for p in rest[2:])
                    recursive = query.get("recursive", ["false"])[0].lower() == "true"
                    return self._tree(repo, unquote(rest[1]), sub, recursive)
            if len(parts) >= 5 and parts[2] == "resolve":
                repo = f"{unquote(parts[0])}/{unquote(parts[1])}"
                return self._resolve(repo, unquote(parts[3]), unquote("/".join(parts[4:])))
            self._error(404, "NotFound", f"no route for {url.path}")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # ------------------------------------------------------------ endpoints
    def _repo_info(self, repo: str, rev: str | None) -> None:
        found = self.hub._lookup(repo, rev)
        if isinstance(found[0], int):
            return self._error(*found)
        r, sha, tree = found
        if not self._authorized(r):
            return
        siblings = []
        for path, f in sorted(tree.items()):
            s: dict = {"rfilename": path, "size": len(f.data), "blobId": f.blob_sha1}
            if f.sha256:
                s["lfs"] = {"size": len(f.data), "sha256": f.sha256, "pointerSize": 134}
            siblings.append(s)
        self._json(
            {
                "_id": hashlib.md5(repo.encode()).hexdigest()[:24],
                "id": repo,
                "modelId": repo,
                "author": repo.split("/")[0],
                "sha": sha,
                "lastModified": _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z"),
                "private": False,
                "gated": "manual" if r.gated else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            }
        )

    def _tree(self, repo: str, rev: str, sub: str, recursive: bool) -> None:
        found = self.hub._lookup(repo, rev)
        if isinstance(found[0], int):
            return self._error(*found)
        r, sha, tree = found
        if not self._authorized(r):
            return
        prefix = f"{sub.strip('/')}/" if sub.strip("/") else ""
        entries: dict[str, dict] = {}
        for path, f in tree.items():
            if not path.startswith(prefix):
                continue
            rel = path[len(prefix):].split("/")
            # folders on the way to the file
            for depth in range(1, len(rel)):
                if not recursive and depth > 1:
                    break
                d = prefix + "/".join(rel[:depth])
                entries.setdefault(
                    d, {"type": "directory", "path": d, "size": 0, "oid": hashlib.sha1(d.encode()).hexdigest()}
                )
            if not recursive and len(rel) > 1:
                continue
            e: dict = {"type": "file", "path": path, "size": len(f.data), "oid": f.blob_sha1}
            if f.sha256:
                e["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
            entries[path] = e
        if prefix and not entries:
            return self._error(404, "EntryNotFound", f"{sub} does not exist at {rev}")
        self._json([entries[k] for k in sorted(entries)])

    def _resolve(self, repo: str, rev: str, path: str) -> None:
        found = self.hub._lookup(repo, rev)
        if isinstance(found[0], int):
            return self._error(*found)
        r, sha, tree = found
        if not self._authorized(r):
            return
        f = tree.get(path)
        if f is None:
            # X-Repo-Commit lets the client cache the file's absence under .no_exist/<sha>/
            return self._send(
                404,
                b'{"error":"Entry not found"}',
                {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found", "X-Repo-Commit": sha},
            )
        total = len(f.data)
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{f.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if f.sha256:
            headers["X-Linked-Size"] = str(total)
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
        start, end, status = 0, total - 1, 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[len("bytes="):].split(",")[0].partition("-")
            start = int(a) if a else max(total - int(b), 0)
            end = min(int(b), total - 1) if (a and b) else total - 1
            if start >= total:
                headers["Content-Range"] = f"bytes */{total}"
                return self._send(416, b"", headers)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        body = f.data[start : end + 1]
        if self.command == "HEAD":
            self._record(status)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return
        cut = self.hub._take_cut(repo, path)
        self._record(status)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        limit = len(body) if cut is None else min(cut.nbytes, len(body))
        for i in range(0, limit, _CHUNK):
            self.wfile.write(body[i : min(i + _CHUNK, limit)])
        if cut is None:
            return
        self.wfile.flush()
        if cut.then == "outage":
            self.hub.outage = True
        cut.event.set()
        if cut.then == "hang":
            self.hub._stopping.wait()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
