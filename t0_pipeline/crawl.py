"""Crawl: a site's A-to-Z index (live, a local mirror, or a pre-scraped file) → raw pages.

Input: a :class:`~t0_pipeline.config.SourceConfig`. Output: ``<data>/corpus/pages.parquet``
(one row per fetched page: slug, part, url, body, content hash, ETag, fetch time) and
``crawl_report.json`` (new / changed / unchanged / removed / failed pages).

One crawl algorithm runs over two fetchers: :class:`HttpFetcher` (robots.txt, a delay and
concurrency limit, retries with backoff honouring Retry-After, conditional requests) and
:class:`MirrorFetcher` (a wget-style directory: ``<slug>/index.html``,
``<slug>/<sub>/index.html``). The bundled sample corpus is such a mirror.

Run it: ``t0 crawl --source site`` or ``python -m t0_pipeline.crawl --config t0.yaml --data-dir
DIR``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx
import polars as pl
from bs4 import BeautifulSoup
from tqdm.auto import tqdm

from t0_pipeline.artifacts import (
    T0Error,
    read_records,
    sha256_text,
    write_config_sidecar,
    write_json,
    write_parquet,
)
from t0_pipeline.config import DataPaths, SourceConfig
from t0_pipeline.retry import RETRYABLE_STATUS, RetryPolicy, parse_retry_after
from t0_pipeline.sites import ConditionLink, SiteAdapter, get_adapter

log = logging.getLogger(__name__)

PAGE_SCHEMA = {
    "slug": pl.String,
    "title": pl.String,
    "url": pl.String,  # the condition's main page
    "part": pl.Int32,  # position of this page within a multi-page guide
    "page_url": pl.String,
    "format": pl.String,  # html | text (pre-scraped)
    "body": pl.String,
    "content_hash": pl.String,
    "etag": pl.String,
    "last_modified": pl.String,
    "fetched_at": pl.String,
    "source": pl.String,
}


def sample_site_dir() -> Path:
    """The bundled sample corpus, laid out like a wget mirror of the NHS conditions section."""
    return Path(str(resources.files("t0_pipeline") / "sample" / "site"))


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
                    "that as disallow-all "
                    "(RFC 9309): retry later, or set respect_robots=false if you own the site."
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
                        "timed out: the answer took longer than "
                        f"{self.config.deadline_s:g}s in all (deadline_s)"
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
        f"over the {cap}-byte page limit (max_page_bytes), counted after decompression; "
        "page refused"
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


@dataclass
class CrawlReport:
    source: str
    started_at: str
    finished_at: str = ""
    conditions: int = 0
    requests: int = 0
    not_modified: int = 0
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    disallowed: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(
        default_factory=list
    )  # slug, url, error; previous version kept if any
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.conditions} conditions: {len(self.new)} new, {len(self.changed)} changed, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed, {len(self.failed)} "
            "failed"
        )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _previous_by_page(previous: pl.DataFrame | None) -> dict[str, dict[str, Any]]:
    if previous is None or previous.is_empty():
        return {}
    return {row["page_url"]: row for row in previous.to_dicts()}


async def _crawl_condition(
    link: ConditionLink,
    fetcher: Fetcher,
    adapter: SiteAdapter,
    prev: dict[str, dict[str, Any]],
    source: str,
) -> tuple[list[dict[str, Any]], int, list[str]]:
    """Fetch a condition's main page and every sub-page; returns rows, 304 count, warnings."""
    rows: list[dict[str, Any]] = []
    not_modified = 0
    warnings: list[str] = []

    async def get(url: str) -> dict[str, Any]:
        nonlocal not_modified
        old = prev.get(url)
        got = await fetcher.fetch(url, old and old["etag"], old and old["last_modified"])
        if got.warning:
            warnings.append(got.warning)
        if got.text is None:  # 304: the stored copy is current
            not_modified += 1
            return {**old, "fetched_at": _now()}
        return {
            "page_url": url,
            "body": got.text,
            "content_hash": sha256_text(got.text),
            "etag": got.etag,
            "last_modified": got.last_modified,
            "fetched_at": _now(),
        }

    main = await get(link.url)
    urls = adapter.subpage_urls(main["body"], link.url)
    pages = {link.url if link.url.endswith("/") else link.url + "/": main}
    for url in urls:
        if url not in pages and fetcher.allowed(url):
            pages[url] = await get(url)
    for part, url in enumerate(u for u in urls if u in pages):
        rows.append(
            {
                **pages[url],
                "slug": link.slug,
                "title": link.title,
                "url": link.url,
                "part": part,
                "format": "html",
                "source": source,
            }
        )
    return rows, not_modified, warnings


async def crawl_async(
    config: SourceConfig,
    previous: pl.DataFrame | None = None,
    fetcher: Fetcher | None = None,
    journal: CrawlJournal | None = None,
) -> tuple[pl.DataFrame, CrawlReport]:
    """Crawl the configured site or mirror. Failed pages keep their previous version."""
    adapter = get_adapter(config.adapter)
    index_url = adapter.index_url
    owns_fetcher = fetcher is None
    if fetcher is None:
        if config.kind == "site":
            index_url = config.location or adapter.index_url
            fetcher = HttpFetcher(config)
        else:
            root = sample_site_dir() if config.kind == "sample" else Path(config.location or "")
            fetcher = MirrorFetcher(root, index_url, config.max_page_bytes)
    label = "bundled sample mirror" if config.kind == "sample" else config.location or index_url
    report = CrawlReport(source=f"{config.kind}: {label}", started_at=_now())
    try:
        if isinstance(fetcher, HttpFetcher):
            await fetcher.load_robots(index_url)
            if not fetcher.allowed(index_url):
                raise T0Error(
                    f"robots.txt disallows the index page {index_url} for user agent "
                    f"{config.user_agent!r}; nothing was fetched and the previous corpus is kept."
                )
        try:
            if isinstance(fetcher, MirrorFetcher) and not fetcher.path_for(index_url).is_file():
                index_html = fetcher.synthetic_index(index_url)
            else:
                index_html = (await fetcher.fetch(index_url)).text or ""
        except FetchError as exc:
            raise T0Error(
                f"could not fetch the index page {index_url} ({exc}); check the URL or network. "
                "The previous corpus is kept."
            ) from None
        links = adapter.condition_links(index_html, index_url)
        if not links:
            raise T0Error(
                f"the index page {index_url} links to no condition pages that the {adapter.name!r} "
                "adapter recognises; check --location and --adapter."
            )
        report.excluded = [lk.slug for lk in links if lk.slug in set(config.exclude_slugs)]
        links = [lk for lk in links if lk.slug not in set(config.exclude_slugs)]
        report.disallowed = [lk.url for lk in links if not fetcher.allowed(lk.url)]
        links = [lk for lk in links if fetcher.allowed(lk.url)]
        found = len(links)
        if config.max_pages is not None and found > config.max_pages:
            links = links[: config.max_pages]
            report.warnings.append(
                f"the index links to {found} conditions; only the first {config.max_pages} "
                "(source.max_pages) were crawled"
            )

        prev_pages = _previous_by_page(previous)
        prev_rows_by_slug: dict[str, list[dict[str, Any]]] = {}
        if previous is not None:
            for row in previous.to_dicts():
                prev_rows_by_slug.setdefault(row["slug"], []).append(row)

        rows: list[dict[str, Any]] = []
        done = journal.load(report.source) if journal else {}
        if done:
            log.info("resuming an interrupted crawl: %d conditions already fetched", len(done))
            report.warnings.append(
                f"resumed an interrupted crawl: {len(done)} conditions were already fetched"
            )
        todo: asyncio.Queue[ConditionLink] = asyncio.Queue()
        for link in links:
            if link.slug not in done:
                todo.put_nowait(link)
        pending = todo.qsize()
        results: asyncio.Queue[tuple] = asyncio.Queue()

        async def worker() -> (
            None
        ):  # a fixed pool, not one task per link: memory stays flat for any index
            while True:
                try:
                    link = todo.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    result = await _crawl_condition(link, fetcher, adapter, prev_pages, config.kind)
                    if journal:
                        journal.add(link.slug, result)
                    await results.put((link, result, None))
                except FetchError as exc:
                    await results.put((link, None, str(exc)))
                except Exception as exc:  # one odd page must not stall or stop the crawl
                    await results.put((link, None, f"{exc.__class__.__name__}: {str(exc)[:200]}"))

        workers = [asyncio.ensure_future(worker()) for _ in range(max(1, config.concurrency))]
        by_slug = {lk.slug: lk for lk in links}
        finished = [
            (by_slug[slug], result, None) for slug, result in done.items() if slug in by_slug
        ]

        async def outcomes():
            for item in finished:
                yield item
            for _ in range(pending):
                yield await results.get()

        try:
            async for link, result, error in tqdm(
                outcomes(), total=len(links), desc="crawl", unit="condition", leave=False
            ):
                _tally(link, result, error, prev_rows_by_slug.get(link.slug, []), rows, report)
        finally:
            for task in workers:
                task.cancel()
        if isinstance(fetcher, HttpFetcher):
            report.requests = fetcher.requests
    finally:
        if owns_fetcher and isinstance(fetcher, HttpFetcher):
            await fetcher.aclose()

    seen = {lk.slug for lk in links}
    report.removed = sorted(set(prev_rows_by_slug) - seen) if found == len(links) else []
    if not rows:
        raise T0Error(
            "every condition page failed to fetch "
            f"({report.failed[0]['error'] if report.failed else 'none found'}); the previous "
            "corpus is kept."
        )
    report.conditions = len({r["slug"] for r in rows})
    report.finished_at = _now()
    df = pl.DataFrame(rows, schema=PAGE_SCHEMA).sort(["slug", "part"])
    return df, report


def _tally(
    link: ConditionLink,
    result,
    error: str | None,
    old_rows: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    report: CrawlReport,
) -> None:
    """Add one condition's outcome to the pages and the report; a failure keeps the previous
    version."""
    if result is None:
        report.failed.append({"slug": link.slug, "url": link.url, "error": error or "unknown"})
        log.warning(
            "failed %s: %s%s", link.url, error, " (previous version kept)" if old_rows else ""
        )
        rows.extend(old_rows)
        return
    new_rows, n304, warnings = result
    report.not_modified += n304
    report.warnings.extend(warnings)
    rows.extend(new_rows)
    old_hash = "".join(r["content_hash"] for r in sorted(old_rows, key=lambda r: r["part"]))
    new_hash = "".join(r["content_hash"] for r in new_rows)
    (
        report.unchanged if old_hash == new_hash else report.changed if old_rows else report.new
    ).append(link.slug)


class CrawlJournal:
    """Conditions fetched by a crawl still in progress, one JSON line each, appended as they arrive.

    An interrupted crawl of the same source resumes from it instead of fetching those pages again;
    :func:`run_crawl` removes it once pages.parquet is written.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self, source: str) -> dict[str, tuple]:
        done: dict[str, tuple] = {}
        if not self.path.is_file():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"source": source}) + "\n", encoding="utf-8")
            return done
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except ValueError:
            header = {}
        if header.get("source") != source:  # another source's leftovers: start over
            self.path.write_text(json.dumps({"source": source}) + "\n", encoding="utf-8")
            return done
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the line being written when the crawl was killed
            done[entry["slug"]] = (entry["rows"], entry["not_modified"], entry["warnings"])
        return done

    def add(self, slug: str, result: tuple) -> None:
        rows, n304, warnings = result
        with self.path.open("a", encoding="utf-8") as out:
            out.write(
                json.dumps({"slug": slug, "rows": rows, "not_modified": n304, "warnings": warnings})
                + "\n"
            )

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def read_pages_file(config: SourceConfig) -> pl.DataFrame:
    """Pre-scraped pages (JSONL/JSON/Parquet with slug, title, url, text) as raw text pages."""
    if not config.location:
        raise T0Error(
            "source kind 'pages' needs a file: pass --pages FILE (or set source.location)."
        )
    path = Path(config.location)
    f = config.fields
    rows = []
    records = read_records(path)
    if not records:
        raise T0Error(f"{path} holds no records; the previous corpus is kept.")
    for i, rec in enumerate(records, start=1):
        missing = [
            name for name in (f.slug, f.title, f.text) if not str(rec.get(name) or "").strip()
        ]
        if missing:
            raise T0Error(
                f"{path} record {i}: missing or empty field(s) {', '.join(map(repr, missing))}; "
                "fix the record or map the field names with source.fields."
            )
        if not isinstance(rec[f.text], str):
            raise T0Error(
                f"{path} record {i}: field {f.text!r} is {type(rec[f.text]).__name__}, not text; "
                "each document's text must be a string."
            )
        text = rec[f.text]
        url = str(rec.get(f.url) or "")
        rows.append(
            {
                "slug": str(rec[f.slug]),
                "title": str(rec[f.title]),
                "url": url,
                "part": 0,
                "page_url": url,
                "format": "text",
                "body": text,
                "content_hash": sha256_text(text),
                "etag": None,
                "last_modified": None,
                "fetched_at": _now(),
                "source": f"pages:{path.name}",
            }
        )
    df = pl.DataFrame(rows, schema=PAGE_SCHEMA)
    dupes = df.group_by("slug").len().filter(pl.col("len") > 1)["slug"].to_list()
    if dupes:
        raise T0Error(
            f"{path}: duplicate slug(s) {', '.join(sorted(dupes)[:5])} in field {f.slug!r}; each "
            "document needs a unique slug."
        )
    return df.filter(~pl.col("slug").is_in(config.exclude_slugs))


def run_crawl(config: SourceConfig, paths: DataPaths) -> tuple[pl.DataFrame, CrawlReport]:
    """Crawl (or read) the source and write pages.parquet + crawl_report.json atomically."""
    previous = pl.read_parquet(paths.pages) if paths.pages.exists() else None
    if config.kind == "pages":
        started = _now()
        df = read_pages_file(config)
        report = CrawlReport(
            source=f"pages:{config.location}",
            started_at=started,
            finished_at=_now(),
            conditions=df.height,
        )
        old = {} if previous is None else dict(zip(previous["slug"], previous["content_hash"]))
        for slug, digest in zip(df["slug"], df["content_hash"]):
            (
                report.new
                if slug not in old
                else report.unchanged
                if old[slug] == digest
                else report.changed
            ).append(slug)
        report.removed = sorted(set(old) - set(df["slug"]))
    else:
        journal = CrawlJournal(paths.pages.with_name("crawl_journal.jsonl"))
        df, report = asyncio.run(crawl_async(config, previous, journal=journal))
    write_parquet(df, paths.pages)
    write_json(report.__dict__, paths.crawl_report)
    write_config_sidecar(paths.pages, config)
    if config.kind != "pages":
        journal.remove()
    log.info("crawl: %s", report.summary())
    return df, report


def corpus_fingerprint(config: SourceConfig) -> str:
    """A cheap content hash of the source, used as the Dagster source asset's data version.

    Mirrors and page files are hashed from their bytes; a live site from its index page
    (a new or renamed condition changes it; per-page edits are found by the crawl itself).
    """
    import hashlib

    digest = hashlib.sha256()
    if config.kind in ("sample", "mirror"):
        root = sample_site_dir() if config.kind == "sample" else Path(config.location or "")
        if not root.is_dir():
            raise T0Error(
                f"mirror directory {root} does not exist; pass an existing directory with "
                "--location."
            )
        for path in sorted(root.rglob("*.html")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    elif config.kind == "pages":
        if not config.location or not Path(config.location).is_file():
            raise T0Error(
                f"pages file {config.location!r} does not exist; pass an existing .jsonl or "
                ".parquet file."
            )
        digest.update(Path(config.location).read_bytes())
    else:
        url = config.location or get_adapter(config.adapter).index_url
        resp = httpx.get(
            url,
            headers={"User-Agent": config.user_agent},
            timeout=config.timeout_s,
            follow_redirects=True,
        )
        resp.raise_for_status()
        digest.update(resp.content)
    return digest.hexdigest()


if __name__ == "__main__":
    from t0_pipeline.cli import run_stage

    run_stage("crawl")
