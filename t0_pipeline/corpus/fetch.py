"""Fetching pages for the crawl: two fetchers behind one interface (``Fetcher``).

:class:`HttpFetcher` is polite HTTP: robots.txt, a start-to-start delay and a concurrency cap,
retries with backoff honouring Retry-After (:mod:`t0_pipeline.retry`), conditional requests,
same-host redirects only, and bodies read within a byte cap after decompression
(:func:`read_capped`: a gzip bomb stops there). :class:`MirrorFetcher` reads a wget-style
directory (``<slug>/index.html``, ``<slug>/<sub>/index.html``). Both refuse binary bodies and
decode text by its declared or detected charset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx
from bs4 import BeautifulSoup

from t0_pipeline.artifacts import (
    T0Error,
)
from t0_pipeline.config import SourceConfig
from t0_pipeline.retry import RETRYABLE_STATUS, RetryPolicy, parse_retry_after

log = logging.getLogger(__name__)


class FetchError(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Reply:
    """One HTTP answer, body read (within the size cap) before the connection slot is given back."""

    status: int
    headers: httpx.Headers
    content: bytes
    url: str  # after same-host redirects
    charset: str | None = None

    @property
    def text(self) -> str:
        return self.content.decode(self.charset or "utf-8", errors="replace")


TEXT_TYPES = ("text/", "application/xhtml", "application/xml")


def refuse_non_text(raw: bytes, content_type: str | None, where: str) -> None:
    """Raise FetchError for a body that is not text: a non-text Content-Type, or bytes that look
    binary."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind and not kind.startswith(TEXT_TYPES):
        raise FetchError(f"{where}: not text (Content-Type {kind}); page refused")
    head = raw[:8192]
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    if b"\x00" in head or (head and controls / len(head) > 0.05):
        raise FetchError(f"{where}: binary content, not text; page refused")


@dataclass
class Fetched:
    url: str
    text: str | None  # None when the server answered 304 Not Modified
    etag: str | None = None
    last_modified: str | None = None
    warning: str | None = None


class Fetcher(Protocol):
    async def fetch(
        self, url: str, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched: ...

    def allowed(self, url: str) -> bool: ...


def decode_body(raw: bytes, declared: str | None, where: str) -> tuple[str, str | None]:
    """Decode page bytes; bytes that are not valid in the declared charset are replaced and
    reported."""
    encoding = declared or "utf-8"
    try:
        return raw.decode(encoding), None
    except (UnicodeDecodeError, LookupError):
        text = raw.decode("utf-8", errors="replace")
        return text, f"{where}: bytes not valid {encoding}; undecodable bytes replaced with U+FFFD"


class MirrorFetcher:
    """Serve URLs under ``base_url`` from a wget-style mirror directory."""

    def __init__(self, root: Path, base_url: str, max_bytes: int = 5_000_000):
        self.root = Path(root)
        self.base_path = urlsplit(base_url).path
        self.max_bytes = max_bytes
        if not self.root.is_dir():
            raise T0Error(
                f"mirror directory {self.root} does not exist; pass an existing directory with "
                "--location."
            )

    def path_for(self, url: str) -> Path:
        path = urlsplit(url).path
        rel = path[len(self.base_path) :] if path.startswith(self.base_path) else path.lstrip("/")
        return self.root / rel.strip("/") / "index.html"

    def allowed(self, url: str) -> bool:
        return True

    async def fetch(
        self, url: str, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched:
        path = self.path_for(url)
        if not path.is_file():
            raise FetchError(f"no file {path} in the mirror")
        if path.stat().st_size > self.max_bytes:
            raise FetchError(
                f"{path} is {path.stat().st_size} bytes, over the {self.max_bytes}-byte page limit"
            )
        raw = path.read_bytes()
        refuse_non_text(raw, None, str(path))
        text, warning = decode_body(raw, None, str(path))
        return Fetched(url=url, text=text, warning=warning)

    def synthetic_index(self, base_url: str) -> str:
        """An index page built from the mirror's folders, for mirrors saved without the A-Z page."""
        links = []
        for sub in sorted(p for p in self.root.iterdir() if (p / "index.html").is_file()):
            title = BeautifulSoup((sub / "index.html").read_bytes(), "lxml").find("h1")
            name = title.get_text(" ", strip=True) if title else sub.name
            links.append(f'<li><a href="{urljoin(base_url, sub.name + "/")}">{name}</a></li>')
        return f"<html><body><main><ul>{''.join(links)}</ul></main></body></html>"


class HttpFetcher:
    """Polite HTTP: one client, a start-to-start delay, a concurrency cap, bounded retries."""

    def __init__(self, config: SourceConfig, client: httpx.AsyncClient | None = None):
        self.config = config
        self.retry = RetryPolicy(config.max_attempts, config.backoff_s, config.max_backoff_s)
        self.client = client or httpx.AsyncClient(
            headers={
                "User-Agent": config.user_agent,
                "Accept-Encoding": "gzip, deflate",
            },  # what read_capped inflates
            timeout=config.timeout_s,
            follow_redirects=False,  # followed by hand: same host only, robots.txt checked, counted
        )
        self._slots = asyncio.Semaphore(config.concurrency)
        self._pace = asyncio.Lock()
        self._last_start = 0.0
        self.delay_s = config.delay_s
        self.robots: dict[str, RobotFileParser] = {}
        self.requests = 0

    async def aclose(self) -> None:
        await self.client.aclose()

    async def load_robots(self, url: str) -> None:
        if not self.config.respect_robots:
            return
        parts = urlsplit(url)
        robots_url = f"{parts.scheme}://{parts.netloc}/robots.txt"
        parser = RobotFileParser(robots_url)
        try:
            resp = await self._get(robots_url, {})
        except FetchError as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                parser.parse([])  # no robots.txt (RFC 9309 "unavailable"): everything allowed
            else:
                raise T0Error(
                    f"robots.txt at {robots_url} could not be read ({exc}); the crawler treats "
                    "that as disallow-all (RFC 9309): retry later, or set respect_robots=false if "
                    "you own the site."
                ) from None
        else:
            parser.parse(resp.text.splitlines())
        crawl_delay = parser.crawl_delay(self.config.user_agent)
        if crawl_delay:
            self.delay_s = max(self.delay_s, float(crawl_delay))
        self.robots[parts.netloc] = parser

    def allowed(self, url: str) -> bool:
        parser = self.robots.get(urlsplit(url).netloc)
        return parser is None or parser.can_fetch(self.config.user_agent, url)

    async def _wait_turn(self) -> None:
        async with self._pace:
            wait = self._last_start + self.delay_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_start = time.monotonic()

    async def _get(self, url: str, headers: dict[str, str]) -> Reply:
        error, status = "no attempt made", None
        for attempt in range(1, self.config.max_attempts + 1):
            resp: Reply | None = None
            async with self._slots:
                await self._wait_turn()
                try:
                    resp = await self._once(url, headers)
                except httpx.TimeoutException:
                    error = f"timed out after {self.config.timeout_s:g}s without a byte"
                except TimeoutError:
                    error = (
                        f"timed out: the answer took longer than {self.config.deadline_s:g}s in "
                        "all (deadline_s)"
                    )
                except httpx.TransportError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                else:
                    if resp.status < 400 or resp.status == 304:
                        return resp
                    error, status = f"HTTP {resp.status}", resp.status
                    if resp.status not in RETRYABLE_STATUS:
                        raise FetchError(error, status)
            if self.retry.another(attempt):
                wait = self.retry.delay(
                    attempt, parse_retry_after(resp.headers.get("Retry-After")) if resp else None
                )
                log.info(
                    "retrying %s in %.1fs (%s, attempt %d/%d)",
                    url,
                    wait,
                    error,
                    attempt,
                    self.config.max_attempts,
                )
                await asyncio.sleep(wait)
        raise FetchError(f"{error} after {self.config.max_attempts} attempts", status)

    async def _once(self, url: str, headers: dict[str, str]) -> Reply:
        """One GET within the deadline, following same-host redirects, reading at most
        max_page_bytes."""
        cap, origin = self.config.max_page_bytes, urlsplit(url)
        async with asyncio.timeout(self.config.deadline_s):
            current = url
            for _ in range(self.config.max_redirects + 1):
                self.requests += 1
                async with self.client.stream("GET", current, headers=headers) as resp:
                    if resp.has_redirect_location:
                        target = urljoin(current, resp.headers.get("Location", ""))
                        where = urlsplit(target)
                        if (where.scheme, where.netloc) != (origin.scheme, origin.netloc):
                            raise FetchError(
                                f"redirected to another host ({target}); not followed",
                                resp.status_code,
                            )
                        if not self.allowed(target):
                            raise FetchError(
                                f"redirected to {target}, which robots.txt disallows",
                                resp.status_code,
                            )
                        current = target
                        continue
                    body = await read_capped(resp, cap) if resp.status_code < 300 else b""
                    return Reply(
                        resp.status_code, resp.headers, body, current, resp.charset_encoding
                    )
            raise FetchError(
                f"more than {self.config.max_redirects} redirects from {url} (a loop?)"
            )

    async def fetch(
        self, url: str, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched:
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        resp = await self._get(url, headers)
        meta = {
            "etag": resp.headers.get("ETag"),
            "last_modified": resp.headers.get("Last-Modified"),
        }
        if resp.status == 304:
            return Fetched(url=url, text=None, **meta)
        refuse_non_text(resp.content, resp.headers.get("Content-Type"), url)
        text, warning = decode_body(resp.content, resp.charset, url)
        return Fetched(url=url, text=text, warning=warning, **meta)


async def read_capped(resp: httpx.Response, cap: int) -> bytes:
    """The body, decompressed here in bounded steps, or FetchError once it passes ``cap`` bytes.

    httpx would inflate each network chunk whole (a 64 KB gzip chunk can hold 64 MB); inflating with
    a output limit keeps memory within the cap whatever the compression ratio.
    """
    import zlib

    too_big = (
        f"over the {cap}-byte page limit (max_page_bytes), counted after decompression; page "
        "refused"
    )
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
        raise FetchError(f"unsupported Content-Encoding {encoding!r}; page refused")
    declared = resp.headers.get("Content-Length", "")
    if encoding in ("identity", "") and declared.isdigit() and int(declared) > cap:
        raise FetchError(f"{declared} bytes, {too_big}")
    inflate = zlib.decompressobj(32 + zlib.MAX_WBITS) if encoding not in ("identity", "") else None
    body = bytearray()
    async for raw in resp.aiter_raw():
        if inflate is None:
            body += raw
        else:
            data = raw
            while data and len(body) <= cap:
                try:
                    body += inflate.decompress(data, cap + 1 - len(body))
                except zlib.error as exc:
                    raise FetchError(f"corrupt {encoding} body ({exc}); page refused") from None
                data = inflate.unconsumed_tail
        if len(body) > cap:
            raise FetchError(too_big)
    return bytes(body)
