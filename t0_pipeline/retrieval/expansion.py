"""Document expansion (doc2query): the queries written for a document are indexed with it.

Input: an index's documents (slug, title, text, content_hash) and queries labelled with the
document they were written for: the synthetic *training* split
(``<data>/synthetic/queries_train.parquet``) unless ``expansion.source`` names another file.
Output: the same documents with ``expansions`` (at most ``expansion.per_document`` query texts each)
and a ``content_hash`` that covers them, so the index manifest names the expansions it holds and a
change in them re-embeds only the documents concerned.

A dense index adds one vector per expansion, pointing to its document (a document scores by its
nearest chunk or expansion); a BM25 index adds their words to the document's. What retrieval
serves stays the document's own text. The evaluation split is never read here: it scores the
result.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from t0_pipeline.artifacts import T0Error, read_parquet
from t0_pipeline.config import DataPaths, ExpansionConfig, IndexName

log = logging.getLogger(__name__)


@dataclass
class ExpansionInfo:
    """What an index version was expanded with (written into its manifest and metadata)."""

    enabled: bool
    source: str | None = None
    queries: int = 0  # query texts indexed (after the per-document cap)
    documents: int = 0  # documents with at least one
    digest: str | None = None  # of every (slug, text) indexed
    note: str | None = None
    per_document: dict[str, int] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        return {
            "enabled": self.enabled,
            "source": self.source,
            "queries": self.queries,
            "documents": self.documents,
            "digest": self.digest,
            "note": self.note,
        }


def source_path(paths: DataPaths, config: ExpansionConfig) -> Path:
    return Path(config.source) if config.source is not None else paths.synthetic_queries("train")


def check_source(config: ExpansionConfig) -> None:
    """A query file the user named must exist (the synthetic split may not be written yet)."""
    if config.enabled and config.source is not None and not Path(config.source).is_file():
        raise T0Error(
            f"expansion.source {config.source} is not a file; name a query file (query + slug or "
            "condition), or leave it unset to expand from the synthetic training split."
        )


def read_expansions(path: Path, per_document: int) -> dict[str, list[str]]:
    """{slug: query texts} from a query file (JSONL, JSON or Parquet with ``query`` and ``slug`` or
    ``condition``), in file order, repeated texts once, at most ``per_document`` each."""
    from t0_pipeline.config import RetrievalEvalConfig
    from t0_pipeline.retrieval.evaluate import load_queries

    out: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for q in load_queries(path, RetrievalEvalConfig()):
        slug, text = q.targets[0], " ".join(q.query.split())
        key = (slug, text.lower())
        if key in seen or len(out.get(slug, [])) >= per_document:
            continue
        seen.add(key)
        out.setdefault(slug, []).append(text)
    return out


def expanded_hash(content_hash: str, texts: list[str]) -> str:
    """The document's hash when it is indexed with ``texts`` (its own hash when there are none)."""
    if not texts:
        return content_hash
    joined = "\x1f".join([content_hash, *texts])
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def expand(docs: pl.DataFrame, expansions: dict[str, list[str]]) -> pl.DataFrame:
    """``docs`` with an ``expansions`` list column and ``content_hash`` covering it."""
    texts = [expansions.get(slug, []) for slug in docs["slug"]]
    hashes = [expanded_hash(h, t) for h, t in zip(docs["content_hash"], texts)]
    return docs.with_columns(
        pl.Series("expansions", texts, dtype=pl.List(pl.String)),
        pl.Series("content_hash", hashes, dtype=pl.String),
    )


def index_documents(
    paths: DataPaths, index: IndexName, config: ExpansionConfig
) -> tuple[pl.DataFrame, ExpansionInfo]:
    """The documents an index is built from, expanded when ``expansion`` is on for ``index``."""
    docs = read_parquet(paths.documents(index), f"{index} documents", "t0 index")
    if not config.enabled or index not in config.indexes:
        return docs, ExpansionInfo(enabled=False)
    check_source(config)
    path = source_path(paths, config)
    if not path.exists():
        note = (
            f"expansion is on but there are no training queries at {path} yet; indexed without. "
            "Write them (`t0 synth-queries`, or the synthetic_queries asset) and index again."
        )
        log.warning(note)
        return docs, ExpansionInfo(enabled=True, source=str(path), note=note)
    expansions = read_expansions(path, config.per_document)
    expanded = expand(docs, expansions)
    kept = {s: len(t) for s, t in zip(expanded["slug"], expanded["expansions"].to_list()) if t}
    pairs = sorted((s, t) for s, ts in expansions.items() if s in kept for t in ts)
    digest = hashlib.sha256(repr(pairs).encode("utf-8")).hexdigest()[:16]
    info = ExpansionInfo(
        enabled=True,
        source=str(path),
        queries=sum(kept.values()),
        documents=len(kept),
        digest=digest,
        per_document=kept,
    )
    if not kept:
        info.note = f"none of the queries in {path} names a document of the {index!r} index"
        log.warning(info.note)
    return expanded, info


def with_expansion_chunks(chunks: list, docs: pl.DataFrame) -> list:
    """``chunks`` (in document order) with one more per expansion after each document's own,
    numbered on from them; start and end are -1 (not a slice of the text)."""
    from t0_pipeline.retrieval.chunk import Chunk

    if "expansions" not in docs.columns:
        return chunks
    extra = dict(zip(docs["slug"], docs["expansions"].to_list()))
    out: list = []
    for i, chunk in enumerate(chunks):
        out.append(chunk)
        if i + 1 == len(chunks) or chunks[i + 1].slug != chunk.slug:
            for j, text in enumerate(extra.get(chunk.slug) or [], start=chunk.index + 1):
                out.append(Chunk(chunk.slug, j, text, -1, -1, 0))
    return out


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def leaked_queries(queries: list[str], manifests: dict[str, dict | None]) -> dict[str, int]:
    """Per expanded index: how many of ``queries`` are among the texts it was expanded with (scoring
    those would measure recall of indexed text, not retrieval)."""
    out: dict[str, int] = {}
    wanted = {_normal(q) for q in queries}
    for name, manifest in manifests.items():
        info = (manifest or {}).get("expansion") or {}
        source = info.get("source")
        if not info.get("queries") or not source or not Path(source).exists():
            continue
        indexed = {
            _normal(t) for texts in read_expansions(Path(source), 10**9).values() for t in texts
        }
        out[name] = len(wanted & indexed)
    return out
