"""Chroma index: incremental by content hash, crash-safe commits, config changes, Chroma server."""

from __future__ import annotations

import subprocess
import sys
import time

import polars as pl
import pytest

from t0_pipeline.artifacts import T0Error, sha256_text
from t0_pipeline.config import (
    ChromaConfig,
    ChunkConfig,
    DataPaths,
    EmbeddingConfig,
    RetrievalConfig,
)
from t0_pipeline.retrieval.chroma_store import chroma_client
from t0_pipeline.retrieval.index import build_bm25_index, build_dense_index, read_manifest
from t0_pipeline.retrieval.retrieve import Retriever

TOPICS = {
    "rash": "An itchy red rash spreads over the arms and chest after contact with a plant.",
    "cough": "A dry cough that lasts for weeks, worse at night, with a tickle in the throat.",
    "knee": "Knee pain and swelling after a sports injury, the joint gives way when walking.",
    "eye": "A red gritty eye with sticky discharge that glues the lashes together in the morning.",
    "long": " ".join(
        f"Part {i}: stomach cramps and diarrhoea after eating reheated rice, section {i}."
        for i in range(30)
    ),
}


def docs_frame(texts: dict[str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "slug": list(texts),
            "title": [s.title() for s in texts],
            "url": [f"u/{s}" for s in texts],
            "text": list(texts.values()),
            "content_hash": [sha256_text(t) for t in texts.values()],
        }
    )


class CountingEmbedder:
    """The real model, counting what it is asked to encode."""

    def __init__(self, model):
        self.model, self.encoded = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode(self, texts, **kw):
        self.encoded.extend(texts)
        return self.model.encode(texts, **kw)


@pytest.fixture
def setup(tmp_path, embedder):
    paths = DataPaths(tmp_path)
    chunking = ChunkConfig(size=32, overlap=8)
    counting = CountingEmbedder(embedder)

    def build(texts, chroma=None):
        counting.encoded.clear()
        df = docs_frame(texts)
        paths.conditions.parent.mkdir(parents=True, exist_ok=True)
        df.write_parquet(paths.conditions)
        # float documents: the counting wrapper must see every encode (int8 would encode with a
        # quantised copy)
        return build_dense_index(
            df,
            "full",
            paths,
            EmbeddingConfig(quantize="none"),
            chunking,
            chroma or ChromaConfig(),
            embedder=counting,
        )

    return paths, build, counting


def collection_slugs(paths, name):
    got = chroma_client(ChromaConfig(), paths).get_collection(name).get(include=["metadatas"])
    return sorted({(m["slug"], m["doc_hash"]) for m in got["metadatas"]})


def test_incremental_update_embeds_only_what_changed(setup):
    paths, build, counting = setup
    first = build(TOPICS)
    # the long document has several chunks
    assert first.embedded_chunks == first.chunks > len(TOPICS)
    assert sorted(first.added) == sorted(TOPICS)

    unchanged = build(TOPICS)
    assert unchanged.embedded_chunks == 0 and counting.encoded == [] and unchanged.unchanged == 5

    edited = {
        **{k: v for k, v in TOPICS.items() if k != "eye"},
        "rash": TOPICS["rash"] + " It blisters.",
        "burn": "A scald from boiling water leaves the skin red and blistered.",
    }
    second = build(edited)
    assert second.changed == ["rash"] and second.added == ["burn"] and second.removed == ["eye"]
    assert len(counting.encoded) == second.embedded_chunks == 2  # one chunk each for rash and burn
    assert collection_slugs(paths, second.collection) == sorted(
        (s, sha256_text(t)) for s, t in edited.items()
    )
    assert read_manifest(paths.index_manifest("full"))["docs"] == {
        s: sha256_text(t) for s, t in edited.items()
    }


def test_crash_before_commit_keeps_the_previous_index_and_next_run_recovers(
    setup, monkeypatch, embedder
):
    paths, build, counting = setup
    build(TOPICS)
    edited = {**TOPICS, "rash": "Completely new text about a sunburn on the shoulders."}
    import t0_pipeline.retrieval.index as index_module

    def crash(*args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(index_module, "write_json", crash)
    with pytest.raises(RuntimeError):
        build(edited)
    monkeypatch.undo()
    # the previous manifest still rules: searches see the old rash text, never the half-committed
    # new one, although conditions.parquet already holds the new text
    assert (
        "sunburn" in pl.read_parquet(paths.conditions).filter(pl.col("slug") == "rash")["text"][0]
    )
    retriever = Retriever("full", paths, embedder=embedder)
    hits = retriever.rank(["itchy red rash after touching a plant"], k=5, mode="dense")[0]
    assert hits[0][0] == "rash" and len({s for s, _ in hits}) == 5
    assert (
        retriever.search("itchy red rash after touching a plant", k=1, mode="dense")[0].text
        == TOPICS["rash"]
    )
    # the next run finds the new chunks complete, commits them without re-embedding, and removes the
    # old ones
    recovered = build(edited)
    assert recovered.embedded_chunks == 0 and recovered.changed == ["rash"]
    assert ("rash", sha256_text(TOPICS["rash"])) not in collection_slugs(
        paths, recovered.collection
    )


def test_a_corpus_rewritten_ahead_of_its_indexes_is_never_served(setup, embedder):
    """Crash after the corpus files were rewritten (and after the dense index, before BM25): what is
    served stays one consistent version, with its text and URLs."""
    paths, build, _ = setup
    build(TOPICS)
    build_bm25_index(docs_frame(TOPICS), "full", paths)
    edited = {
        **{k: v for k, v in TOPICS.items() if k != "eye"},
        "rash": "A sunburn on the shoulders that peels.",
    }
    # the clean stage's new output; no index update yet
    docs_frame(edited).write_parquet(paths.conditions)
    eye = Retriever("full", paths, embedder=embedder).search(
        "red gritty eye with sticky discharge", k=1, mode="hybrid"
    )
    assert eye[0].slug == "eye" and eye[0].text == TOPICS["eye"] and eye[0].url == "u/eye"

    build(edited)  # the dense index commits the new version; BM25 has not been rebuilt yet
    retriever = Retriever("full", paths, embedder=embedder)
    for mode in ("hybrid", "bm25", "dense"):
        hits = retriever.search(
            "red gritty eye with sticky discharge and itchy rash", k=5, mode=mode
        )
        assert "eye" not in [h.slug for h in hits]  # removed in the committed version
        assert all(h.text and h.url for h in hits)
        assert all(h.text == edited[h.slug] for h in hits)
    # old snapshot gone
    assert len(list(paths.index_manifest("full").parent.glob("full.docs-*.parquet"))) == 1


def test_changing_distance_builds_a_new_collection_and_drops_the_old(setup):
    paths, build, _ = setup
    l2 = build(TOPICS)
    cosine = build(TOPICS, ChromaConfig(distance="cosine"))
    assert cosine.collection != l2.collection and cosine.rebuilt
    names = [c.name for c in chroma_client(ChromaConfig(), paths).list_collections()]
    assert names == [cosine.collection]


def test_bm25_index_is_saved_with_slugs(tmp_path):
    paths = DataPaths(tmp_path)
    info = build_bm25_index(docs_frame(TOPICS), "full", paths)
    assert info["documents"] == 5 and (paths.bm25_dir("full") / "t0_docs.json").exists()


def test_unreachable_chroma_server_is_a_clear_error(tmp_path):
    with pytest.raises(T0Error, match="cannot reach the Chroma server at 127.0.0.1:9"):
        chroma_client(ChromaConfig(host="127.0.0.1", port=9), DataPaths(tmp_path))


@pytest.fixture
def chroma_server(tmp_path):
    from t0_pipeline_tests.chroma_server import ChromaServer

    server = ChromaServer(tmp_path / "chroma-server").start()
    yield server
    server.stop()


@pytest.mark.slow
def test_index_and_search_through_a_real_chroma_server(tmp_path, embedder, chroma_server):
    chroma = chroma_server.config
    paths = DataPaths(tmp_path / "data")
    df = docs_frame(TOPICS)
    paths.conditions.parent.mkdir(parents=True)
    df.write_parquet(paths.conditions)
    stats = build_dense_index(
        df, "full", paths, EmbeddingConfig(), ChunkConfig(size=32, overlap=8), chroma, embedder
    )
    assert not (paths.root / "index" / "chroma").exists()  # nothing embedded locally
    hits = Retriever("full", paths, chroma=chroma, embedder=embedder).search(
        "sticky eye stuck shut in the morning", 2, "dense"
    )
    assert (
        hits[0].slug == "eye"
        and stats.chunks == chroma_client(chroma, paths).get_collection(stats.collection).count()
    )


@pytest.mark.slow
def test_chroma_server_killed_mid_build_stops_with_one_line_and_a_rerun_completes(
    tmp_path, embedder, chroma_server, monkeypatch
):
    """Version 1 is built on the server; version 2 (every document changed) is being written when
    the server is SIGKILLed. The build stops at once with one line; the manifest still names
    version 1, which serves as before once the server is back; a re-run completes version 2 and
    encodes only what the killed run had not written."""
    from chromadb.api.models.Collection import Collection

    chroma = chroma_server.config.model_copy(update={"write_batch": 4})
    paths = DataPaths(tmp_path / "data")
    chunking = ChunkConfig(size=32, overlap=8)
    # float documents: the counting wrapper must see every encode
    emb = EmbeddingConfig(quantize="none")
    v1 = docs_frame(TOPICS)
    build_dense_index(v1, "full", paths, emb, chunking, chroma, embedder)
    before = read_manifest(paths.index_manifest("full"))
    # a reader asking the server's HNSW index on every search, as a large index's does
    served = Retriever(
        "full",
        paths,
        emb,
        chroma=chroma,
        config=RetrievalConfig(exact_max_chunks=0),
        embedder=embedder,
    )
    assert served.search("itchy red rash from a plant", 5, "dense")[0].slug == "rash"

    changed = {slug: text + " It may come back." for slug, text in TOPICS.items()}
    changed["rash"] += " Blisters may weep."
    v2 = docs_frame(changed)
    upserts, upsert = [0], Collection.upsert

    def upsert_then_die(self, *args, **kwargs):
        written = upsert(self, *args, **kwargs)
        upserts[0] += 1
        if upserts[0] == 1:  # the first batch of version 2 is written; then the server dies
            chroma_server.kill()
        return written

    monkeypatch.setattr(Collection, "upsert", upsert_then_die)
    started = time.monotonic()
    with pytest.raises(T0Error) as caught:
        build_dense_index(v2, "full", paths, emb, chunking, chroma, embedder)
    message = str(caught.value)
    assert time.monotonic() - started < 60 and "\n" not in message
    assert f"Chroma server at 127.0.0.1:{chroma.port} stopped answering" in message, message
    assert "previous version is unchanged" in message and "re-run" in message
    assert read_manifest(paths.index_manifest("full")) == before  # nothing committed
    with pytest.raises(T0Error, match="stopped answering while searching the 'full' index"):
        served.search("itchy red rash from a plant", 5, "dense")

    monkeypatch.setattr(Collection, "upsert", upsert)
    chroma_server.start()  # the same folder: what the server had written is still there
    rash = served.search("itchy red rash from a plant", 5, "dense")[0]  # the same reader
    assert rash.slug == "rash" and "Blisters" not in rash.text  # version 1 serves

    counting = CountingEmbedder(embedder)
    stats = build_dense_index(v2, "full", paths, emb, chunking, chroma, counting)
    after = read_manifest(paths.index_manifest("full"))
    assert after["docs"] == dict(zip(v2["slug"], v2["content_hash"]))
    assert stats.embedded_chunks == len(counting.encoded) > 0
    # the batch written before the kill (whole documents) is not encoded again
    whole_v2 = CountingEmbedder(embedder)
    build_dense_index(
        v2,
        "full",
        DataPaths(tmp_path / "fresh"),
        emb,
        chunking,
        ChromaConfig(write_batch=4),
        whole_v2,
    )
    assert len(counting.encoded) < len(whole_v2.encoded)


KILL_AT_UPSERT = """import os
if os.environ.get("T0_TEST_KILL_AT_UPSERT"):
    from chromadb.api.models.Collection import Collection

    calls, at, upsert = [0], int(os.environ["T0_TEST_KILL_AT_UPSERT"]), Collection.upsert

    def killing_upsert(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), 9)  # SIGKILL while writing this batch: nothing after it runs
        return upsert(self, *args, **kwargs)

    Collection.upsert = killing_upsert
"""


@pytest.mark.slow
# inside the full-page index (4 batches); inside the summaries index
@pytest.mark.parametrize("kill_at", [2, 6])
def test_a_killed_index_build_resumes_without_redoing_written_batches(tmp_path, kill_at):
    """`t0 index` SIGKILLed at a chosen batch, then run again: the result equals an uninterrupted
    build, and the batches written before the kill are not encoded again."""
    import os
    import re

    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(KILL_AT_UPSERT)
    config = tmp_path / "t0.yaml"
    config.write_text("chroma: {write_batch: 16}\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(inject)}

    def t0_index(data, **extra):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "t0_pipeline.cli",
                "index",
                "--data-dir",
                str(data),
                "--config",
                str(config),
            ],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=600,
        )

    whole = t0_index(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    killed = t0_index(tmp_path / "killed", T0_TEST_KILL_AT_UPSERT=str(kill_at))
    assert killed.returncode == -9
    # was the kill in the second index?
    full_done = DataPaths(tmp_path / "killed").index_manifest("full").exists()
    resumed = t0_index(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr

    def embedded(out: str) -> dict[str, tuple[int, int]]:
        return {
            m[0]: (int(m[2]), int(m[1]))
            for m in re.findall(
                r"dense (\w+): \d+ documents / (\d+) chunks; embedded "
                r"(\d+) chunks",
                out,
            )
        }

    total, again = embedded(whole.stdout), embedded(resumed.stdout)
    for index in ("full", "summaries"):
        before = read_manifest(DataPaths(tmp_path / "whole").index_manifest(index))
        after = read_manifest(DataPaths(tmp_path / "killed").index_manifest(index))
        assert after["docs"] == before["docs"] and after["n_chunks"] == before["n_chunks"]
    # whole batches of 16 chunks at least (a batch ends on a document)
    written_before_kill = (kill_at - 1) * 16
    assert full_done == (kill_at == 6)
    if not full_done:  # killed in the full-page index: its finished batches were kept
        assert again["full"][0] <= total["full"][0] - written_before_kill
        assert again["summaries"][0] == total["summaries"][0]
    # killed in the summaries index: the full-page index was finished and is not touched again
    else:
        assert again["full"][0] == 0 and again["summaries"][0] < total["summaries"][0]
