"""Pre-scraped pages (a JSONL/JSON/Parquet file with slug, title, url and text, field names
mapped by ``source.fields``) read as the crawl's raw pages, with one clear error per bad record."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from t0_pipeline.artifacts import (
    T0Error,
    json_kind,
    read_records,
    sha256_text,
)
from t0_pipeline.config import SourceConfig

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


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
        _check_record(path, i, rec, config)
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
                "fetched_at": now_iso(),
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
    kept = df.filter(~pl.col("slug").is_in(config.exclude_slugs))
    if kept.is_empty():
        raise T0Error(
            f"{path}: every one of its {df.height} pages is excluded by source.exclude_slugs; "
            "nothing would be indexed, so the previous corpus is kept."
        )
    return kept


def _check_record(path: Path, i: int, rec: dict, config: SourceConfig) -> None:
    """One error naming the file, the record and the field for a record that cannot be a page."""
    f = config.fields
    where = f"{path} record {i}"
    missing = [name for name in (f.slug, f.title, f.text) if not str(rec.get(name) or "").strip()]
    if missing:
        raise T0Error(
            f"{where}: missing or empty field(s) {', '.join(map(repr, missing))}; "
            "fix the record or map the field names with source.fields."
        )
    for name, kinds in ((f.text, (str,)), (f.title, (str,)), (f.slug, (str, int)), (f.url, (str,))):
        value = rec.get(name)
        if name == f.url and value is None:
            continue
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise T0Error(
                f"{where}: field {name!r} is {json_kind(value)}, not text; each page's slug, "
                "title, url and text must be strings."
            )
    size = len(rec[f.text].encode("utf-8"))
    if size > config.max_page_bytes:
        raise T0Error(
            f"{where}: field {f.text!r} is {_bytes(size)}, over source.max_page_bytes "
            f"({_bytes(config.max_page_bytes)}); split the document or raise the limit. "
            "The previous corpus is kept."
        )


def _bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n:,} bytes"
