"""Crawl: a site's A-to-Z index (live, a local mirror, or a pre-scraped file), or a folder of
documents (:mod:`t0_pipeline.corpus.documents`) → raw pages.

Input: a :class:`~t0_pipeline.config.SourceConfig`. Output: ``<data>/corpus/pages.parquet``
(one row per fetched page: slug, part, url, body, content hash, ETag, fetch time) and
``crawl_report.json`` (new / changed / unchanged / removed / failed pages).

One crawl algorithm runs over two fetchers (:mod:`t0_pipeline.corpus.fetch`): ``HttpFetcher``
(robots.txt, a delay and concurrency limit, retries with backoff honouring Retry-After,
conditional requests) and ``MirrorFetcher`` (a wget-style directory: ``<slug>/index.html``,
``<slug>/<sub>/index.html``); the bundled sample corpus is such a mirror. A pre-scraped pages
file is read by :mod:`t0_pipeline.corpus.pages_file`.

Run it: ``t0 crawl --source site`` or ``python -m t0_pipeline crawl --config t0.yaml --data-dir
DIR``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import polars as pl
from tqdm.auto import tqdm

from t0_pipeline.artifacts import (
    T0Error,
    sha256_text,
    write_config_sidecar,
    write_json,
    write_parquet,
)
from t0_pipeline.config import DataPaths, SourceConfig
from t0_pipeline.corpus.crawl_records import CrawlJournal, CrawlReport
from t0_pipeline.corpus.fetch import Fetcher, FetchError, HttpFetcher, MirrorFetcher
from t0_pipeline.corpus.pages_file import PAGE_SCHEMA, now_iso, read_pages_file
from t0_pipeline.corpus.sites import ConditionLink, SiteAdapter, get_adapter

log = logging.getLogger(__name__)


def sample_site_dir() -> Path:
    """The bundled sample corpus, laid out like a wget mirror of the NHS conditions section."""
    return Path(str(resources.files("t0_pipeline") / "sample" / "site"))


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
            return {**old, "fetched_at": now_iso()}
        return {
            "page_url": url,
            "body": got.text,
            "content_hash": sha256_text(got.text),
            "etag": got.etag,
            "last_modified": got.last_modified,
            "fetched_at": now_iso(),
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


def _fetcher_for(config: SourceConfig, adapter: SiteAdapter) -> tuple[Fetcher, str]:
    """The fetcher a source needs, and the index page's URL."""
    if config.kind == "site":
        return HttpFetcher(config), config.location or adapter.index_url
    root = sample_site_dir() if config.kind == "sample" else Path(config.location or "")
    return MirrorFetcher(root, adapter.index_url, config.max_page_bytes), adapter.index_url


async def _condition_links(
    config: SourceConfig,
    fetcher: Fetcher,
    adapter: SiteAdapter,
    index_url: str,
    report: CrawlReport,
) -> tuple[list[ConditionLink], int]:
    """The condition pages to crawl (robots.txt, exclusions and ``max_pages`` applied, each noted
    in the report), and how many the index listed before ``max_pages``."""
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
    excluded = set(config.exclude_slugs)
    report.excluded = [lk.slug for lk in links if lk.slug in excluded]
    links = [lk for lk in links if lk.slug not in excluded]
    report.disallowed = [lk.url for lk in links if not fetcher.allowed(lk.url)]
    links = [lk for lk in links if fetcher.allowed(lk.url)]
    found = len(links)
    if config.max_pages is not None and found > config.max_pages:
        links = links[: config.max_pages]
        report.warnings.append(
            f"the index links to {found} conditions; only the first {config.max_pages} "
            "(source.max_pages) were crawled"
        )
    return links, found


async def _outcomes(
    links: list[ConditionLink],
    fetch_one,
    concurrency: int,
    journal: CrawlJournal | None,
    report: CrawlReport,
):
    """Yield (link, result, error) per condition: first those a journal already holds, then the
    others as a fixed pool of workers fetches them (not one task per link: memory stays flat for
    any index)."""
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

    async def worker() -> None:
        while True:
            try:
                link = todo.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                result = await fetch_one(link)
                if journal:
                    journal.add(link.slug, result)
                await results.put((link, result, None))
            except FetchError as exc:
                await results.put((link, None, str(exc)))
            except Exception as exc:  # one odd page must not stall or stop the crawl
                await results.put((link, None, f"{exc.__class__.__name__}: {str(exc)[:200]}"))

    workers = [asyncio.ensure_future(worker()) for _ in range(max(1, concurrency))]
    by_slug = {lk.slug: lk for lk in links}
    try:
        for slug, result in done.items():
            if slug in by_slug:
                yield by_slug[slug], result, None
        for _ in range(pending):
            yield await results.get()
    finally:
        for task in workers:
            task.cancel()


async def crawl_async(
    config: SourceConfig,
    previous: pl.DataFrame | None = None,
    fetcher: Fetcher | None = None,
    journal: CrawlJournal | None = None,
) -> tuple[pl.DataFrame, CrawlReport]:
    """Crawl the configured site or mirror. Failed pages keep their previous version."""
    adapter = get_adapter(config.adapter)
    owns_fetcher = fetcher is None
    if fetcher is None:
        fetcher, index_url = _fetcher_for(config, adapter)
    else:
        index_url = adapter.index_url
    label = "bundled sample mirror" if config.kind == "sample" else config.location or index_url
    report = CrawlReport(source=f"{config.kind}: {label}", started_at=now_iso())
    prev_pages = _previous_by_page(previous)
    prev_rows_by_slug: dict[str, list[dict[str, Any]]] = {}
    for row in previous.to_dicts() if previous is not None else []:
        prev_rows_by_slug.setdefault(row["slug"], []).append(row)
    rows: list[dict[str, Any]] = []
    try:
        links, found = await _condition_links(config, fetcher, adapter, index_url, report)

        def fetch_one(link: ConditionLink):
            return _crawl_condition(link, fetcher, adapter, prev_pages, config.kind)

        outcomes = _outcomes(links, fetch_one, config.concurrency, journal, report)
        async with contextlib.aclosing(outcomes):  # its workers stop whatever happens here
            bar = tqdm(outcomes, total=len(links), desc="crawl", unit="condition", leave=False)
            async for link, result, error in bar:
                _tally(link, result, error, prev_rows_by_slug.get(link.slug, []), rows, report)
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
    report.finished_at = now_iso()
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


def run_crawl(config: SourceConfig, paths: DataPaths) -> tuple[pl.DataFrame, CrawlReport]:
    """Crawl (or read) the source and write pages.parquet + crawl_report.json atomically."""
    previous = pl.read_parquet(paths.pages) if paths.pages.exists() else None
    if config.kind == "documents":
        from t0_pipeline.corpus.documents import read_documents

        df, report = read_documents(config, previous)
    elif config.kind == "pages":
        started = now_iso()
        df = read_pages_file(config)
        report = CrawlReport(
            source=f"pages:{config.location}",
            started_at=started,
            finished_at=now_iso(),
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
    if config.kind not in ("pages", "documents"):
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
    elif config.kind == "documents":
        from t0_pipeline.corpus.documents import document_files

        root, files = document_files(config)
        for path in files:
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
