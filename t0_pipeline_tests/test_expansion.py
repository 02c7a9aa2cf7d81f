"""Document expansion: the training queries written for a document are indexed with it (extra
vectors, extra BM25 words), incrementally, never the evaluation split, and never served as text."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest

from t0_pipeline.artifacts import sha256_text
from t0_pipeline.config import DataPaths, EmbeddingConfig, ExpansionConfig, PipelineConfig
from t0_pipeline.corpus_to_index import build_indexes
from t0_pipeline.retrieval.chroma_store import chroma_client
from t0_pipeline.retrieval.expansion import leaked_queries
from t0_pipeline.retrieval.index import read_manifest
from t0_pipeline.retrieval.retrieve import Retriever
from t0_pipeline_tests.test_index import CountingEmbedder

# written in the clinician's words; the queries below are a lay person's
DOCS = {
    "pityriasis-rosea": "Pityriasis rosea begins with a single oval herald patch, followed by a "
    "scaly eruption in a fir-tree distribution on the trunk. It resolves within twelve weeks.",
    "hyperhidrosis": "Hyperhidrosis is excessive perspiration of the axillae, palms and soles "
    "beyond thermoregulatory need. Aluminium chloride antiperspirants are first-line.",
    "bruxism": "Bruxism is clenching or grinding of the teeth, often nocturnal, causing masseter "
    "hypertrophy, temporomandibular joint pain and enamel wear.",
    "tinnitus": "Tinnitus is the perception of sound without an external source. It is associated "
    "with sensorineural hearing loss and ototoxic medication.",
    "plantar-fasciitis": "Plantar fasciitis is degeneration of the plantar aponeurosis at its "
    "calcaneal insertion. Pain is worst on first weight bearing after rest.",
    "gord": "Gastro-oesophageal reflux disease is retrograde flow of gastric contents causing "
    "pyrosis and regurgitation, aggravated by recumbency.",
}
TRAIN = {
    "pityriasis-rosea": [
        "I got one big pink spot on my tummy and a week later loads of little ones on my back",
        "a patch on my chest then lots of small flaky pink marks spread everywhere",
    ],
    "hyperhidrosis": [
        "my armpits and hands are always dripping wet even when I'm cold",
        "I sweat through my shirt every day and my palms drip",
    ],
    "bruxism": [
        "my jaw aches every morning and my partner says I make a noise at night with my teeth",
        "my teeth feel worn down and my jaw muscles are sore when I wake",
    ],
    "tinnitus": [
        "I hear a constant ringing in my ears when it's quiet",
        "there's a buzzing noise in my head that nobody else can hear",
    ],
    "plantar-fasciitis": [
        "my heel hurts like a knife when I first get out of bed",
        "the bottom of my foot is sore for the first few steps in the morning",
    ],
    "gord": [
        "burning in my chest after dinner, worse when I lie down",
        "sour taste coming up into my throat at night",
    ],
}
EVAL = {
    "pityriasis-rosea": "started with one pink blotch on my stomach then small scaly spots all "
    "over my back",
    "hyperhidrosis": "my hands are so sweaty I can't hold a pen, and my underarms soak my top",
    "bruxism": "I wake up with a sore jaw and headache and my teeth hurt",
    "tinnitus": "a high pitched whistle in my ears that won't go away",
    "plantar-fasciitis": "stabbing pain under my heel in the morning",
    "gord": "heartburn and acid coming up my throat when I lie flat",
}


def write_corpus(paths: DataPaths) -> None:
    df = pl.DataFrame(
        {
            "slug": list(DOCS),
            "title": ["Topic"] * len(DOCS),
            "url": [f"u/{s}" for s in DOCS],
            "text": list(DOCS.values()),
            "content_hash": [sha256_text(t) for t in DOCS.values()],
        }
    )
    paths.conditions.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(paths.conditions)
    df.write_parquet(paths.summaries)


def write_split(paths: DataPaths, split: str, rows: dict[str, list[str]]) -> None:
    path = paths.synthetic_queries(split)
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        [{"slug": s, "query": q, "split": split} for s, qs in rows.items() for q in qs]
    ).write_parquet(path)


def ranks(paths, cfg, embedder, mode: str) -> dict[str, int | None]:
    retriever = Retriever("summaries", paths, cfg.embedding, cfg.chroma, cfg.retrieval, embedder)
    out = {}
    for slug, query in EVAL.items():
        got = [s for s, _ in retriever.rank([query], len(DOCS), mode)[0]]
        out[slug] = got.index(slug) + 1 if slug in got else None
    return out


@pytest.fixture
def corpus(tmp_path):
    paths = DataPaths(tmp_path / "data")
    write_corpus(paths)
    write_split(paths, "train", TRAIN)
    # the evaluation split must never reach an index
    write_split(paths, "eval", {s: [q] for s, q in EVAL.items()})
    return paths


def test_documents_are_found_by_the_words_written_for_them(corpus, embedder):
    off = PipelineConfig()
    build_indexes(off, corpus, embedder=embedder)
    bm25_before = ranks(corpus, off, embedder, "bm25")
    # the lay words miss the clinician's text: the test could fail
    assert sum(r is None for r in bm25_before.values()) >= 2

    on = PipelineConfig(expansion=ExpansionConfig(enabled=True))
    dense, _ = build_indexes(on, corpus, embedder=embedder)
    assert dense["summaries"].expansions == 12 and "12 expansions" in dense["summaries"].summary()
    assert all(r is not None and r <= 2 for r in ranks(corpus, on, embedder, "bm25").values())
    assert set(ranks(corpus, on, embedder, "dense").values()) == {1}
    assert set(ranks(corpus, on, embedder, "hybrid").values()) == {1}

    manifest = read_manifest(corpus.index_manifest("summaries"))
    assert manifest["expansion"]["queries"] == 12 and manifest["expansion"]["documents"] == 6
    assert manifest["expansion"]["source"] == str(corpus.synthetic_queries("train"))
    stored = chroma_client(on.chroma, corpus).get_collection(manifest["collection"])
    got = stored.get(include=["documents", "metadatas"])
    expanded = [d for d, m in zip(got["documents"], got["metadatas"]) if m["kind"] == "expansion"]
    assert sorted(expanded) == sorted(q for qs in TRAIN.values() for q in qs)
    assert not set(EVAL.values()) & set(got["documents"])  # the evaluation split is never read
    # what retrieval serves is the document's own text
    retriever = Retriever("summaries", corpus, on.embedding, on.chroma, on.retrieval, embedder)
    hit = retriever.search(EVAL["tinnitus"], k=1)[0]
    assert hit.slug == "tinnitus" and hit.text == DOCS["tinnitus"]
    # scoring the training texts themselves is flagged; the evaluation split is not
    manifests = {"summaries": manifest}
    assert leaked_queries(list(EVAL.values()), manifests) == {"summaries": 0}
    assert leaked_queries(TRAIN["gord"] + ["other"], manifests) == {"summaries": 2}


def test_new_queries_reembed_only_their_document_and_turning_off_drops_them(corpus, embedder):
    counting = CountingEmbedder(embedder)
    # float documents: the counting wrapper sees every encode
    floats = EmbeddingConfig(quantize="none")
    on = PipelineConfig(
        embedding=floats, expansion=ExpansionConfig(enabled=True, indexes=["summaries"])
    )
    build_indexes(on, corpus, embedder=counting)
    counting.encoded.clear()
    write_split(corpus, "train", {**TRAIN, "bruxism": [*TRAIN["bruxism"], "I grind my teeth"]})
    dense, _ = build_indexes(on, corpus, embedder=counting)
    stats = dense["summaries"]
    assert stats.changed == ["bruxism"] and stats.unchanged == 5
    # the full pages are not expanded: embedded once, unchanged now
    assert dense["full"].expansions == 0 and dense["full"].embedded_chunks == 0
    assert sorted(counting.encoded) == sorted(
        [DOCS["bruxism"], *TRAIN["bruxism"], "I grind my teeth"]
    )

    dense, _ = build_indexes(PipelineConfig(embedding=floats), corpus, embedder=counting)
    manifest = read_manifest(corpus.index_manifest("summaries"))
    assert manifest["expansion"]["enabled"] is False and manifest["expansion"]["queries"] == 0
    assert manifest["docs"] == {s: sha256_text(t) for s, t in DOCS.items()}
    got = chroma_client(on.chroma, corpus).get_collection(manifest["collection"]).get()
    assert len(got["ids"]) == dense["summaries"].chunks == len(DOCS)  # expansions collected


def test_a_named_query_file_that_is_missing_stops_before_anything_is_rewritten(tmp_path):
    pages = tmp_path / "pages.jsonl"
    pages.write_text(
        "".join(
            json.dumps({"slug": s, "title": s, "url": f"https://x/{s}", "text": t}) + "\n"
            for s, t in DOCS.items()
        )
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("T0_CONFIG", None)
    cmd = [sys.executable, "-m", "t0_pipeline.cli", "index", "--pages", str(pages)]
    cmd += ["--data-dir", str(tmp_path / "d"), "--expand-from", str(tmp_path / "nope.jsonl")]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "expansion.source" in lines[0] and "nope.jsonl" in lines[0]
    assert not (tmp_path / "d" / "pages.jsonl").exists()


def test_expanded_indexes_depend_on_the_synthetic_queries(tmp_path):
    config = tmp_path / "t0.yaml"
    config.write_text("expansion:\n  enabled: true\n  indexes: [summaries]\n")
    probe = (
        "from t0_pipeline.definitions import defs\n"
        "import dagster as dg\n"
        "g = defs.resolve_asset_graph()\n"
        "for n in ('summary_index', 'summary_bm25', 'full_page_index', 'full_page_bm25'):\n"
        "    print(n, sorted(k.to_user_string() for k in g.get(dg.AssetKey(n)).parent_keys))\n"
    )
    env = {**os.environ, "T0_CONFIG": str(config), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    parents = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    assert "synthetic_queries" in parents["summary_index"]
    assert "synthetic_queries" in parents["summary_bm25"]
    assert "synthetic_queries" not in parents["full_page_index"]
    assert "synthetic_queries" not in parents["full_page_bm25"]
