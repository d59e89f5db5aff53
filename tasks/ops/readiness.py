"""Is the server ready? Three stages, each a fact about the head's endpoint:

1. port: something accepts TCP connections on it;
2. health: `/health` answers 200 (503 is vLLM's dead engine: a failure, not a wait);
3. token: one streamed `/v1/completions` request returns its first token.

`/health` alone is not enough: a server can answer it and never generate (a wedged engine, a rank
that never joined). Only the third stage proves the model serves. HTTP goes through the standard
library's client.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Iterator

STAGES = ("port", "health", "token")
CONNECT_TIMEOUT = 2.0
# What a failed exchange raises: socket errors and timeouts, or a malformed/cut HTTP answer.
_FAILED = (OSError, http.client.HTTPException)


@contextlib.contextmanager
def _exchange(method: str, url: str, *, body: dict | None = None, headers: dict[str, str] | None = None,
              silence: float = CONNECT_TIMEOUT) -> Iterator[http.client.HTTPResponse]:
    """One request with the standard library's client: these are three small requests to our own
    server, and importing `requests` cost a no-op re-run ~50 ms. Always direct (the head is this
    machine or a cluster node, never reached through an environment proxy); CONNECT_TIMEOUT to
    connect, then at most `silence` seconds without a byte."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(urllib.parse.unquote(parts.hostname or ""), parts.port,
                                      timeout=CONNECT_TIMEOUT)
    try:
        conn.connect()
        conn.sock.settimeout(silence)
        data = None if body is None else json.dumps(body).encode()
        sent = dict(headers or {}, **({"Content-Type": "application/json"} if data else {}))
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=data, headers=sent)
        yield conn.getresponse()
    finally:
        conn.close()


class HealthFailed(Exception):
    """`/health` answered with a server error: vLLM says its engine is dead."""

    def __init__(self, status: int) -> None:
        super().__init__(f"/health answered {status}")
        self.status = status


@dataclass
class Progress:
    """Where the wait stands: the stage reached and, per finished stage, seconds since the wait began."""

    started: float
    reached: dict[str, float] = field(default_factory=dict)
    first_token: float | None = None  # seconds from sending the completion to its first token
    model: str = ""

    @property
    def stage(self) -> str:
        """The stage being waited for ("ready" once all three passed)."""
        return next((s for s in STAGES if s not in self.reached), "ready")

    def record(self) -> dict[str, float | None]:
        """What the run record keeps: seconds to each stage, to ready, and the time to first token."""
        return {"ready_seconds": self.reached.get("token"), "first_token_seconds": self.first_token,
                **{f"{stage}_seconds": self.reached.get(stage) for stage in STAGES[:2]}}


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def health(base: str, timeout: float = CONNECT_TIMEOUT) -> int | None:
    """The status `/health` answers, None when nothing answers."""
    try:
        with _exchange("GET", f"{base}/health", silence=timeout) as resp:
            return resp.status
    except _FAILED:
        return None


def bearer(key: str) -> dict[str, str] | None:
    """The header a key-protected server (vLLM's --api-key, the gateway's master key) wants on /v1/."""
    return {"Authorization": f"Bearer {key}"} if key else None


def listed_models(base: str, key: str = "") -> list[str] | None:
    """The model ids `/v1/models` lists (asked with `key` as bearer, proxies ignored, so a key never
    leaves this machine); None when nothing answers or the answer is not a 200 list."""
    try:
        with _exchange("GET", f"{base}/v1/models", headers=bearer(key)) as resp:
            data = json.loads(resp.read()) if resp.status == 200 else None
    except (*_FAILED, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return [m.get("id") for m in (data.get("data") or []) if isinstance(m, dict)]


def served_model(base: str, wanted: str = "", key: str = "") -> str | None:
    """The model to ask: `wanted` when `/v1/models` lists it, else the first listed; None if none is."""
    ids = listed_models(base, key) or []
    if wanted:
        return wanted if wanted in ids else None
    return ids[0] if ids else None


def fetch(base: str, path: str) -> bytes | None:
    """The body a GET of `path` answers with 200 (None when nothing answers or it is not 200)."""
    try:
        with _exchange("GET", f"{base}{path}") as resp:
            return resp.read() if resp.status == 200 else None
    except _FAILED:
        return None


def version(base: str) -> str:
    """The vLLM version the server itself reports at /version ("?" when it does not say)."""
    try:
        data = json.loads(fetch(base, "/version") or b"{}")
    except ValueError:
        return "?"
    return str(data.get("version", "?")) if isinstance(data, dict) else "?"


def first_token(base: str, model: str, wait: float, clock: Callable[[], float] = time.monotonic,
                key: str = "") -> float | None:
    """Seconds until a streamed one-token completion yields its first token; None when none comes
    within `wait` seconds of silence, or the request fails."""
    body = {"model": model, "prompt": "Hello", "max_tokens": 1, "stream": True, "temperature": 0}
    sent = clock()
    try:
        with _exchange("POST", f"{base}/v1/completions", body=body, headers=bearer(key), silence=wait) as resp:
            if resp.status != 200:
                return None
            for line in iter(resp.readline, b""):
                if _is_token(line):
                    return clock() - sent
    except _FAILED:
        return None
    return None


def _is_token(line: bytes) -> bool:
    """A server-sent event carrying a completion choice (`data: {"choices": [...]}`)."""
    if not line.startswith(b"data:"):
        return False
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return False
    try:
        return bool(json.loads(payload).get("choices"))
    except (ValueError, AttributeError):
        return False


def advance(progress: Progress, host: str, port: int, base: str, wanted_model: str, token_wait: float,
            clock: Callable[[], float] = time.monotonic, key: str = "") -> str:
    """Try the next stage(s) once; returns the stage now waited for ("ready" when done).

    Raises HealthFailed when `/health` answers 5xx."""
    if progress.stage == "port" and port_open(host, port):
        progress.reached["port"] = clock() - progress.started
    if progress.stage == "health":
        status = health(base)
        if status is not None and status >= 500:
            raise HealthFailed(status)
        if status == 200:
            progress.reached["health"] = clock() - progress.started
    if progress.stage == "token":
        model = served_model(base, wanted_model, key)
        took = first_token(base, model, token_wait, clock, key) if model else None
        if took is not None:
            progress.model, progress.first_token = model or "", took
            progress.reached["token"] = clock() - progress.started
        elif (status := health(base)) is not None and status >= 500:  # it died while we asked
            raise HealthFailed(status)
    return progress.stage

