"""The corpus → index half of the pipeline as plain function calls (no Dagster): crawl or read the
source, clean, summarise, index, each stage logged.

Used by the ``t0 index`` command and by benchmarks; the Dagster assets call the same
stage functions one at a time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from t0_pipeline.config import INDEX_NAMES, DataPaths, PipelineConfig
from t0_pipeline.corpus.clean import run_clean
from t0_pipeline.corpus.crawl import run_crawl
from t0_pipeline.retrieval.index import IndexStats, build_bm25_index, build_dense_index
from t0_pipeline.synthetic.summarise import run_summarise

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    crawl: str
    documents: int
    problems: list[str]
    compression: float
    dense: dict[str, IndexStats] = field(default_factory=dict)
    bm25: dict[str, dict[str, Any]] = field(default_factory=dict)
    # pages or files that could not be read: slug, url (a folder's: the file), error
    failed: list[dict[str, str]] = field(default_factory=list)


def build_indexes(
    config: PipelineConfig, paths: DataPaths, embedder=None, client=None
) -> tuple[dict, dict]:
    """Dense and BM25 indexes for full pages and summaries from the datasets already on disk."""
    from t0_pipeline.retrieval.expansion import index_documents

    dense, bm25 = {}, {}
    for index in INDEX_NAMES:
        docs, expansion = index_documents(paths, index, config.expansion)
        if expansion.enabled:
            log.info(
                "%s: expanded with %d queries for %d documents from %s",
                index,
                expansion.queries,
                expansion.documents,
                expansion.source,
            )
        dense[index] = build_dense_index(
            docs,
            index,
            paths,
            config.embedding,
            config.chunk,
            config.chroma,
            embedder=embedder,
            client=client,
            expansion=expansion.as_dict(),
        )
        bm25[index] = build_bm25_index(docs, index, paths)
    return dense, bm25


def build_all(config: PipelineConfig, paths: DataPaths, embedder=None, client=None) -> BuildResult:
    """Crawl (or read) the source, clean, summarise and index everything; each stage is logged as it
    starts and ends (what ``t0 index`` shows)."""
    from t0_pipeline.retrieval.expansion import check_source

    check_source(config.expansion)  # before anything is rewritten
    source = config.source
    with _stage(
        1,
        f"corpus: {'crawl' if source.kind == 'site' else 'read'} the {source.kind} source "
        f"{source.location or '(bundled sample)'} into {paths.pages}",
    ):
        _, report = run_crawl(source, paths)
    with _stage(2, f"clean: pages → conditions dataset {paths.conditions}"):
        conditions, problems = run_clean(paths, source, config.clean)
    with _stage(3, f"summarise ({config.summary.backend}): conditions → {paths.summaries}"):
        summaries, _ = run_summarise(paths, config.summary, config.llm, prompts=config.prompts)
    with _stage(
        4,
        f"index: dense ({config.embedding.model or 'bundled all-MiniLM-L6-v2'}) and BM25, "
        f"{' and '.join(INDEX_NAMES)}",
    ):
        dense, bm25 = build_indexes(config, paths, embedder, client)
    return BuildResult(
        crawl=report.summary(),
        documents=conditions.height,
        problems=problems,
        compression=float(summaries["compression"].mean()),
        dense=dense,
        bm25=bm25,
        failed=report.failed,
    )


@contextlib.contextmanager
def _stage(number: int, what: str, stages: int = 4):
    log.info("stage %d/%d %s", number, stages, what)
    started = time.monotonic()
    yield
    log.info("stage %d/%d done in %.1f s", number, stages, time.monotonic() - started)
