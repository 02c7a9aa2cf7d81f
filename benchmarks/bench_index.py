"""Index and query benchmarks, with baselines measured in the same run.

For each corpus (the bundled sample; ../shared/bench/nhs/conditions.jsonl when present):
  1. bare encode: the index's own document encoder encoding the very chunks the index will hold
     (the float reference method is in bench_retrieval.py);
  2. full dense index build (chunking + encoding + Chroma writes + manifest), fresh store;
     target: build ≤ 1.15 × bare encode;
  3. re-index after one page changes; target: ≤ 5% of the full build;
  4. query latency p50/p99 per mode (k=5, one query per call); target: hybrid p50 ≤ 25 ms;
  5. p@k on the sample query set per index and mode (for the NHS corpus, the sample
     queries whose target slug exists there).

    python benchmarks/bench_index.py [--corpus sample|nhs|all] [--queries 300]

Figures are printed as tables and written to benchmarks/results/<corpus>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl  # noqa: E402

from t0_pipeline.artifacts import sha256_text  # noqa: E402
from t0_pipeline.config import (  # noqa: E402
    ChromaConfig,
    ChunkConfig,
    CleanConfig,
    DataPaths,
    EmbeddingConfig,
    RetrievalEvalConfig,
    SourceConfig,
    SummaryConfig,
)
from t0_pipeline.corpus.clean import run_clean  # noqa: E402
from t0_pipeline.corpus.crawl import run_crawl  # noqa: E402
from t0_pipeline.retrieval.chroma_store import chroma_client  # noqa: E402
from t0_pipeline.retrieval.chunk import chunk_documents  # noqa: E402
from t0_pipeline.retrieval.embed import chunk_token_limit, document_encoder, load_embedder  # noqa: E402
from t0_pipeline.retrieval.evaluate import evaluate_retrieval, load_queries, sample_queries_path  # noqa: E402
from t0_pipeline.retrieval.index import build_bm25_index, build_dense_index  # noqa: E402
from t0_pipeline.retrieval.retrieve import Retriever  # noqa: E402
from t0_pipeline.synthetic.summarise import run_summarise  # noqa: E402

NHS = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "nhs" / "conditions.jsonl"
RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def prepare(corpus: str, root: Path) -> DataPaths:
    paths = DataPaths(root)
    source = SourceConfig() if corpus == "sample" else SourceConfig(kind="pages", location=str(NHS))
    run_crawl(source, paths)
    run_clean(paths, source, CleanConfig())
    run_summarise(paths, SummaryConfig())  # extractive
    return paths


def bench_corpus(corpus: str, n_queries: int) -> dict:
    emb_cfg = EmbeddingConfig()
    model = load_embedder(emb_cfg)
    model.encode(["warm-up"] * 8)
    out: dict = {"corpus": corpus}
    with tempfile.TemporaryDirectory() as tmp:
        paths = prepare(corpus, Path(tmp) / "data")
        docs = pl.read_parquet(paths.conditions)
        size = chunk_token_limit(model)
        chunks = chunk_documents(
            docs["slug"].to_list(), docs["text"].to_list(), model.tokenizer, size, 50
        )
        out.update(
            documents=docs.height,
            chunks=len(chunks),
            mean_doc_chars=round(docs["text"].str.len_chars().mean()),
        )
        print(f"\n== {corpus}: {docs.height} documents, {len(chunks)} chunks of ≤{size} tokens")

        # what the build encodes with (int8 on CPU by default)
        encoder = document_encoder(emb_cfg, model)
        encoder.encode([c.text for c in chunks[:8]])
        t = time.perf_counter()
        encoder.encode(
            [c.text for c in chunks], batch_size=emb_cfg.batch_size, convert_to_numpy=True
        )
        bare = time.perf_counter() - t

        chroma = ChromaConfig()
        t = time.perf_counter()
        client = chroma_client(chroma, paths)  # embedded store start-up: paid once per process
        startup = time.perf_counter() - t
        t = time.perf_counter()
        stats = build_dense_index(
            docs, "full", paths, emb_cfg, ChunkConfig(), chroma, embedder=model, client=client
        )
        build = time.perf_counter() - t + startup
        assert stats.chunks == len(chunks)

        changed = docs.with_columns(
            pl.when(pl.col("slug") == docs["slug"][0])
            .then(pl.col("text") + "\nEdited sentence about symptoms.")
            .otherwise(pl.col("text"))
            .alias("text")
        )
        changed = changed.with_columns(
            pl.col("text").map_elements(sha256_text, return_dtype=pl.String).alias("content_hash")
        )
        t = time.perf_counter()
        restats = build_dense_index(
            changed, "full", paths, emb_cfg, ChunkConfig(), chroma, embedder=model
        )
        reindex = time.perf_counter() - t
        # put the original back so retrieval below matches the corpus on disk
        build_dense_index(docs, "full", paths, emb_cfg, ChunkConfig(), chroma, embedder=model)

        summaries = pl.read_parquet(paths.summaries)
        build_dense_index(
            summaries, "summaries", paths, emb_cfg, ChunkConfig(), chroma, embedder=model
        )
        bm25_info = build_bm25_index(docs, "full", paths)
        build_bm25_index(summaries, "summaries", paths)

        out["index"] = {
            "bare_encode_s": round(bare, 2),
            "build_s": round(build, 2),
            "build_over_encode": round(build / bare, 3),
            "store_startup_s": round(startup, 3),
            "build_over_encode_after_startup": round((build - startup) / bare, 3),
            "reindex_one_page_s": round(reindex, 3),
            "reindex_share_of_build": round(reindex / build, 4),
            "reindex_embedded_chunks": restats.embedded_chunks,
            "bm25_build_s": round(bm25_info["seconds"], 3),
        }
        print(
            f"bare encode {bare:.2f}s | index build {build:.2f}s = {build / bare:.3f}× encode "
            f"(target ≤ 1.15); of which Chroma start-up {startup:.2f}s, so "
            f"{(build - startup) / bare:.3f}× once the store is open"
        )
        print(
            f"re-index after one page changed: {reindex:.3f}s = {reindex / build:.2%} of a full "
            f"build (target ≤ 5%), {restats.embedded_chunks} chunks re-embedded | bm25 build "
            f"{bm25_info['seconds']:.3f}s"
        )

        sample = [json.loads(line) for line in sample_queries_path().read_text().splitlines()]
        texts = [q["query"] for q in sample]
        texts = (texts * (n_queries // len(texts) + 1))[:n_queries]
        retriever = Retriever("full", paths, emb_cfg, chroma, embedder=model)
        latency = {}
        print(f"\nquery latency, k=5, {n_queries} single-query calls (ms)")
        print(f"{'mode':<8}{'p50':>8}{'p99':>8}{'mean':>8}")
        for mode in ("dense", "bm25", "hybrid"):
            retriever.rank(texts[:3], 5, mode)  # warm caches (collection handle, bm25 load)
            times = []
            for q in texts:
                t = time.perf_counter()
                retriever.rank([q], 5, mode)
                times.append((time.perf_counter() - t) * 1000)
            latency[mode] = {
                "p50_ms": round(percentile(times, 50), 2),
                "p99_ms": round(percentile(times, 99), 2),
                "mean_ms": round(statistics.mean(times), 2),
            }
            row = latency[mode]
            print(f"{mode:<8}{row['p50_ms']:>8.2f}{row['p99_ms']:>8.2f}{row['mean_ms']:>8.2f}")
        out["latency"] = latency

        slugs = set(docs["slug"])
        ev = RetrievalEvalConfig()
        usable = [
            q for q in load_queries(sample_queries_path(), ev) if any(t in slugs for t in q.targets)
        ]
        retrievers = {
            i: Retriever(i, paths, emb_cfg, chroma, embedder=model) for i in ("full", "summaries")
        }
        report = evaluate_retrieval(paths, ev, retrievers, usable)
        out["p_at_k"] = report.table.to_dicts()
        print(
            f"\np@k on {len(usable)} sample queries whose condition is in this "
            f"corpus\n{report.markdown}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", choices=["sample", "nhs", "all"], default="all")
    parser.add_argument(
        "--queries", type=int, default=300, help="single-query calls per mode for latency"
    )
    args = parser.parse_args()
    corpora = ["sample", "nhs"] if args.corpus == "all" else [args.corpus]
    if "nhs" in corpora and not NHS.exists():
        print(f"skipping nhs: {NHS} not found", file=sys.stderr)
        corpora.remove("nhs")
    RESULTS.mkdir(exist_ok=True)
    for corpus in corpora:
        result = bench_corpus(corpus, args.queries)
        (RESULTS / f"{corpus}.json").write_text(json.dumps(result, indent=2))
    print(f"\nresults written to {RESULTS}/")


if __name__ == "__main__":
    main()
