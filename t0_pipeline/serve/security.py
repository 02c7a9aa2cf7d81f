"""Request guards, as ASGI middleware: a body-size limit, a Host check and the security headers.

The per-key rate limit and the failed-authentication limit live in the database (see
:meth:`t0_pipeline.serve.store.Store.take_token`), so that every server process shares them.
"""

from __future__ import annotations

import json

# the chat page loads its own scripts and styles only: no inline script, no other origin, never
# framed
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src "
    "'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# FastAPI's /docs and /redoc pages load Swagger UI / ReDoc from a CDN with an inline bootstrap
# script
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


async def _reply(
    send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """Refuses request bodies over ``max_bytes`` with 413, whether announced (Content-Length) or
    chunked.

    The body is read here, before any route sees it, so a chunked body that grows too large is a 413
    (not a parse error from the framework); the buffered body is then handed on unchanged, and the
    connection's later messages (a client's disconnect) still reach the app.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away before sending it all
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                return await self._refuse(send)
            if not message.get("more_body"):
                break
        body, handed = b"".join(chunks), False

        async def replay():
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send):
        await _reply(
            send, 413, f"request body larger than {self.max_bytes} bytes; send a shorter message"
        )


class HostCheck:
    """Serves only requests whose Host header names this service (a DNS-rebinding page sends its own
    name).

    ``allowed`` empty means any host (a service behind a proxy that checks it); a leading ``*.``
    allows subdomains. The port is ignored.
    """

    def __init__(self, app, allowed: list[str]):
        self.app = app
        self.allowed = [h.lower() for h in allowed]

    def _ok(self, host: str) -> bool:
        if not self.allowed:
            return True
        name = host.lower()
        name = (
            name[1 : name.index("]")]
            if name.startswith("[") and "]" in name
            else name.rsplit(":", 1)[0]
            if name.count(":") == 1
            else name
        )
        return any(name == h or (h.startswith("*.") and name.endswith(h[1:])) for h in self.allowed)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if not self._ok(host):
                return await _reply(
                    send,
                    421,
                    f"this service does not answer to host {host!r}; use its own address, or add "
                    "the name to serve.allowed_hosts",
                )
        return await self.app(scope, receive, send)


class SecurityHeaders:
    """Content-Security-Policy (no inline script), frame denial, nosniff and a referrer policy on
    every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = DOCS_CSP if scope["path"].startswith(DOCS_PATHS) else PAGE_CSP

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", []),
                        (b"content-security-policy", csp.encode()),
                        (b"x-frame-options", b"DENY"),
                        (b"x-content-type-options", b"nosniff"),
                        (b"referrer-policy", b"no-referrer"),
                    ],
                }
            await send(message)

        await self.app(scope, receive, with_headers)
