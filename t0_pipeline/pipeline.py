"""The corpus → index half of the pipeline as plain function calls (no Dagster).

Used by the ``t0 index`` command and by benchmarks; the Dagster assets call the same
stage functions one at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from t0_pipeline.clean import run_clean
from t0_pipeline.config import INDEX_NAMES, DataPaths, PipelineConfig
from t0_pipeline.crawl import run_crawl
from t0_pipeline.index import IndexStats, build_bm25_index, build_dense_index
from t0_pipeline.summarise import run_summarise

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    crawl: str
    documents: int
    problems: list[str]
    compression: float
    dense: dict[str, IndexStats] = field(default_factory=dict)
    bm25: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_indexes(config: PipelineConfig, paths: DataPaths, embedder=None, client=None) -> tuple[dict, dict]:
    """Dense and BM25 indexes for full pages and summaries from the datasets already on disk."""
    import polars as pl

    dense, bm25 = {}, {}
    for index in INDEX_NAMES:
        docs = pl.read_parquet(paths.documents(index))
        dense[index] = build_dense_index(docs, index, paths, config.embedding, config.chunk, config.chroma,
                                         embedder=embedder, client=client)
        bm25[index] = build_bm25_index(docs, index, paths)
    return dense, bm25


def build_all(config: PipelineConfig, paths: DataPaths, embedder=None, client=None) -> BuildResult:
    """Crawl (or read) the source, clean, summarise and index everything."""
    _, report = run_crawl(config.source, paths)
    conditions, problems = run_clean(paths, config.source, config.clean)
    summaries, _ = run_summarise(paths, config.summary, config.llm)
    dense, bm25 = build_indexes(config, paths, embedder, client)
    return BuildResult(crawl=report.summary(), documents=conditions.height, problems=problems,
                       compression=float(summaries["compression"].mean()), dense=dense, bm25=bm25)
