"""Retriever: k counts documents, whole documents returned, bm25/dense/hybrid, RRF."""

from __future__ import annotations

import numpy as np
import pytest

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths
from t0_pipeline.retrieval.dense_search import ExactChunks, best_chunk_per_doc
from t0_pipeline.retrieval.embed import encode_queries
from t0_pipeline.retrieval.retrieve import Retriever, reciprocal_rank_fusion


def test_rrf_fuses_by_reciprocal_rank():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], k=60)
    scores = dict(fused)
    assert [d for d, _ in fused] == ["a", "c", "b", "d"]
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["d"] == pytest.approx(1 / 63)
    # weighted: the first ranking counts double, so its second place beats the other's first
    weighted = dict(reciprocal_rank_fusion([["a", "b"], ["b", "c"]], k=10, weights=[1.0, 0.5]))
    assert weighted["a"] == pytest.approx(1 / 11)
    assert weighted["b"] == pytest.approx(1 / 12 + 0.5 / 11)
    assert weighted["c"] == pytest.approx(0.5 / 12) and weighted["b"] > weighted["a"]


def test_best_chunk_per_doc_keeps_first_occurrence():
    assert best_chunk_per_doc(["a", "b", "a", "c"], [0.1, 0.2, 0.3, 0.4]) == [
        ("a", 0.1),
        ("b", 0.2),
        ("c", 0.4),
    ]


@pytest.mark.parametrize("distance", ["l2", "cosine", "ip"])
def test_exact_chunks_rank_documents_by_their_nearest_chunk_in_chromas_distance(distance):
    vectors = np.array([[1, 0], [0, 1], [0.6, 0.8], [-1, 0], [0.8, 0.6]], dtype=np.float32)
    # a: rows 0-1, b: 2-3, c: 4
    chunks = ExactChunks(vectors, ["a", "b", "c"], np.array([0, 2, 4]), distance)
    query = np.array([[0.0, 2.0]], dtype=np.float32)
    # l2 is Chroma's squared distance (|q|^2 + |d|^2 - 2 q.d), cosine 1 - cos, ip 1 - q.d
    expected = {
        "l2": {"a": 1.0, "b": 1.8, "c": 2.6},
        "cosine": {"a": 0.0, "b": 0.2, "c": 0.4},
        "ip": {"a": -1.0, "b": -0.6, "c": -0.2},
    }[distance]
    ranked = chunks.rank(query, depth=10)[0]
    assert [slug for slug, _ in ranked] == ["a", "b", "c"]  # depth beyond the documents: each once
    assert dict(ranked) == pytest.approx(expected, abs=1e-6)
    assert chunks.rank(query, depth=1)[0] == [("a", pytest.approx(expected["a"], abs=1e-6))]


def test_exact_search_in_memory_matches_chromas_hnsw(built, embedder):
    cfg, paths = built
    exact = Retriever("full", paths, cfg.embedding, cfg.chroma, cfg.retrieval, embedder=embedder)
    hnsw = Retriever(
        "full",
        paths,
        cfg.embedding,
        cfg.chroma,
        cfg.retrieval.model_copy(update={"exact_max_chunks": 0}),
        embedder=embedder,
    )
    vectors = encode_queries(
        cfg.embedding,
        embedder,
        [
            "a rash that spreads",
            "chest pain when I walk uphill",
            "my child has a temperature and won't eat",
        ],
    )
    got, want = exact._dense(vectors, 10), hnsw._dense(vectors, 10)
    assert exact._exact() is not None and hnsw._exact() is None  # the two paths really differ
    for mine, chroma in zip(got, want):
        assert [s for s, _ in mine] == [s for s, _ in chroma]
        assert [d for _, d in mine] == pytest.approx([d for _, d in chroma], abs=1e-4)


@pytest.fixture(scope="module")
def retriever(built, embedder):
    cfg, paths = built
    return Retriever("full", paths, cfg.embedding, cfg.chroma, cfg.retrieval, embedder=embedder)


def test_k_counts_documents_not_chunks(retriever):
    assert retriever.collection.count() > len(retriever.live)  # several chunks per document
    ranked = retriever.rank(["pain in my tummy and feeling sick"], k=30, mode="dense")[0]
    assert len(ranked) == 30 == len({slug for slug, _ in ranked})
    raw = retriever.collection.query(
        query_embeddings=retriever.embedder.encode(["pain in my tummy and feeling sick"]),
        n_results=30,
        include=["metadatas"],
    )
    # 30 chunks would not have been 30 documents
    assert len({m["slug"] for m in raw["metadatas"][0]}) < 30


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_every_mode_finds_an_obvious_condition(retriever, mode):
    hits = retriever.search(
        "my dad's face dropped on one side and his speech is slurred", k=3, mode=mode
    )
    assert hits[0].slug == "stroke"
    # the whole guide, all pages
    assert hits[0].text.startswith("# Stroke") and "Treatment for stroke" in hits[0].text
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].score >= hits[1].score >= hits[2].score


def test_hybrid_is_rrf_of_dense_and_bm25(retriever):
    q = ["itchy scalp and tiny eggs stuck to my child's hair"]
    alone = Retriever(
        "summaries",
        retriever.paths,
        retriever.embedding,
        retriever.chroma,
        retriever.config.model_copy(update={"fuse_full_pages": False}),
        embedder=retriever.embedder,
    )
    depth = alone.config.fusion_depth
    dense = [s for s, _ in alone.rank(q, depth, "dense")[0]]
    bm25 = [s for s, _ in alone.rank(q, depth, "bm25")[0]]
    w = alone.config.fusion_weights
    expected = reciprocal_rank_fusion([dense, bm25], alone.config.rrf_k, [w.dense, w.bm25])[:5]
    got = alone.rank(q, 5, "hybrid")[0]
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [x for _, x in got] == pytest.approx([x for _, x in expected])


def test_k_larger_than_the_corpus_returns_every_document_once(retriever):
    for mode in ("dense", "hybrid"):
        ranked = retriever.rank(["headache"], k=500, mode=mode)[0]
        assert len(ranked) == len({s for s, _ in ranked}) == len(retriever.live)


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(T0Error, match="no 'summaries' index"):
        Retriever("summaries", DataPaths(tmp_path))


def test_a_retriever_refuses_an_index_built_with_another_embedding_model(built):
    from t0_pipeline.artifacts import T0Error
    from t0_pipeline.config import EmbeddingConfig
    from t0_pipeline.retrieval.retrieve import Retriever

    cfg, paths = built
    with pytest.raises(
        T0Error,
        match=r"the 'summaries' index was built with embedding model 'all-MiniLM-L6-v2 \(bundled\) "
        r"\[int8 documents\]'"
        r", but embedding.model is 'sentence-transformers/all-mpnet-base-v2 \[int8 documents\]'; "
        r"rebuild it",
    ):
        Retriever(
            "summaries", paths, EmbeddingConfig(model="sentence-transformers/all-mpnet-base-v2")
        )


def test_hybrid_search_of_the_summaries_fuses_the_full_pages_and_says_when_they_are_missing(
    built, embedder, tmp_path
):
    import shutil

    from t0_pipeline.config import RetrievalConfig
    from t0_pipeline.retrieval.retrieve import Retriever

    cfg, paths = built
    fused = Retriever(
        "summaries", paths, cfg.embedding, cfg.chroma, RetrievalConfig(), embedder=embedder
    )
    alone = Retriever(
        "summaries",
        paths,
        cfg.embedding,
        cfg.chroma,
        RetrievalConfig(fuse_full_pages=False),
        embedder=embedder,
    )
    query = ["I sneeze all the time and my eyes itch and water every summer"]
    with_full, without = fused.rank(query, 10, "hybrid")[0], alone.rank(query, 10, "hybrid")[0]
    assert with_full[0][0] == without[0][0] == "hay-fever"
    full = Retriever("full", paths, cfg.embedding, cfg.chroma, embedder=embedder)
    full_dense = [s for s, _ in full.rank(query, 50, "dense")[0]]
    full_bm25 = [s for s, _ in full.rank(query, 50, "bm25")[0]]
    # weighted RRF over four rankings: the top document gains exactly its two full-page terms
    w, k = RetrievalConfig().fusion_weights, RetrievalConfig().rrf_k
    assert with_full[0][1] == pytest.approx(
        without[0][1]
        + w.full_dense / (k + full_dense.index("hay-fever") + 1)
        + w.full_bm25 / (k + full_bm25.index("hay-fever") + 1)
    )
    assert all(slug in fused.live for slug, _ in with_full)
    assert fused.rank(query, 10, "dense") == alone.rank(query, 10, "dense")  # only hybrid fuses

    # summaries indexed without the full pages: one clear error naming the setting
    copy = DataPaths(tmp_path / "data")
    shutil.copytree(paths.root / "index", copy.root / "index")
    (copy.root / "index" / "full.manifest.json").unlink()
    lonely = Retriever(
        "summaries", copy, cfg.embedding, cfg.chroma, RetrievalConfig(), embedder=embedder
    )
    with pytest.raises(T0Error, match="retrieval.fuse_full_pages: false"):
        lonely.rank(query, 5, "hybrid")
