"""Index: documents → a Chroma collection of chunk embeddings, and a BM25 index.

Input: ``conditions.parquet`` (index ``full``) or ``summaries.parquet`` (index
``summaries``). Output: a Chroma collection (embedded store under ``<data>/index/chroma``
or a Chroma server), ``<data>/index/<name>.manifest.json``, and ``<data>/index/bm25_<name>/``.

Incremental and never half-updated. Chunk ids carry the document's content hash, and the
manifest lists the (slug → hash) pairs that make up the index. An update (1) adds chunks
for new or changed documents, (2) atomically replaces the manifest, (3) deletes chunks no
longer listed. Readers only trust chunks the manifest lists, so a crash at any point
leaves the previous index intact, and the next run finishes the job. Changing the model,
chunking or distance gives a new collection name, i.e. a clean rebuild with the same
guarantee.

Run it: ``t0 index --data-dir DIR`` (or ``--pages FILE`` to build from pre-scraped pages).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from t0_pipeline.artifacts import T0Error, atomic_path, read_json, write_json, write_parquet
from t0_pipeline.config import ChromaConfig, ChunkConfig, DataPaths, EmbeddingConfig, IndexName
from t0_pipeline.retrieval.chroma_store import (
    COMMITTED,
    NOTHING_COMMITTED,
    chroma_client,
    server_faults,
)
from t0_pipeline.retrieval.chunk import chunk_documents
from t0_pipeline.retrieval.embed import chunk_token_limit, document_encoder, model_name
from t0_pipeline.retrieval.expansion import with_expansion_chunks

log = logging.getLogger(__name__)


@dataclass
class IndexSpec:
    """What determines a collection's contents besides the documents themselves."""

    index: str
    model: str
    chunk_size: int
    overlap: int
    distance: str

    def collection_name(self, prefix: str) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]
        return f"{prefix}_{self.index}_{digest}"


@dataclass
class IndexStats:
    index: str
    collection: str
    documents: int
    chunks: int
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    embedded_chunks: int = 0
    seconds: float = 0.0
    rebuilt: bool = False
    expansions: int = 0  # of the chunks, query texts indexed as document expansions

    def summary(self) -> str:
        expanded = f" (of them {self.expansions} expansions)" if self.expansions else ""
        return (
            f"{self.index}: {self.documents} documents / {self.chunks} chunks{expanded}; embedded "
            f"{self.embedded_chunks} chunks ({len(self.added)} added, {len(self.changed)} changed, "
            f"{len(self.removed)} removed, {self.unchanged} unchanged) in {self.seconds:.1f}s"
        )

    def compare(self, committed: dict[str, str], target: dict[str, str]) -> None:
        """Documents added, changed, removed and unchanged between two {slug: hash} versions."""
        self.added = sorted(s for s in target if s not in committed)
        self.changed = sorted(s for s, h in target.items() if s in committed and committed[s] != h)
        self.removed = sorted(set(committed) - set(target))
        self.unchanged = len(target) - len(self.added) - len(self.changed)


def read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return read_json(path)
    except (json.JSONDecodeError, OSError) as exc:
        raise T0Error(
            f"index manifest {path} is unreadable ({exc}); delete it to rebuild the index from "
            "scratch."
        ) from None


def _chunk_id(slug: str, doc_hash: str, i: int) -> str:
    return f"{slug}::{doc_hash[:16]}::{i}"


def _complete_docs(collection) -> tuple[dict[tuple[str, str], list[str]], set[tuple[str, str]]]:
    """Chunk ids per (slug, hash) present in the collection, and which of those are complete."""
    got = collection.get(include=["metadatas"])
    by_doc: dict[tuple[str, str], list[str]] = {}
    expected: dict[tuple[str, str], int] = {}
    for cid, meta in zip(got["ids"], got["metadatas"]):
        key = (meta["slug"], meta["doc_hash"])
        by_doc.setdefault(key, []).append(cid)
        expected[key] = int(meta["n_chunks"])
    complete = {key for key, ids in by_doc.items() if len(ids) == expected[key]}
    return by_doc, complete


def document_batches(chunks: list, limit: int):
    """Consecutive runs of chunks holding whole documents, each about ``limit`` chunks (one long
    document may exceed it: a document is never split between batches)."""
    part: list = []
    for i, chunk in enumerate(chunks):
        part.append(chunk)
        ends_document = i + 1 == len(chunks) or chunks[i + 1].slug != chunk.slug
        if ends_document and len(part) >= limit:
            yield part
            part = []
    if part:
        yield part


def write_docs_snapshot(
    docs: pl.DataFrame, paths: DataPaths, index: str, target: dict[str, str]
) -> Path:
    """The documents an index version serves (slug, title, url, text, hash), written before its
    manifest.

    Readers take text from here, never from the corpus files, which the next crawl or clean rewrites
    before the index catches up: a crash in between still serves one consistent version.
    """
    digest = hashlib.sha256(json.dumps(sorted(target.items())).encode()).hexdigest()[:12]
    # named in the manifest
    path = paths.index_manifest(index).with_name(f"{index}.docs-{digest}.parquet")
    if not path.exists():
        columns = [c for c in ("slug", "title", "url", "text", "content_hash") if c in docs.columns]
        write_parquet(docs.select(columns), path)
    return path


def build_dense_index(
    docs: pl.DataFrame,
    index: IndexName,
    paths: DataPaths,
    embedding: EmbeddingConfig,
    chunking: ChunkConfig,
    chroma: ChromaConfig,
    embedder=None,
    client=None,
    expansion: dict | None = None,
) -> IndexStats:
    """Bring the Chroma collection for ``index`` in line with ``docs`` (re-embedding only what
    changed). ``docs`` may carry ``expansions`` (:mod:`t0_pipeline.retrieval.expansion`),
    described in the manifest by ``expansion``."""
    started = time.perf_counter()
    if docs.is_empty():
        raise T0Error(
            f"no documents to index for {index!r}; build the corpus first (`t0 crawl` and `t0 "
            "clean`)."
        )
    # int8 on CPU unless embedding.quantize says otherwise
    embedder = document_encoder(embedding, embedder)
    client = client or chroma_client(chroma, paths)
    size = chunking.size or chunk_token_limit(embedder)
    spec = IndexSpec(index, model_name(embedding), size, chunking.overlap, chroma.distance)
    name = spec.collection_name(chroma.collection_prefix)
    manifest = read_manifest(paths.index_manifest(index))
    old_name = manifest["collection"] if manifest else None
    committed: dict[str, str] = manifest["docs"] if manifest and old_name == name else {}

    target = dict(zip(docs["slug"], docs["content_hash"]))
    stats = IndexStats(
        index=index,
        collection=name,
        documents=len(target),
        chunks=0,
        rebuilt=old_name != name,
        expansions=(expansion or {}).get("queries") or 0,
    )
    # 1. add chunks for new/changed documents (ids carry the hash, so old chunks stay readable)
    with server_faults(chroma, f"writing the {index!r} index", NOTHING_COMMITTED):
        collection = client.get_or_create_collection(
            name,
            embedding_function=None,
            configuration={"hnsw": {"space": chroma.distance}},
            metadata={f"t0_{k}": v for k, v in asdict(spec).items() if k != "distance"},
        )
        by_doc, complete = _complete_docs(collection)
        need = [s for s, h in target.items() if (s, h) not in complete]
        todo = docs.filter(pl.col("slug").is_in(need))
        if not todo.is_empty():
            limit = max(1, min(client.get_max_batch_size(), chroma.write_batch))
            stats.embedded_chunks = _embed_documents(
                todo, collection, by_doc, embedder, embedding, size, chunking.overlap, limit, index
            )
    # 2. commit: the manifest now names the new document versions, and the copy of their text that
    # readers serve
    kept = sum(len(by_doc.get((s, h), [])) for s, h in target.items() if (s, h) in complete)
    stats.chunks = kept + stats.embedded_chunks
    snapshot = _commit(docs, paths, spec, name, target, stats.chunks, expansion)
    # 3. garbage-collect what the manifest no longer names
    with server_faults(chroma, f"removing old chunks of the {index!r} index", COMMITTED):
        _collect_garbage(client, collection, by_doc, target, snapshot, index, old_name)
    # reported against the last committed manifest, so a run that finishes an interrupted one still
    # says what changed
    stats.compare(committed, target)
    stats.seconds = time.perf_counter() - started
    log.info("dense index %s", stats.summary())
    return stats


def _embed_documents(
    todo: pl.DataFrame,
    collection,
    by_doc: dict,
    embedder,
    embedding: EmbeddingConfig,
    size: int,
    overlap: int,
    limit: int,
    index: str,
) -> int:
    """Chunk, encode and upsert ``todo``'s documents; returns the number of chunks written.

    Batch by batch, whole documents per batch: a kill loses at most the batch in hand, and the
    documents already written are complete, so the next run keeps them."""
    from tqdm.auto import tqdm

    partial = [
        cid for s, h in zip(todo["slug"], todo["content_hash"]) for cid in by_doc.get((s, h), [])
    ]
    if partial:  # left by an interrupted run: redo those documents whole
        collection.delete(ids=partial)
    chunks = with_expansion_chunks(
        chunk_documents(
            todo["slug"].to_list(), todo["text"].to_list(), embedder.tokenizer, size, overlap
        ),
        todo,
    )
    hashes = dict(zip(todo["slug"], todo["content_hash"]))
    titles = dict(zip(todo["slug"], todo["title"]))
    counts = Counter(ch.slug for ch in chunks)
    written = 0
    quiet = len(chunks) <= 256
    with tqdm(
        total=len(chunks), desc=f"embed {index}", unit="chunk", leave=False, disable=quiet
    ) as bar:
        for part in document_batches(chunks, limit):
            texts = [c.text for c in part]
            vectors = embedder.encode(
                texts,
                batch_size=embedding.batch_size,
                normalize_embeddings=embedding.normalize,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
            collection.upsert(
                ids=[_chunk_id(c.slug, hashes[c.slug], c.index) for c in part],
                embeddings=vectors,
                documents=texts,
                metadatas=[_chunk_metadata(c, titles, hashes, counts) for c in part],
            )
            written += len(part)
            bar.update(len(part))
    return written


def _chunk_metadata(c, titles: dict, hashes: dict, counts: Counter) -> dict:
    return {
        "slug": c.slug,
        "title": titles[c.slug],
        "doc_hash": hashes[c.slug],
        "chunk": c.index,
        "n_chunks": counts[c.slug],
        "start": c.start,
        "end": c.end,
        "kind": "expansion" if c.start < 0 else "text",
    }


def _commit(
    docs: pl.DataFrame,
    paths: DataPaths,
    spec: IndexSpec,
    name: str,
    target: dict,
    n_chunks: int,
    expansion: dict | None = None,
) -> Path:
    """Write the documents' snapshot, then the manifest naming it and the document versions: the
    index's new version, in one atomic write. Returns the snapshot's path."""
    snapshot = write_docs_snapshot(docs, paths, spec.index, target)
    manifest = {
        "index": spec.index,
        "collection": name,
        **asdict(spec),
        "docs": target,
        "docs_file": snapshot.name,
        "n_chunks": n_chunks,
        "expansion": expansion or {"enabled": False},
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(manifest, paths.index_manifest(spec.index))
    return snapshot


def _collect_garbage(
    client, collection, by_doc: dict, target: dict, snapshot: Path, index: str, old_name
) -> None:
    """Remove older document snapshots, chunks of versions the manifest no longer lists, and the
    previous collection when the index moved to a new one."""
    for old in snapshot.parent.glob(f"{index}.docs-*.parquet"):
        if old != snapshot:
            old.unlink(missing_ok=True)
    stale = [cid for (s, h), ids in by_doc.items() if target.get(s) != h for cid in ids]
    if stale:
        collection.delete(ids=stale)
    if old_name and old_name != collection.name:
        try:
            client.delete_collection(old_name)
        except Exception:  # already gone: nothing to clean
            pass


# --- BM25 -----------------------------------------------------------------------------


@functools.cache
def import_bm25s():
    """bm25s, with its logger back at WARNING (it sets DEBUG on import and floods the CLI). Once:
    setting a logger's level clears every logger's cache, which a search would otherwise pay for
    each time."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def _stemmer():
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # PyStemmer is optional; BM25 works unstemmed
        return None


def bm25_tokenize(texts: list[str], stemmer=None):
    return import_bm25s().tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)


def build_bm25_index(docs: pl.DataFrame, index: IndexName, paths: DataPaths) -> dict[str, Any]:
    """Document-level BM25 (bm25s), saved with its slug order; rebuilt whole (milliseconds)."""
    bm25s = import_bm25s()
    started = time.perf_counter()
    if docs.is_empty():
        raise T0Error(f"no documents to index for {index!r}; build the corpus first.")
    stemmer = _stemmer()
    texts = [f"{t}\n{x}" for t, x in zip(docs["title"], docs["text"])]
    if "expansions" in docs.columns:  # a patient's words for it, beside the page's
        texts = [f"{x}\n" + "\n".join(e or []) for x, e in zip(texts, docs["expansions"].to_list())]
    retriever = bm25s.BM25()
    retriever.index(bm25_tokenize(texts, stemmer), show_progress=False)
    out = paths.bm25_dir(index)
    with atomic_path(out) as tmp:
        retriever.save(str(tmp))
        (tmp / "t0_docs.json").write_text(
            json.dumps(
                {
                    "slugs": docs["slug"].to_list(),
                    "hashes": docs["content_hash"].to_list(),
                    "stemmer": "english" if stemmer else None,
                }
            ),
            encoding="utf-8",
        )
    return {
        "index": index,
        "documents": docs.height,
        "stemmed": stemmer is not None,
        "seconds": time.perf_counter() - started,
        "path": str(out),
    }
