"""Crawl: a site's A-to-Z index (live, a local mirror, or a pre-scraped file) → raw pages.

Input: a :class:`~t0_pipeline.config.SourceConfig`. Output: ``<data>/corpus/pages.parquet``
(one row per fetched page: slug, part, url, body, content hash, ETag, fetch time) and
``crawl_report.json`` (new / changed / unchanged / removed / failed pages).

One crawl algorithm runs over two fetchers: :class:`HttpFetcher` (robots.txt, a delay and
concurrency limit, retries with backoff honouring Retry-After, conditional requests) and
:class:`MirrorFetcher` (a wget-style directory: ``<slug>/index.html``,
``<slug>/<sub>/index.html``). The bundled sample corpus is such a mirror.

Run it: ``t0 crawl --source site`` or ``python -m t0_pipeline.crawl --config t0.yaml --data-dir DIR``.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
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

from t0_pipeline.artifacts import T0Error, read_records, sha256_text, write_config_sidecar, write_json, write_parquet
from t0_pipeline.config import DataPaths, SourceConfig
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

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


def sample_site_dir() -> Path:
    """The bundled sample corpus, laid out like a wget mirror of the NHS conditions section."""
    return Path(str(resources.files("t0_pipeline") / "sample" / "site"))


class FetchError(Exception):
    pass


@dataclass
class Fetched:
    url: str
    text: str | None  # None when the server answered 304 Not Modified
    etag: str | None = None
    last_modified: str | None = None
    warning: str | None = None


class Fetcher(Protocol):
    async def fetch(self, url: str, etag: str | None = None, last_modified: str | None = None) -> Fetched: ...

    def allowed(self, url: str) -> bool: ...


def decode_body(raw: bytes, declared: str | None, where: str) -> tuple[str, str | None]:
    """Decode page bytes; bytes that are not valid in the declared charset are replaced and reported."""
    encoding = declared or "utf-8"
    try:
        return raw.decode(encoding), None
    except (UnicodeDecodeError, LookupError):
        text = raw.decode("utf-8", errors="replace")
        return text, f"{where}: bytes not valid {encoding}; undecodable bytes replaced with U+FFFD"


class MirrorFetcher:
    """Serve URLs under ``base_url`` from a wget-style mirror directory."""

    def __init__(self, root: Path, base_url: str):
        self.root = Path(root)
        self.base_path = urlsplit(base_url).path
        if not self.root.is_dir():
            raise T0Error(f"mirror directory {self.root} does not exist; pass an existing directory with --location.")

    def path_for(self, url: str) -> Path:
        path = urlsplit(url).path
        rel = path[len(self.base_path):] if path.startswith(self.base_path) else path.lstrip("/")
        return self.root / rel.strip("/") / "index.html"

    def allowed(self, url: str) -> bool:
        return True

    async def fetch(self, url: str, etag: str | None = None, last_modified: str | None = None) -> Fetched:
        path = self.path_for(url)
        if not path.is_file():
            raise FetchError(f"no file {path} in the mirror")
        text, warning = decode_body(path.read_bytes(), None, str(path))
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
        self.client = client or httpx.AsyncClient(
            headers={"User-Agent": config.user_agent},
            timeout=config.timeout_s,
            follow_redirects=True,
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
            if "HTTP 4" in str(exc):
                parser.parse([])  # no robots.txt: everything allowed
            else:
                raise T0Error(
                    f"robots.txt at {robots_url} could not be read ({exc}); the crawler treats that as disallow-all "
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

    def _retry_wait(self, attempt: int, resp: httpx.Response | None) -> float:
        wait = self.config.backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random())
        header = resp.headers.get("Retry-After") if resp is not None else None
        if header:
            wait = max(wait, parse_retry_after(header))
        return min(wait, self.config.max_backoff_s)

    async def _get(self, url: str, headers: dict[str, str]) -> httpx.Response:
        error = "no attempt made"
        for attempt in range(1, self.config.max_attempts + 1):
            resp: httpx.Response | None = None
            async with self._slots:
                await self._wait_turn()
                self.requests += 1
                try:
                    resp = await self.client.get(url, headers=headers)
                except httpx.TimeoutException:
                    error = f"timed out after {self.config.timeout_s:g}s"
                except httpx.TransportError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                else:
                    if resp.status_code < 400 or resp.status_code == 304:
                        return resp
                    error = f"HTTP {resp.status_code}"
                    if resp.status_code not in RETRY_STATUS:
                        raise FetchError(error)
            if attempt < self.config.max_attempts:
                wait = self._retry_wait(attempt, resp)
                log.info("retrying %s in %.1fs (%s, attempt %d/%d)", url, wait, error, attempt, self.config.max_attempts)
                await asyncio.sleep(wait)
        raise FetchError(f"{error} after {self.config.max_attempts} attempts")

    async def fetch(self, url: str, etag: str | None = None, last_modified: str | None = None) -> Fetched:
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        resp = await self._get(url, headers)
        meta = {"etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified")}
        if resp.status_code == 304:
            return Fetched(url=url, text=None, **meta)
        text, warning = decode_body(resp.content, resp.charset_encoding, url)
        return Fetched(url=url, text=text, warning=warning, **meta)


def parse_retry_after(value: str) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


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
    failed: list[dict[str, str]] = field(default_factory=list)  # slug, url, error; previous version kept if any
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.conditions} conditions: {len(self.new)} new, {len(self.changed)} changed, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed, {len(self.failed)} failed"
        )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _previous_by_page(previous: pl.DataFrame | None) -> dict[str, dict[str, Any]]:
    if previous is None or previous.is_empty():
        return {}
    return {row["page_url"]: row for row in previous.to_dicts()}


async def _crawl_condition(
    link: ConditionLink, fetcher: Fetcher, adapter: SiteAdapter, prev: dict[str, dict[str, Any]], source: str
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
        rows.append({**pages[url], "slug": link.slug, "title": link.title, "url": link.url, "part": part,
                     "format": "html", "source": source})
    return rows, not_modified, warnings


async def crawl_async(
    config: SourceConfig, previous: pl.DataFrame | None = None, fetcher: Fetcher | None = None
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
            fetcher = MirrorFetcher(root, index_url)
    label = "bundled sample mirror" if config.kind == "sample" else config.location or index_url
    report = CrawlReport(source=f"{config.kind}: {label}", started_at=_now())
    try:
        if isinstance(fetcher, HttpFetcher):
            await fetcher.load_robots(index_url)
        try:
            if isinstance(fetcher, MirrorFetcher) and not fetcher.path_for(index_url).is_file():
                index_html = fetcher.synthetic_index(index_url)
            else:
                index_html = (await fetcher.fetch(index_url)).text or ""
        except FetchError as exc:
            raise T0Error(f"could not fetch the index page {index_url} ({exc}); check the URL or network. The previous corpus is kept.") from None
        links = adapter.condition_links(index_html, index_url)
        if not links:
            raise T0Error(f"the index page {index_url} links to no condition pages that the {adapter.name!r} adapter recognises; check --location and --adapter.")
        report.excluded = [lk.slug for lk in links if lk.slug in set(config.exclude_slugs)]
        links = [lk for lk in links if lk.slug not in set(config.exclude_slugs)]
        report.disallowed = [lk.url for lk in links if not fetcher.allowed(lk.url)]
        links = [lk for lk in links if fetcher.allowed(lk.url)]
        if config.max_pages is not None:
            links = links[: config.max_pages]

        prev_pages = _previous_by_page(previous)
        prev_rows_by_slug: dict[str, list[dict[str, Any]]] = {}
        if previous is not None:
            for row in previous.to_dicts():
                prev_rows_by_slug.setdefault(row["slug"], []).append(row)

        rows: list[dict[str, Any]] = []

        async def one(link: ConditionLink):
            try:
                return link, await _crawl_condition(link, fetcher, adapter, prev_pages, config.kind), None
            except FetchError as exc:
                return link, None, str(exc)

        tasks = [asyncio.ensure_future(one(link)) for link in links]
        for fut in tqdm(asyncio.as_completed(tasks), total=len(tasks), desc="crawl", unit="condition", leave=False):
            link, result, error = await fut
            old_rows = prev_rows_by_slug.get(link.slug, [])
            if result is None:
                report.failed.append({"slug": link.slug, "url": link.url, "error": error or "unknown"})
                log.warning("failed %s: %s%s", link.url, error, " (previous version kept)" if old_rows else "")
                rows.extend(old_rows)
                continue
            new_rows, n304, warnings = result
            report.not_modified += n304
            report.warnings.extend(warnings)
            rows.extend(new_rows)
            old_hash = "".join(r["content_hash"] for r in sorted(old_rows, key=lambda r: r["part"]))
            new_hash = "".join(r["content_hash"] for r in new_rows)
            (report.unchanged if old_hash == new_hash else report.changed if old_rows else report.new).append(link.slug)
        if isinstance(fetcher, HttpFetcher):
            report.requests = fetcher.requests
    finally:
        if owns_fetcher and isinstance(fetcher, HttpFetcher):
            await fetcher.aclose()

    seen = {lk.slug for lk in links}
    report.removed = sorted(set(prev_rows_by_slug) - seen) if config.max_pages is None else []
    if not rows:
        raise T0Error(f"every condition page failed to fetch ({report.failed[0]['error'] if report.failed else 'none found'}); the previous corpus is kept.")
    report.conditions = len({r["slug"] for r in rows})
    report.finished_at = _now()
    df = pl.DataFrame(rows, schema=PAGE_SCHEMA).sort(["slug", "part"])
    return df, report


def read_pages_file(config: SourceConfig) -> pl.DataFrame:
    """Pre-scraped pages (JSONL/JSON/Parquet with slug, title, url, text) as raw text pages."""
    if not config.location:
        raise T0Error("source kind 'pages' needs a file: pass --pages FILE (or set source.location).")
    path = Path(config.location)
    f = config.fields
    rows = []
    for i, rec in enumerate(read_records(path), start=1):
        missing = [name for name in (f.slug, f.title, f.text) if not rec.get(name)]
        if missing:
            raise T0Error(f"{path} record {i}: missing or empty field(s) {', '.join(map(repr, missing))}; "
                          "fix the record or map the field names with source.fields.")
        text = str(rec[f.text])
        url = str(rec.get(f.url) or "")
        rows.append({"slug": str(rec[f.slug]), "title": str(rec[f.title]), "url": url, "part": 0, "page_url": url,
                     "format": "text", "body": text, "content_hash": sha256_text(text), "etag": None,
                     "last_modified": None, "fetched_at": _now(), "source": f"pages:{path.name}"})
    df = pl.DataFrame(rows, schema=PAGE_SCHEMA)
    dupes = df.group_by("slug").len().filter(pl.col("len") > 1)["slug"].to_list()
    if dupes:
        raise T0Error(f"{path}: duplicate slug(s) {', '.join(sorted(dupes)[:5])} in field {f.slug!r}; each document needs a unique slug.")
    return df.filter(~pl.col("slug").is_in(config.exclude_slugs))


def run_crawl(config: SourceConfig, paths: DataPaths) -> tuple[pl.DataFrame, CrawlReport]:
    """Crawl (or read) the source and write pages.parquet + crawl_report.json atomically."""
    previous = pl.read_parquet(paths.pages) if paths.pages.exists() else None
    if config.kind == "pages":
        started = _now()
        df = read_pages_file(config)
        report = CrawlReport(source=f"pages:{config.location}", started_at=started, finished_at=_now(),
                             conditions=df.height)
        old = {} if previous is None else dict(zip(previous["slug"], previous["content_hash"]))
        for slug, digest in zip(df["slug"], df["content_hash"]):
            (report.new if slug not in old else report.unchanged if old[slug] == digest else report.changed).append(slug)
        report.removed = sorted(set(old) - set(df["slug"]))
    else:
        df, report = asyncio.run(crawl_async(config, previous))
    write_parquet(df, paths.pages)
    write_json(report.__dict__, paths.crawl_report)
    write_config_sidecar(paths.pages, config)
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
            raise T0Error(f"mirror directory {root} does not exist; pass an existing directory with --location.")
        for path in sorted(root.rglob("*.html")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    elif config.kind == "pages":
        if not config.location or not Path(config.location).is_file():
            raise T0Error(f"pages file {config.location!r} does not exist; pass an existing .jsonl or .parquet file.")
        digest.update(Path(config.location).read_bytes())
    else:
        url = config.location or get_adapter(config.adapter).index_url
        resp = httpx.get(url, headers={"User-Agent": config.user_agent}, timeout=config.timeout_s, follow_redirects=True)
        resp.raise_for_status()
        digest.update(resp.content)
    return digest.hexdigest()


if __name__ == "__main__":
    from t0_pipeline.cli import run_stage

    run_stage("crawl")
