"""Retrieval assets: dense (Chroma) and BM25 indexes of full pages and summaries,
the evaluation query set, and the p@k retrieval report."""

import base64

import dagster as dg
import polars as pl

from t0_pipeline.artifacts import T0Error
from t0_pipeline.checks import unindexed_documents
from t0_pipeline.defs.corpus import EAGER, conditions, summaries
from t0_pipeline.defs.resources import PipelineSettings, location_config
from t0_pipeline.defs.versions import version_of
from t0_pipeline.retrieval.embed import model_name
from t0_pipeline.retrieval.evaluate import (
    evaluate_retrieval,
    queries_for_corpus,
    query_source,
    read_saved_queries,
    save_queries,
)
from t0_pipeline.retrieval.expansion import index_documents, leaked_queries
from t0_pipeline.retrieval.index import build_bm25_index, build_dense_index, read_manifest

INDEX_SOURCES = {"full": conditions, "summaries": summaries}
SYNTHETIC_QUERIES = dg.AssetKey("synthetic_queries")
RETRIEVER_MODEL = dg.AssetKey("retriever_model")


def follows(*keys: dg.AssetKey) -> dg.AutomationCondition:
    """Eager on the other deps, not waiting for ``keys`` (they need an LLM or a training run), and
    re-run whenever one of them is newly materialised."""
    selection = dg.AssetSelection.keys(*keys)
    return (
        EAGER.ignore(selection)
        | (
            dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated()).allow(
                selection
            )
            & ~dg.AutomationCondition.in_progress()
        )
    ).with_label("eager; also after " + ", ".join(k.to_user_string() for k in keys))


def _expanded(index: str) -> bool:
    expansion = location_config().expansion
    return expansion.enabled and index in expansion.indexes


def _index_deps(index: str, *more: dg.AssetKey) -> list:
    """An index's inputs: its documents (and ``more``), and the synthetic queries it is expanded
    with when expansion is on for it."""
    return [INDEX_SOURCES[index], *more, *([SYNTHETIC_QUERIES] if _expanded(index) else [])]


DENSE_NAMES = {"full": "full_page_index", "summaries": "summary_index"}
BM25_NAMES = {"full": "full_page_bm25", "summaries": "summary_bm25"}


def _index_metadata(stats, cfg, paths, index: str) -> dict:
    return {
        "collection": stats.collection,
        "documents": stats.documents,
        "chunks": stats.chunks,
        "embedded_chunks": stats.embedded_chunks,
        "added": len(stats.added),
        "changed": len(stats.changed),
        "removed": len(stats.removed),
        "unchanged": stats.unchanged,
        "rebuilt": stats.rebuilt,
        "seconds": round(stats.seconds, 2),
        "model": model_name(cfg.embedding),
        "distance": cfg.chroma.distance,
        "manifest": dg.MetadataValue.path(str(paths.index_manifest(index))),
    }


def _dense_asset(index: str):
    @dg.asset(
        name=DENSE_NAMES[index],
        group_name="retrieval",
        deps=_index_deps(index, RETRIEVER_MODEL),
        code_version=version_of(DENSE_NAMES[index]),
        automation_condition=follows(RETRIEVER_MODEL, *_index_deps(index)[1:]),
        kinds={"chroma"},
        description=f"Chroma collection of token chunks of the {index} documents (incremental by "
        "content hash), embedded by the configured model, or by retriever_model's tuned one once "
        "it measured better; with expansion on, plus one vector per training query written for a "
        "document.",
    )
    def dense(
        context: dg.AssetExecutionContext, settings: PipelineSettings
    ) -> dg.MaterializeResult:
        cfg, paths = settings.pipeline_config(), settings.paths()
        docs, expansion = index_documents(paths, index, cfg.expansion)  # type: ignore[arg-type]
        stats = build_dense_index(
            docs,
            index,
            paths,
            cfg.embedding,
            cfg.chunk,  # type: ignore[arg-type]
            cfg.chroma,
            embedder=settings.embedder(),
            client=settings.chroma_client(),
            expansion=expansion.as_dict(),
        )
        context.log.info(stats.summary())
        return dg.MaterializeResult(
            metadata={
                **_index_metadata(stats, cfg, paths, index),
                "expansion": dg.MetadataValue.json(expansion.as_dict()),
            }
        )

    @dg.asset_check(
        asset=dense,
        name="every_document_indexed",
        description="Every current document is in the index manifest and the collection holds its "
        "chunks.",
    )
    def every_document_indexed(settings: PipelineSettings) -> dg.AssetCheckResult:
        paths = settings.paths()
        expansion = settings.pipeline_config().expansion
        docs, _ = index_documents(paths, index, expansion)  # type: ignore[arg-type]
        manifest = read_manifest(paths.index_manifest(index))  # type: ignore[arg-type]
        missing = unindexed_documents(docs, manifest)
        count = (
            settings.chroma_client().get_collection(manifest["collection"]).count()
            if manifest
            else 0
        )
        chunks_ok = manifest is not None and count == manifest["n_chunks"]
        return dg.AssetCheckResult(
            passed=not missing and chunks_ok,
            metadata={
                "missing_or_stale": dg.MetadataValue.json(missing[:20]),
                "collection_chunks": count,
                "manifest_chunks": manifest["n_chunks"] if manifest else 0,
            },
        )

    return dense, every_document_indexed


def _bm25_asset(index: str):
    @dg.asset(
        name=BM25_NAMES[index],
        group_name="retrieval",
        deps=_index_deps(index),
        code_version=version_of(BM25_NAMES[index]),
        automation_condition=follows(*_index_deps(index)[1:]) if _expanded(index) else EAGER,
        kinds={"python"},
        description="Document-level BM25 index (bm25s, English stop words and stemming) of the "
        f"{index} documents (with expansion on, plus the words of the training queries written for "
        "each).",
    )
    def bm25(settings: PipelineSettings) -> dg.MaterializeResult:
        paths = settings.paths()
        expansion = settings.pipeline_config().expansion
        docs, info_expansion = index_documents(paths, index, expansion)  # type: ignore[arg-type]
        info = build_bm25_index(docs, index, paths)
        return dg.MaterializeResult(
            metadata={
                "expansion": dg.MetadataValue.json(info_expansion.as_dict()),
                "documents": info["documents"],
                "stemmed": info["stemmed"],
                "seconds": round(info["seconds"], 3),
                "path": dg.MetadataValue.path(info["path"]),
            }
        )

    @dg.asset_check(
        asset=bm25,
        name="every_document_indexed",
        description="The BM25 index lists every current document.",
    )
    def bm25_every_document_indexed(settings: PipelineSettings) -> dg.AssetCheckResult:
        import json

        paths = settings.paths()
        expansion = settings.pipeline_config().expansion
        docs, _ = index_documents(paths, index, expansion)  # type: ignore[arg-type]
        meta = json.loads((paths.bm25_dir(index) / "t0_docs.json").read_text())
        live = dict(zip(meta["slugs"], meta["hashes"]))
        missing = unindexed_documents(docs, {"docs": live})
        return dg.AssetCheckResult(
            passed=not missing, metadata={"missing_or_stale": dg.MetadataValue.json(missing[:20])}
        )

    return bm25, bm25_every_document_indexed


full_page_index, full_page_index_check = _dense_asset("full")
summary_index, summary_index_check = _dense_asset("summaries")
full_page_bm25, full_page_bm25_check = _bm25_asset("full")
summary_bm25, summary_bm25_check = _bm25_asset("summaries")


# rebuilt when the corpus changes, and when synthetic queries are written (not waiting for them:
# they need an LLM)
FOLLOWS_QUERIES = follows(SYNTHETIC_QUERIES)


@dg.asset(
    group_name="retrieval",
    deps=[conditions, SYNTHETIC_QUERIES],
    code_version=version_of("eval_queries"),
    automation_condition=FOLLOWS_QUERIES,
    kinds={"parquet"},
    description="The labelled retrieval-evaluation queries: retrieval_eval.queries when set, else "
    "the synthetic evaluation split once written (the report's Table 1), else the bundled sample; "
    "queries whose condition is not in the corpus are left out (and counted) unless the file was "
    "configured.",
)
def eval_queries(
    context: dg.AssetExecutionContext, settings: PipelineSettings
) -> dg.MaterializeResult:
    from t0_pipeline.retrieval.retrieve import corpus_slugs

    cfg, paths = settings.pipeline_config(), settings.paths()
    source = query_source(paths, cfg.retrieval_eval)
    queries, left_out = queries_for_corpus(source, cfg.retrieval_eval, corpus_slugs(paths))
    if left_out:
        context.log.warning(
            f"{left_out} {source.label} name conditions that are not in this corpus; left out"
        )
    if not queries:
        context.log.warning(
            f"none of the {source.label} matches this corpus: write synthetic queries "
            "(synthetic_queries) or set retrieval_eval.queries to score retrieval"
        )
    save_queries(queries, paths.eval_queries)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(queries),
            "source": source.label,
            "source_path": dg.MetadataValue.path(str(source.path)),
            "left_out": left_out,
            "path": dg.MetadataValue.path(str(paths.eval_queries)),
        }
    )


@dg.asset_check(
    asset=eval_queries,
    blocking=True,
    description="Every query's target is a document in the current corpus.",
)
def eval_queries_resolvable(settings: PipelineSettings) -> dg.AssetCheckResult:
    from t0_pipeline.checks import unresolvable_queries
    from t0_pipeline.retrieval.retrieve import corpus_slugs

    paths = settings.paths()
    bad = unresolvable_queries(read_saved_queries(paths.eval_queries), corpus_slugs(paths))
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={"unresolvable": len(bad), "examples": dg.MetadataValue.json(bad[:5])},
    )


@dg.asset(
    group_name="retrieval",
    deps=[full_page_index, summary_index, full_page_bm25, summary_bm25, eval_queries],
    code_version=version_of("retrieval_report"),
    automation_condition=EAGER,
    kinds={"python", "csv"},
    # with retrieval_eval.rewrite_with the agent's model writes search queries (started here when it
    # has serve:)
    required_resource_keys={"model_server"}
    if location_config().retrieval_eval.rewrite_with
    else set(),
    description="p@k (k = 1, 5, 10, 30, 50, 100) for each index × retriever mode (dense, bm25, "
    "hybrid), with a plot; with retrieval_eval.rewrite_with also on the agent's search queries "
    "('<mode>+agent' rows).",
)
def retrieval_report(
    context: dg.AssetExecutionContext, settings: PipelineSettings
) -> dg.MaterializeResult:
    cfg, paths = settings.pipeline_config(), settings.paths()
    if not paths.eval_queries.exists():
        raise T0Error("eval_queries has not been materialised; materialise it first.")
    queries = read_saved_queries(paths.eval_queries)
    if not queries:
        context.log.warning(
            "no evaluation queries match this corpus; nothing to score (see eval_queries)"
        )
        return dg.MaterializeResult(
            metadata={"queries": 0, "note": "no evaluation queries match this corpus"}
        )
    retrievers = {name: settings.retriever(name, cfg) for name in cfg.retrieval_eval.indexes}
    source = query_source(paths, cfg.retrieval_eval)
    rewritten, counts = None, {}
    if cfg.retrieval_eval.rewrite_with:
        from t0_pipeline.llm.cache import LLMCache
        from t0_pipeline.serve.agent_search import agent_search_queries, search_query_roles

        roles = search_query_roles(cfg, cfg.retrieval_eval.rewrite_with)
        with context.resources.model_server.roles(cfg, paths, roles, context.log.info) as served:
            rewritten, counts = agent_search_queries(
                served,
                cfg.retrieval_eval.rewrite_with,
                [q.query for q in queries],
                LLMCache(paths.llm_cache(served.llm)),
                context.log.info,
            )
        context.log.info(f"agent search queries: {counts}")
    report = evaluate_retrieval(
        paths, cfg.retrieval_eval, retrievers, queries, label=source.label, rewritten=rewritten
    )
    expansion = {n: r.manifest.get("expansion", {"enabled": False}) for n, r in retrievers.items()}
    leaks = leaked_queries(
        [q.query for q in queries], {n: r.manifest for n, r in retrievers.items()}
    )
    if any(leaks.values()):
        context.log.warning(
            f"evaluation queries also indexed as document expansions: {leaks}; their scores "
            "measure recall of indexed text (expand from the training split only)"
        )
    context.log.info("\n" + report.markdown)
    png = base64.b64encode(report.png.read_bytes()).decode()
    ks = sorted(cfg.retrieval_eval.ks)
    headline = f"p@{5 if 5 in ks else ks[0]}"  # the report's downstream choice was k=5
    best = report.table.sort(headline, descending=True).row(0, named=True)
    return dg.MaterializeResult(
        metadata={
            "queries": report.n_queries,
            "query_source": source.label,
            "agent_search_queries": dg.MetadataValue.json(counts),
            "expansion": dg.MetadataValue.json(expansion),
            "expansion_leaks": dg.MetadataValue.json(leaks),
            "p_at_k": dg.MetadataValue.md(report.markdown),
            "plot": dg.MetadataValue.md(f"![p@k curves](data:image/png;base64,{png})"),
            f"best_{headline}": float(best[headline]),
            f"best_{headline}_config": f"{best['index']} · {best['mode']}",
            "csv": dg.MetadataValue.path(str(report.csv)),
            "png": dg.MetadataValue.path(str(report.png)),
        }
    )


@dg.asset_check(
    asset=retrieval_report,
    description="Every configured index × mode was scored, each p@k row is a share that never "
    "falls as k grows, and no evaluation query is among the texts an index was expanded with.",
)
def pk_table_complete(settings: PipelineSettings) -> dg.AssetCheckResult:
    from t0_pipeline.checks import pk_problems

    cfg, paths = settings.pipeline_config(), settings.paths()
    if not read_saved_queries(paths.eval_queries):
        return dg.AssetCheckResult(
            passed=True, metadata={"note": "no evaluation queries match this corpus"}
        )
    problems = pk_problems(
        pl.read_csv(paths.retrieval_report_dir / "pk.csv"),
        cfg.retrieval_eval.indexes,
        cfg.retrieval_eval.modes,
    )
    queries = [q.query for q in read_saved_queries(paths.eval_queries)]
    manifests = {n: read_manifest(paths.index_manifest(n)) for n in cfg.retrieval_eval.indexes}
    problems += [
        f"{n} of the evaluation queries are indexed as expansions of the {name!r} documents"
        for name, n in leaked_queries(queries, manifests).items()
        if n
    ]
    return dg.AssetCheckResult(
        passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)}
    )
