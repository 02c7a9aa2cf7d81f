"""Pre-scraped pages (a JSONL/JSON/Parquet file with slug, title, url and text, field names
mapped by ``source.fields``) read as the crawl's raw pages, with one clear error per bad record."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from t0_pipeline.artifacts import (
    T0Error,
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
    return df.filter(~pl.col("slug").is_in(config.exclude_slugs))
