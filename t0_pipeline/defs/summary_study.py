"""The LLM summaries as a study beside the extractive ones (when those are the retrieval corpus):
their own index and p@k next to the extractive summaries'. With ``summary.backend=llm`` the LLM
summaries *are* ``summaries`` and this module is not loaded."""

import json

import dagster as dg
import polars as pl

from t0_pipeline.checks import summary_problems
from t0_pipeline.defs.corpus import EAGER, conditions, preview
from t0_pipeline.defs.models import MODEL_DEPS
from t0_pipeline.defs.resources import ModelServer, PipelineSettings, location_config
from t0_pipeline.defs.retrieval import eval_queries, summary_bm25, summary_index
from t0_pipeline.defs.roles import RoleOverrides, role_config, usage_metadata
from t0_pipeline.defs.versions import version_of
from t0_pipeline.retrieval.evaluate import evaluate_retrieval, read_saved_queries
from t0_pipeline.retrieval.index import build_bm25_index, build_dense_index
from t0_pipeline.synthetic.summarise import run_summarise

GROUP = "synthetic_data"
# the model-calling asset follows its inputs only when automation.synthetic_data says so
FOLLOW_IF_SET = EAGER if location_config().automation.synthetic_data else None


@dg.asset(
    group_name=GROUP,
    deps=[conditions, *MODEL_DEPS],
    code_version=version_of("llm_summaries"),
    pool="llm",
    kinds={"python", "parquet"},
    automation_condition=FOLLOW_IF_SET,
    description="LLM summaries of every page (role 'summariser'): symptoms and how to decide "
    "the next step.",
)
def llm_summaries(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    model_server: ModelServer,
    config: RoleOverrides,
) -> dg.MaterializeResult:
    cfg, paths = role_config(settings, config, "summariser"), settings.paths()
    summary_cfg = cfg.summary.model_copy(update={"backend": "llm"})
    with model_server.roles(cfg, paths, ["summariser"], context.log.info) as cfg:
        out, info = run_summarise(
            paths,
            summary_cfg,
            cfg.llm,
            out=paths.llm_summaries,
            progress=context.log.info,
            prompts=cfg.prompts,
        )
    for slug in info["failures"]:
        context.log.warning(
            f"summary failed for {slug}; re-materialise to retry (successful calls are cached)"
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": out.height,
            "failed": len(info["failures"]),
            "summariser": info["backend"],
            "mean_compression": float(out["compression"].mean()),
            "preview": preview(out, ["slug", "text"], rows=5),
            **usage_metadata(info["usage"]),
            "path": dg.MetadataValue.path(str(paths.llm_summaries)),
        }
    )


@dg.asset_check(
    asset=llm_summaries,
    description="Every condition has an LLM summary of its current text (WARN).",
)
def every_condition_llm_summarised(settings: PipelineSettings) -> dg.AssetCheckResult:
    paths = settings.paths()
    problems = summary_problems(
        pl.read_parquet(paths.conditions), pl.read_parquet(paths.llm_summaries)
    )
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"problems": dg.MetadataValue.json(problems)},
    )


@dg.asset(
    group_name=GROUP,
    deps=[llm_summaries],
    code_version=version_of("llm_summary_index"),
    kinds={"chroma"},
    automation_condition=EAGER,
    description="Dense (Chroma) and BM25 indexes of the LLM summaries.",
)
def llm_summary_index(
    context: dg.AssetExecutionContext, settings: PipelineSettings
) -> dg.MaterializeResult:
    cfg, paths = settings.pipeline_config(), settings.paths()
    docs = pl.read_parquet(paths.llm_summaries)
    stats = build_dense_index(
        docs,
        "llm_summaries",
        paths,
        cfg.embedding,
        cfg.chunk,
        cfg.chroma,
        embedder=settings.embedder(),
        client=settings.chroma_client(),
    )
    bm25 = build_bm25_index(docs, "llm_summaries", paths)
    context.log.info(stats.summary())
    return dg.MaterializeResult(
        metadata={
            "documents": stats.documents,
            "chunks": stats.chunks,
            "embedded_chunks": stats.embedded_chunks,
            "bm25_documents": bm25["documents"],
        }
    )


@dg.asset(
    group_name=GROUP,
    deps=[summary_index, summary_bm25, llm_summary_index, eval_queries],
    code_version=version_of("summary_comparison"),
    automation_condition=EAGER,
    kinds={"python", "csv"},
    description="p@k of extractive vs LLM summaries, for each retriever mode.",
)
def summary_comparison(settings: PipelineSettings) -> dg.MaterializeResult:
    cfg, paths = settings.pipeline_config(), settings.paths()
    retrievers = {name: settings.retriever(name, cfg) for name in ("summaries", "llm_summaries")}
    ev = cfg.retrieval_eval.model_copy(update={"indexes": ["summaries", "llm_summaries"]})
    report = evaluate_retrieval(
        paths,
        ev,
        retrievers,
        read_saved_queries(paths.eval_queries),
        paths.summary_comparison_dir,
    )
    return dg.MaterializeResult(
        metadata={
            "queries": report.n_queries,
            "p_at_k": dg.MetadataValue.md(report.markdown),
            "csv": dg.MetadataValue.path(str(report.csv)),
        }
    )


@dg.asset_check(
    asset=llm_summary_index,
    description="Every current LLM summary is in the dense and BM25 indexes.",
)
def every_llm_summary_indexed(settings: PipelineSettings) -> dg.AssetCheckResult:
    from t0_pipeline.checks import unindexed_documents
    from t0_pipeline.retrieval.index import read_manifest

    paths = settings.paths()
    docs = pl.read_parquet(paths.llm_summaries)
    dense = unindexed_documents(docs, read_manifest(paths.index_manifest("llm_summaries")))
    meta = json.loads((paths.bm25_dir("llm_summaries") / "t0_docs.json").read_text())
    bm25 = unindexed_documents(docs, {"docs": dict(zip(meta["slugs"], meta["hashes"]))})
    return dg.AssetCheckResult(
        passed=not dense and not bm25,
        metadata={
            "missing_dense": dg.MetadataValue.json(dense[:20]),
            "missing_bm25": dg.MetadataValue.json(bm25[:20]),
        },
    )


@dg.asset_check(
    asset=summary_comparison,
    description="Both kinds of summary were scored in every mode, p@k sane.",
)
def both_summaries_scored(settings: PipelineSettings) -> dg.AssetCheckResult:
    from t0_pipeline.checks import pk_problems

    cfg, paths = settings.pipeline_config(), settings.paths()
    problems = pk_problems(
        pl.read_csv(paths.summary_comparison_dir / "pk.csv"),
        ["summaries", "llm_summaries"],
        cfg.retrieval_eval.modes,
    )
    return dg.AssetCheckResult(
        passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)}
    )
