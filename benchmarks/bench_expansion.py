"""Document expansion (doc2query) on the real NHS pages: p@k with and without, on our test sets.

    python benchmarks/bench_expansion.py [--per-document 16]

The pipeline expands each document with the synthetic *training* queries written for it and scores
retrieval on the *evaluation* split. Here, with no frontier model to write training queries, our
own development sets stand in for them (benchmarks/queries/patient_dev.jsonl and hard_dev.jsonl:
people's words for 277 of the ~700 conditions) and the test sets are scored (patient_test,
hard_test: other descriptions, partly of the same conditions). Two corpora:

  * all pages, only the development sets' conditions expanded: the real index, but the expanded
    documents compete with others that were not, which flatters expansion on the conditions it
    covers (hard_test's are all covered) and costs the others (most of patient_test's);
  * only the conditions the development sets cover, every document expanded: a fair comparison,
    as when synthetic queries cover the whole corpus, on an easier (smaller) corpus.

Every figure is with the project's defaults otherwise (int8 documents, hybrid fusion as
configured). Printed and written to benchmarks/results/expansion.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl  # noqa: E402
from bench_retrieval import KS, NHS, QUERY_SETS, prepare  # noqa: E402

from t0_pipeline.config import (  # noqa: E402
    DataPaths,
    ExpansionConfig,
    PipelineConfig,
    RetrievalEvalConfig,
)

SOURCES = ("dev", "hard_dev")
SCORED = ("test", "hard_test")


def expansion_file(root: Path) -> Path:
    """The development sets as one training-query file (query + condition)."""
    out = root / "expansion_queries.jsonl"
    with open(out, "w", encoding="utf-8") as fh:
        for name in SOURCES:
            fh.write(QUERY_SETS[name].read_text(encoding="utf-8"))
    return out


def restrict(paths: DataPaths, keep: set[str]) -> None:
    """Keep only the ``keep`` documents in the corpus files (conditions and summaries)."""
    for path in (paths.conditions, paths.summaries):
        pl.read_parquet(path).filter(pl.col("slug").is_in(sorted(keep))).write_parquet(path)


def score(paths: DataPaths, cfg: PipelineConfig, embedder, sets: dict) -> dict:
    from t0_pipeline.retrieval.evaluate import evaluate_retrieval
    from t0_pipeline.retrieval.retrieve import Retriever

    retrievers = {
        i: Retriever(i, paths, cfg.embedding, cfg.chroma, cfg.retrieval, embedder=embedder)
        for i in ("full", "summaries")
    }
    corpus = set(retrievers["full"].live)
    ev = RetrievalEvalConfig(ks=KS)
    out = {}
    for name, queries in sets.items():
        kept = [q for q in queries if set(q.targets) & corpus]
        table = evaluate_retrieval(
            paths, ev, retrievers, kept, out_dir=paths.root / "eval" / name
        ).table
        out[name] = {
            f"{r['index']} · {r['mode']}": {k: r[f"p@{k}"] for k in KS} | {"queries": len(kept)}
            for r in table.iter_rows(named=True)
        }
    return out


def run_corpus(label: str, paths: DataPaths, source: Path, per_doc: int, embedder, sets) -> dict:
    from t0_pipeline.corpus_to_index import build_indexes

    results = {}
    for name, expansion in (
        ("without", ExpansionConfig()),
        ("with", ExpansionConfig(enabled=True, source=source, per_document=per_doc)),
    ):
        cfg = PipelineConfig(expansion=expansion)
        dense, _ = build_indexes(cfg, paths, embedder=embedder)
        print(f"[{label}] {name} expansion: " + "; ".join(s.summary() for s in dense.values()))
        results[name] = score(paths, cfg, embedder, sets)
    return results


def show(label: str, results: dict) -> None:
    print(f"\n{label}: p@1 / p@5 / p@30, without → with expansion")
    sets = list(results["without"])
    for name in sets:
        first = results["without"][name]
        n = next(iter(first.values()))["queries"]
        print(f"  {name} ({n} queries)")
        for row, before in first.items():
            after = results["with"][name][row]
            cells = [f"{before[k]:.3f}→{after[k]:.3f}" for k in (1, 5, 30)]
            print(f"    {row:<22}" + "  ".join(f"{c:>13}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-document", type=int, default=ExpansionConfig().per_document)
    args = parser.parse_args()
    if not NHS.exists():
        sys.exit(f"{NHS} not found: this benchmark needs the NHS pages beside the repository.")
    from t0_pipeline.retrieval.embed import load_embedder
    from t0_pipeline.retrieval.evaluate import load_queries
    from t0_pipeline.retrieval.expansion import read_expansions

    sets = {n: load_queries(QUERY_SETS[n], RetrievalEvalConfig()) for n in SCORED}
    embedder = load_embedder(PipelineConfig().embedding)
    out: dict = {"per_document": args.per_document, "sources": list(SOURCES)}
    with tempfile.TemporaryDirectory() as tmp:
        source = expansion_file(Path(tmp))
        covered = set(read_expansions(source, args.per_document))
        out["covered_conditions"] = len(covered)
        paths = prepare(Path(tmp) / "all")
        out["all_pages"] = run_corpus("all pages", paths, source, args.per_document, embedder, sets)
        show("All pages, the development sets' conditions expanded", out["all_pages"])
        paths = prepare(Path(tmp) / "covered")
        restrict(paths, covered)
        out["covered_only"] = run_corpus(
            "covered only", paths, source, args.per_document, embedder, sets
        )
        show(f"Only the {len(covered)} covered conditions, all expanded", out["covered_only"])
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "expansion.json").write_text(json.dumps(out, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
