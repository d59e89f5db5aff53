"""The three readiness stages against a loopback HTTP server speaking vLLM's OpenAI protocol
(server-sent events for a streamed completion)."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from tasks.ops import readiness


class Endpoint(BaseHTTPRequestHandler):
    mode = "ok"  # "ok" | "silent" (health ok, no token) | "dead" (/health 503)

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/health":
            self.send_response(503 if self.mode == "dead" else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/v1/models":
            body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if self.mode == "silent":
            time.sleep(2)
            return
        chunk = {"id": "cmpl-1", "object": "text_completion", "model": "m", "choices": [{"index": 0, "text": " Hi"}]}
        self.wfile.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture
def server() -> Iterator[tuple[type[Endpoint], int]]:
    handler = type("Handler", (Endpoint,), {"mode": "ok"})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield handler, httpd.server_address[1]
    httpd.shutdown()


def test_ready_after_port_health_and_a_streamed_token(server: tuple[type[Endpoint], int]) -> None:
    _, port = server
    progress = readiness.Progress(time.monotonic())
    assert readiness.advance(progress, "127.0.0.1", port, f"http://127.0.0.1:{port}", "m", 2) == "ready"
    record = progress.record()
    assert 0 <= record["port_seconds"] <= record["health_seconds"] <= record["ready_seconds"]
    assert record["first_token_seconds"] is not None and progress.model == "m"


def test_health_without_a_token_is_not_ready(server: tuple[type[Endpoint], int]) -> None:
    handler, port = server
    handler.mode = "silent"
    progress = readiness.Progress(time.monotonic())
    assert readiness.advance(progress, "127.0.0.1", port, f"http://127.0.0.1:{port}", "", 0.5) == "token"
    assert progress.record()["ready_seconds"] is None


def test_health_503_fails_and_a_closed_port_waits(server: tuple[type[Endpoint], int]) -> None:
    handler, port = server
    handler.mode = "dead"
    with pytest.raises(readiness.HealthFailed):
        readiness.advance(readiness.Progress(time.monotonic()), "127.0.0.1", port, f"http://127.0.0.1:{port}", "m", 1)
    closed = readiness.Progress(time.monotonic())
    assert readiness.advance(closed, "127.0.0.1", 9, "http://127.0.0.1:9", "m", 1) == "port"
    assert readiness.served_model(f"http://127.0.0.1:{port}", "other") is None
