"""A loopback stand-in for GitHub's patch-diff server: serves /pull/<N>.diff from a dict, counts requests.

--apply-vllm-pr fetches `<RUNRECIPE_VLLM_PR_BASE>/<N>.diff`; tests set that base to `server.base`, so
the product's real HTTP client talks to a real server and nothing leaves the machine (cluster tests
bind it to the host's bridge address, 198.18.0.1, which the netns nodes reach).
"""
from __future__ import annotations

import http.server
import threading


class PatchServer:
    def __init__(self, diffs: dict[int, str], host: str = "127.0.0.1") -> None:
        self.hits = 0
        self.headers: list[dict[str, str]] = []  # of every request, to check what a client sends
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.hits += 1
                outer.headers.append(dict(self.headers))
                number = self.path.removeprefix("/pull/").removesuffix(".diff")
                body = diffs.get(int(number), "").encode() if number.isdigit() else b""
                self.send_response(200 if body else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.base = f"http://{host}:{self.httpd.server_address[1]}/pull"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
