"""A loopback HTTP server that serves a wget-style mirror under /conditions/ and can misbehave.

Real sockets and real HTTP, so the crawler's httpx code path runs as it would against a
live site: ETags and 304s, robots.txt, 404/500/503, 429 with Retry-After, slow replies, and
hostile answers written by hand (redirect loops, other hosts, huge or compressed bodies, drips).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable


@dataclass
class SiteState:
    root: Path
    robots: str = "User-agent: *\nAllow: /\n"
    # path → body replacing the mirror file
    overrides: dict[str, bytes] = field(default_factory=dict)
    # path → statuses to answer first, in order
    fail: dict[str, list[int]] = field(default_factory=dict)
    always: dict[str, int] = field(default_factory=dict)  # path → status answered every time
    retry_after: str | None = None  # sent with 429/503
    slow: dict[str, float] = field(default_factory=dict)  # path → seconds to sleep before answering
    robots_status: int = 200  # answer robots.txt with this status (its body only when 200)
    # path → writes its own raw answer
    custom: dict[str, Callable[[Any], None]] = field(default_factory=dict)
    hits: list[tuple[str, int]] = field(default_factory=list)  # (path, status) per request
    user_agents: set[str] = field(default_factory=set)


def make_handler(state: SiteState):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
            state.hits.append((self.path, status))
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            state.user_agents.add(self.headers.get("User-Agent", ""))
            path = self.path.split("?", 1)[0]
            if path in state.slow:
                time.sleep(state.slow[path])
            if path in state.custom:
                state.hits.append((path, 0))
                try:
                    return state.custom[path](self)
                # the crawler gave up on it: that is the point
                except (
                    BrokenPipeError,
                    ConnectionResetError,
                ):
                    return None
            if path == "/robots.txt":
                if state.robots_status != 200:
                    return self._send(state.robots_status, b"no")
                return self._send(200, state.robots.encode(), {"Content-Type": "text/plain"})
            if path in state.always:
                return self._send(state.always[path], b"error")
            queue = state.fail.get(path)
            if queue:
                status = queue.pop(0)
                extra = (
                    {"Retry-After": state.retry_after}
                    if state.retry_after and status in (429, 503)
                    else {}
                )
                return self._send(status, b"try later", extra)
            if not path.startswith("/conditions/"):
                return self._send(404, b"not found")
            body = state.overrides.get(path)
            if body is None:
                file = state.root / path[len("/conditions/") :].strip("/") / "index.html"
                if not file.is_file():
                    return self._send(404, b"not found")
                body = file.read_bytes()
            etag = '"' + hashlib.md5(body).hexdigest() + '"'
            if self.headers.get("If-None-Match") == etag:
                return self._send(304, b"", {"ETag": etag})
            self._send(200, body, {"Content-Type": "text/html; charset=utf-8", "ETag": etag})

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        import sys

        # a crawler hanging up is fine
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class FixtureSite:
    def __init__(self, root: Path):
        self.state = SiteState(root=root)
        self.server = QuietServer(("127.0.0.1", 0), make_handler(self.state))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def index_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/conditions/"

    def __enter__(self) -> "FixtureSite":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests_to(self, path: str) -> list[int]:
        return [status for p, status in self.state.hits if p == path]
