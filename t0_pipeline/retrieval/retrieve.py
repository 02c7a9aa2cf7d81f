"""Retrieve: query text → the top-k *documents* (full-document retrieval), dense, BM25 or hybrid.

``k`` counts documents, not chunks: dense search scores chunks, keeps each document's best
chunk and returns the whole document. An index of up to ``retrieval.exact_max_chunks`` chunks
is scored exactly in memory (its vectors read once from Chroma); a larger one asks Chroma's
HNSW index, widening the chunk window until it has k distinct documents (or has seen every
chunk). BM25 ranks whole documents.
Hybrid fuses the two rankings with weighted reciprocal rank fusion (``retrieval.rrf_k``,
``retrieval.fusion_weights``); hybrid search of the summaries also fuses the full pages' dense and
BM25 rankings (``retrieval.fuse_full_pages``).

Run it: ``t0 query --data-dir DIR "text"`` or ``t0 retrieve --queries Q.jsonl --out ranked.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t0_pipeline.artifacts import T0Error, read_parquet
from t0_pipeline.config import (
    ChromaConfig,
    DataPaths,
    EmbeddingConfig,
    IndexName,
    RetrievalConfig,
    RetrieverMode,
)
from t0_pipeline.retrieval.chroma_store import chroma_client, server_faults
from t0_pipeline.retrieval.dense_search import ExactChunks, best_chunk_per_doc
from t0_pipeline.retrieval.index import _stemmer, bm25_tokenize, import_bm25s, read_manifest


@dataclass
class Hit:
    slug: str
    title: str
    score: float  # higher is better: -distance (l2) / 1-distance (cosine), BM25 score, or RRF score
    rank: int
    url: str = ""
    text: str = ""


def reciprocal_rank_fusion(
    rankings: list[list[str]], k: int = 60, weights: list[float] | None = None
) -> list[tuple[str, float]]:
    """Fuse ranked lists of ids: score(d) = Σ weight / (k + rank_d), rank starting at 1 (every
    weight 1 unless given)."""
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings)):
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


class Retriever:
    """Search one index (``full`` or ``summaries``) of a built data directory."""

    def __init__(
        self,
        index: IndexName,
        paths: DataPaths,
        embedding: EmbeddingConfig | None = None,
        chroma: ChromaConfig | None = None,
        config: RetrievalConfig | None = None,
        embedder=None,
        client=None,
    ):
        self.index = index
        self.paths = paths
        self.embedding = embedding or EmbeddingConfig()
        self.chroma = chroma or ChromaConfig()
        self.config = config or RetrievalConfig()
        manifest = read_manifest(paths.index_manifest(index))
        if manifest is None:
            raise T0Error(
                f"no {index!r} index in {paths.root}; build it with `t0 index --data-dir "
                f"{paths.root}`."
            )
        from t0_pipeline.retrieval.embed import model_name, vector_space

        built_with, configured = manifest.get("model"), model_name(self.embedding)
        # queries would be embedded in another vector space
        if built_with and vector_space(built_with) != vector_space(configured):
            raise T0Error(
                f"the {index!r} index was built with embedding model {built_with!r}, but "
                f"embedding.model is {configured!r}; rebuild it (`t0 index`, or re-materialise it) "
                "or set embedding.model back."
            )
        self.manifest = manifest
        self.live: dict[str, str] = manifest["docs"]
        # as chunk ids carry them
        self._live16 = {slug: digest[:16] for slug, digest in self.live.items()}
        # the text this index version serves (older manifests: the corpus)
        snapshot = manifest.get("docs_file")
        source = (
            paths.index_manifest(index).with_name(snapshot) if snapshot else paths.documents(index)
        )
        docs = read_parquet(source, f"{index} documents", "t0 index")
        self.docs = {
            r["slug"]: r
            for r in docs.select("slug", "title", "url", "text").iter_rows(named=True)
            if r["slug"] in self.live
        }
        self._embedder = embedder
        self._client = client
        self._collection = None
        self._bm25 = None
        self._bm25_slugs: list[str] = []
        self._stemmer = None
        self._full: Retriever | None = None
        # None = not read yet, False = too many chunks
        self._exact_chunks: ExactChunks | bool | None = None

    # --- dense ---------------------------------------------------------------------
    @property
    def embedder(self):
        if self._embedder is None:
            from t0_pipeline.retrieval.embed import load_embedder

            self._embedder = load_embedder(self.embedding)
        return self._embedder

    @property
    def collection(self):
        if self._collection is None:
            client = self._client or chroma_client(self.chroma, self.paths)
            try:
                self._collection = client.get_collection(
                    self.manifest["collection"], embedding_function=None
                )
            except Exception:
                raise T0Error(
                    f"Chroma collection {self.manifest['collection']!r} is missing from the store "
                    f"the manifest {self.paths.index_manifest(self.index)} points to; rebuild with "
                    "`t0 index`."
                ) from None
            self._n_chunks = self.collection.count()
        return self._collection

    def _dense(self, vectors: np.ndarray, depth: int) -> list[list[tuple[str, float]]]:
        """Per query: up to ``depth`` documents with their best chunk distance, nearest first."""
        again = "nothing changed; search again once it is back"
        with server_faults(self.chroma, f"searching the {self.index!r} index", again):
            exact = self._exact()
            if exact is None:
                return self._dense_chroma(vectors, depth)
        return exact.rank(vectors, depth)

    def _exact(self) -> "ExactChunks | None":
        """The index's live chunk vectors in memory, when it is small enough
        (retrieval.exact_max_chunks)."""
        if self._exact_chunks is None:
            collection = self.collection
            if self._n_chunks > self.config.exact_max_chunks:
                self._exact_chunks = False
            else:
                self._exact_chunks = ExactChunks.read(
                    collection, self._live16, self.chroma.distance
                )
        return self._exact_chunks or None

    def _dense_chroma(self, vectors: np.ndarray, depth: int) -> list[list[tuple[str, float]]]:
        """Dense search through Chroma's HNSW index, widening the chunk window until ``depth``
        documents.

        Chunk ids are ``slug::hash16::i``, so only ids and distances are fetched: no metadata
        look-ups (faster, and clear of SQLite's variable limit on large batches).
        """
        collection = self.collection
        total = self._n_chunks
        # first window sized from this index's chunks per document, so one Chroma query usually
        # suffices
        per_doc = max(1.0, total / max(1, len(self.live)))
        n = min(total, max(10, int(depth * per_doc * self.config.chunk_oversample)))
        live = self._live16
        results: list[list[tuple[str, float]] | None] = [None] * len(vectors)
        pending = list(range(len(vectors)))
        while pending:
            still = []
            step = max(1, 20_000 // n)  # queries per Chroma call, bounding results held at once
            for start in range(0, len(pending), step):
                rows = pending[start : start + step]
                got = collection.query(
                    query_embeddings=vectors[rows], n_results=n, include=["distances"]
                )
                for row, ids, dists in zip(rows, got["ids"], got["distances"]):
                    slugs, kept = [], []
                    for cid, dist in zip(ids, dists):
                        slug, digest, _ = cid.rsplit("::", 2)
                        if live.get(slug) == digest:
                            slugs.append(slug)
                            kept.append(dist)
                    docs = best_chunk_per_doc(slugs, kept)
                    if len(docs) >= depth or n >= total:
                        results[row] = docs[:depth]
                    else:
                        still.append(row)
            pending = still
            n = min(total, n * 2)
        return results  # type: ignore[return-value]

    def _dense_score(self, distance: float) -> float:
        return 1.0 - distance if self.chroma.distance == "cosine" else -distance

    # --- bm25 ----------------------------------------------------------------------
    def _load_bm25(self):
        if self._bm25 is None:
            bm25s = import_bm25s()
            folder = self.paths.bm25_dir(self.index)
            if not (folder / "t0_docs.json").exists():
                raise T0Error(
                    f"no BM25 index at {folder}; build it with `t0 index --data-dir "
                    f"{self.paths.root}`."
                )
            meta = json.loads((folder / "t0_docs.json").read_text(encoding="utf-8"))
            self._bm25 = bm25s.BM25.load(str(folder))
            # a BM25 index rebuilt ahead of (or behind) the dense manifest: only documents at the
            # manifest's version count (hashes are absent in indexes written before they were
            # saved: trust them all)
            hashes = meta.get("hashes")
            self._bm25_slugs = (
                list(meta["slugs"])
                if hashes is None
                else [
                    slug if self.live.get(slug) == digest else None
                    for slug, digest in zip(meta["slugs"], hashes)
                ]
            )
            self._stemmer = _stemmer() if meta.get("stemmer") else None
        return self._bm25

    def _bm25_rank(self, queries: list[str], depth: int) -> list[list[tuple[str, float]]]:
        bm25 = self._load_bm25()
        depth = min(depth, len(self._bm25_slugs))
        # 0: in this thread (1 would start a pool per call)
        ids, scores = bm25.retrieve(
            bm25_tokenize(queries, self._stemmer), k=depth, show_progress=False, n_threads=0
        )
        out = []
        for row_ids, row_scores in zip(ids, scores):
            out.append(
                [
                    (self._bm25_slugs[i], float(s))
                    for i, s in zip(row_ids, row_scores)
                    if s > 0 and self._bm25_slugs[i] is not None
                ]
            )
        return out

    # --- fusion with the full pages ---------------------------------------------------
    def _full_pages(self) -> "Retriever | None":
        """The full-page index whose dense ranking joins this index's hybrid fusion
        (retrieval.fuse_full_pages)."""
        if not self.config.fuse_full_pages or self.index == "full":
            return None
        if self._full is None:
            if read_manifest(self.paths.index_manifest("full")) is None:
                raise T0Error(
                    f"hybrid search of {self.index!r} also ranks the full pages "
                    "(retrieval.fuse_full_pages), but there is no full-page index in "
                    f"{self.paths.root}; build it (`t0 index`) or set retrieval.fuse_full_pages: "
                    "false."
                )
            self._full = Retriever(
                "full",
                self.paths,
                self.embedding,
                self.chroma,
                self.config.model_copy(update={"fuse_full_pages": False}),
                embedder=self._embedder,
                client=self._client,
            )
        return self._full

    # --- public --------------------------------------------------------------------
    def rank(
        self, queries: list[str], k: int, mode: RetrieverMode | None = None
    ) -> list[list[tuple[str, float]]]:
        """(slug, score) lists, best first, at most k documents per query."""
        mode = mode or self.config.mode
        if k < 1:
            raise T0Error(f"k must be at least 1, got {k}.")
        if not queries:
            return []
        if mode == "bm25":
            return [r[:k] for r in self._bm25_rank(queries, k)]
        depth = k if mode == "dense" else max(k, self.config.fusion_depth)
        from t0_pipeline.retrieval.embed import encode_queries

        vectors = encode_queries(self.embedding, self.embedder, queries)
        dense = [
            [(s, self._dense_score(d)) for s, d in docs] for docs in self._dense(vectors, depth)
        ]
        if mode == "dense":
            return [r[:k] for r in dense]
        if mode != "hybrid":
            raise T0Error(f"unknown retriever mode {mode!r}; use dense, bm25 or hybrid.")
        w = self.config.fusion_weights
        rankings = [
            [[s for s, _ in d] for d in dense],
            [[s for s, _ in b] for b in self._bm25_rank(queries, depth)],
        ]
        weights = [w.dense, w.bm25]
        full = self._full_pages()
        if full is not None and w.full_dense > 0:  # same model: the query vectors serve both
            rankings.append(
                [[s for s, _ in docs if s in self.live] for docs in full._dense(vectors, depth)]
            )
            weights.append(w.full_dense)
        if full is not None and w.full_bm25 > 0:
            rankings.append(
                [[s for s, _ in b if s in self.live] for b in full._bm25_rank(queries, depth)]
            )
            weights.append(w.full_bm25)
        return [
            reciprocal_rank_fusion(list(per_query), self.config.rrf_k, weights)[:k]
            for per_query in zip(*rankings)
        ]

    def search(self, query: str, k: int = 5, mode: RetrieverMode | None = None) -> list[Hit]:
        """Top-k whole documents for one query."""
        hits = []
        for rank, (slug, score) in enumerate(self.rank([query], k, mode)[0], start=1):
            doc = self.docs.get(slug, {})
            hits.append(
                Hit(
                    slug,
                    doc.get("title", slug),
                    score,
                    rank,
                    doc.get("url", ""),
                    doc.get("text", ""),
                )
            )
        return hits


def write_ranked(
    retriever: Retriever,
    records: list[dict],
    query_field: str,
    k: int,
    mode: RetrieverMode,
    out: Path,
    batch: int = 64,
) -> int:
    """Write one JSON line per query: its own fields plus ``ranked`` (slugs) and ``scores``."""
    from tqdm.auto import tqdm

    from t0_pipeline.artifacts import atomic_path

    if not records:
        raise T0Error("the query file holds no queries; nothing was written.")
    for i, rec in enumerate(records, start=1):
        if not isinstance(rec.get(query_field), str) or not rec[query_field].strip():
            raise T0Error(
                f"query record {i}: field {query_field!r} is missing or empty; set --query-field "
                "to the field holding the query text."
            )
    with atomic_path(Path(out)) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for start in tqdm(range(0, len(records), batch), desc=f"retrieve {mode}", leave=False):
            part = records[start : start + batch]
            for rec, ranked in zip(part, retriever.rank([r[query_field] for r in part], k, mode)):
                fh.write(
                    json.dumps(
                        {
                            **rec,
                            "ranked": [s for s, _ in ranked],
                            "scores": [round(float(x), 6) for _, x in ranked],
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
    return len(records)


def corpus_slugs(paths: DataPaths) -> set[str]:
    return set(read_parquet(paths.conditions, "conditions dataset", "t0 clean")["slug"].to_list())
