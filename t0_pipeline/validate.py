"""Pure validators behind the asset checks (and usable from tests and notebooks).

Each returns a list of problems, one sentence each; an empty list means the check passed.
"""

from __future__ import annotations

from typing import Any

import polars as pl


def document_problems(docs: pl.DataFrame, min_chars: int = 1) -> list[str]:
    """Empty documents, duplicate slugs, and distinct slugs with identical text."""
    problems: list[str] = []
    if docs.is_empty():
        return ["the dataset has no documents"]
    short = docs.filter(pl.col("text").str.strip_chars().str.len_chars() < min_chars)["slug"].to_list()
    if short:
        problems.append(f"{len(short)} empty or too-short documents: {', '.join(short[:5])}")
    dup_slugs = docs.group_by("slug").len().filter(pl.col("len") > 1)["slug"].to_list()
    if dup_slugs:
        problems.append(f"duplicate slugs: {', '.join(sorted(dup_slugs)[:5])}")
    dup_text = (docs.group_by("content_hash").agg(pl.col("slug")).filter(pl.col("slug").list.len() > 1)["slug"].to_list())
    if dup_text:
        problems.append("documents with identical text: " + "; ".join(", ".join(g) for g in dup_text[:3]))
    return problems


def unindexed_documents(docs: pl.DataFrame, manifest: dict[str, Any] | None) -> list[str]:
    """Slugs whose current text is not what the index manifest lists (missing or stale)."""
    if manifest is None:
        return docs["slug"].to_list()
    live = manifest.get("docs", {})
    return [s for s, h in zip(docs["slug"], docs["content_hash"]) if live.get(s) != h]


def summary_problems(conditions: pl.DataFrame, summaries: pl.DataFrame) -> list[str]:
    problems = []
    missing = sorted(set(conditions["slug"]) - set(summaries["slug"]))
    if missing:
        problems.append(f"{len(missing)} conditions without a summary: {', '.join(missing[:5])}")
    current = conditions.select("slug", pl.col("content_hash").alias("page_hash"))
    stale = summaries.join(current, on="slug").filter(pl.col("source_hash") != pl.col("page_hash"))["slug"].to_list()
    if stale:
        problems.append(f"{len(stale)} summaries made from an older page: {', '.join(stale[:5])}")
    empty = summaries.filter(pl.col("text").str.strip_chars() == "")["slug"].to_list()
    if empty:
        problems.append(f"{len(empty)} empty summaries: {', '.join(empty[:5])}")
    return problems
