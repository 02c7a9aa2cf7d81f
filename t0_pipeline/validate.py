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
    short = docs.filter(pl.col("text").str.strip_chars().str.len_chars() < min_chars)[
        "slug"
    ].to_list()
    if short:
        problems.append(f"{len(short)} empty or too-short documents: {', '.join(short[:5])}")
    dup_slugs = docs.group_by("slug").len().filter(pl.col("len") > 1)["slug"].to_list()
    if dup_slugs:
        problems.append(f"duplicate slugs: {', '.join(sorted(dup_slugs)[:5])}")
    dup_text = (
        docs.group_by("content_hash")
        .agg(pl.col("slug"))
        .filter(pl.col("slug").list.len() > 1)["slug"]
        .to_list()
    )
    if dup_text:
        problems.append(
            "documents with identical text: " + "; ".join(", ".join(g) for g in dup_text[:3])
        )
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
    stale = (
        summaries.join(current, on="slug")
        .filter(pl.col("source_hash") != pl.col("page_hash"))["slug"]
        .to_list()
    )
    if stale:
        problems.append(f"{len(stale)} summaries made from an older page: {', '.join(stale[:5])}")
    empty = summaries.filter(pl.col("text").str.strip_chars() == "")["slug"].to_list()
    if empty:
        problems.append(f"{len(empty)} empty summaries: {', '.join(empty[:5])}")
    return problems


def pk_problems(table: pl.DataFrame, indexes: list[str], modes: list[str]) -> list[str]:
    """What is wrong with a p@k table: a configured (index, mode) pair missing, a value outside [0, 1], or
    p@k falling as k grows (a share of queries with a hit in the top k can only rise)."""
    problems = []
    seen = {(r["index"], r["mode"]) for r in table.iter_rows(named=True)}
    problems += [f"{i} · {m} was not scored" for i in indexes for m in modes if (i, m) not in seen]
    ks = sorted((c for c in table.columns if c.startswith("p@")), key=lambda c: int(c[2:]))
    for row in table.iter_rows(named=True):
        values = [row[k] for k in ks]
        if any(not 0.0 <= v <= 1.0 for v in values):
            problems.append(f"{row['index']} · {row['mode']}: a p@k outside [0, 1]")
        if any(b < a for a, b in zip(values, values[1:])):
            problems.append(f"{row['index']} · {row['mode']}: p@k falls as k grows")
    return problems


def sft_problems(df: pl.DataFrame, block_size: int, think_end: str) -> list[str]:
    """What is wrong with SFT examples: none at all, one over the block size, or one whose assistant turn does
    not carry the chat format's end-of-thinking marker (budget forcing would never see the format)."""
    import json

    if df.is_empty():
        return ["no examples"]
    problems = [
        f"{r['id']}: {r['n_tokens']} tokens > block size {block_size}"
        for r in df.iter_rows(named=True)
        if r["n_tokens"] > block_size
    ]
    for row in df.iter_rows(named=True):
        turns = json.loads(row["messages"])
        if not turns or turns[-1]["role"] != "assistant" or think_end not in turns[-1]["content"]:
            problems.append(f"{row['id']}: the assistant turn lacks {think_end!r}")
    return problems[:20]


def checkpoint_problems(final_dir) -> list[str]:
    """What a loadable Hugging Face checkpoint folder lacks (config, weights, tokenizer)."""
    from pathlib import Path

    final = Path(final_dir)
    if not final.is_dir():
        return [f"{final} does not exist"]
    problems = [] if (final / "config.json").is_file() else ["no config.json"]
    if (
        not any(final.glob("*.safetensors"))
        and not any(final.glob("*.bin"))
        and not (final / "adapter_config.json").is_file()
    ):
        problems.append("no weights (*.safetensors, *.bin or a LoRA adapter)")
    if not any((final / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        problems.append("no tokenizer")
    return [f"{final}: {p}" for p in problems]


def prediction_problems(predictions: pl.DataFrame, summary: dict) -> list[str]:
    """What is wrong with one model's evaluation: a (k, run, query) missing or repeated."""
    expected = (
        len(summary.get("ks", [])) * len(summary.get("seeds", [])) * int(summary.get("queries", 0))
    )
    problems = []
    if predictions.height != expected:
        problems.append(
            f"{predictions.height} predictions, expected {expected} (ks × runs × queries)"
        )
    if (
        predictions.height
        and predictions.select("k", "run", "query_id").n_unique() != predictions.height
    ):
        problems.append("a (k, run, query) is predicted twice")
    return problems
