"""Corpus assets: corpus_source (observed) → condition_pages → conditions → summaries."""

import contextlib

import dagster as dg
import polars as pl

from t0_pipeline.artifacts import T0Error
from t0_pipeline.checks import document_problems, summary_problems
from t0_pipeline.corpus.clean import run_clean
from t0_pipeline.corpus.crawl import corpus_fingerprint, run_crawl
from t0_pipeline.defs.models import MODEL_DEPS
from t0_pipeline.defs.resources import PipelineSettings, location_config
from t0_pipeline.defs.versions import version_of
from t0_pipeline.synthetic.summarise import run_summarise

EAGER = dg.AutomationCondition.eager()


def preview(df: pl.DataFrame, columns: list[str], rows: int = 10) -> dg.MetadataValue:
    """A Markdown table of the first rows, long text cut short, for the asset page."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in df.head(rows).iter_rows(named=True):
        cells = [str(row[c]).replace("\n", " ").replace("|", "/")[:90] for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))


@dg.observable_source_asset(
    group_name="corpus",
    description="The document source (bundled sample, live site, mirror or pages file). Its data "
    "version is the content hash of the source; a new version makes the corpus assets "
    "re-materialise.",
)
def corpus_source(settings: PipelineSettings) -> dg.DataVersion:
    return dg.DataVersion(corpus_fingerprint(settings.pipeline_config().source)[:16])


@dg.asset(
    group_name="corpus",
    deps=[corpus_source],
    code_version=version_of("condition_pages"),
    automation_condition=EAGER,
    kinds={"python", "parquet"},
    description="Raw HTML (or text) of every condition page and sub-page, with fetch time, content "
    "hash and ETag.",
)
def condition_pages(
    context: dg.AssetExecutionContext, settings: PipelineSettings
) -> dg.MaterializeResult:
    cfg, paths = settings.pipeline_config(), settings.paths()
    pages, report = run_crawl(cfg.source, paths)
    context.log.info(report.summary())
    for failure in report.failed:
        context.log.warning(f"failed {failure['url']}: {failure['error']}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": pages.height,
            "conditions": report.conditions,
            "new": len(report.new),
            "changed": len(report.changed),
            "unchanged": len(report.unchanged),
            "removed": len(report.removed),
            "failed": len(report.failed),
            "not_modified_304": report.not_modified,
            "changed_slugs": dg.MetadataValue.json(
                {
                    "new": report.new[:50],
                    "changed": report.changed[:50],
                    "removed": report.removed[:50],
                    "failed": report.failed[:50],
                }
            ),
            "source": report.source,
            "path": dg.MetadataValue.path(str(paths.pages)),
        }
    )


@dg.asset_check(
    asset=condition_pages,
    description="Every linked condition page was fetched (WARN lists failures).",
)
def all_pages_fetched(settings: PipelineSettings) -> dg.AssetCheckResult:
    import json

    from t0_pipeline.checks import crawl_failures

    failures = crawl_failures(json.loads(settings.paths().crawl_report.read_text()))
    return dg.AssetCheckResult(
        passed=not failures,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"failed": len(failures), "first_failures": dg.MetadataValue.json(failures[:10])},
    )


@dg.asset(
    group_name="corpus",
    deps=[condition_pages],
    code_version=version_of("conditions"),
    automation_condition=EAGER,
    kinds={"python", "parquet"},
    description="One clean plain-text document per condition (slug, title, url, text, content "
    "hash, source).",
)
def conditions(
    context: dg.AssetExecutionContext, settings: PipelineSettings
) -> dg.MaterializeResult:
    cfg, paths = settings.pipeline_config(), settings.paths()
    docs, problems = run_clean(paths, cfg.source, cfg.clean)
    for problem in problems:
        context.log.warning(problem)
    chars = docs["text"].str.len_chars()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": docs.height,
            "mean_chars": float(chars.mean()),
            "max_chars": int(chars.max()),
            "multi_page_documents": int((docs["n_pages"] > 1).sum()),
            "skipped": len(problems),
            "preview": preview(
                docs.with_columns(chars.alias("chars")), ["slug", "title", "n_pages", "chars"]
            ),
            "path": dg.MetadataValue.path(str(paths.conditions)),
            "jsonl": dg.MetadataValue.path(str(paths.conditions.with_suffix(".jsonl"))),
        }
    )


@dg.asset_check(
    asset=conditions,
    blocking=True,
    description="No empty documents, duplicate slugs or duplicate texts.",
)
def no_empty_or_duplicate_documents(settings: PipelineSettings) -> dg.AssetCheckResult:
    docs = pl.read_parquet(settings.paths().conditions)
    problems = document_problems(docs, settings.pipeline_config().clean.min_chars)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"problems": dg.MetadataValue.json(problems), "documents": docs.height},
    )


def _summary_metadata(out, info: dict, paths) -> dict:
    usage = info.get("usage")
    calls = {}
    if usage:
        calls = {"llm_calls": usage["completed"], "llm_cache_hits": usage["cache_hits"]}
    return {
        "dagster/row_count": out.height,
        "backend": info["backend"],
        "failed": len(info["failures"]),
        "mean_compression": float(out["compression"].mean()),
        "mean_chars_in": float(out["chars_in"].mean()),
        "mean_chars_out": float(out["chars_out"].mean()),
        "preview": preview(out, ["slug", "text"], rows=5),
        **calls,
        "path": dg.MetadataValue.path(str(paths.summaries)),
    }


def build_summaries(backend: str) -> dg.AssetsDefinition:
    """The summaries every downstream stage indexes and retrieves from, made by ``summary.backend``:
    extractive (offline) or the LLM summariser (the report's choice; only new or changed pages are
    asked for)."""
    llm = backend == "llm"

    @dg.asset(
        name="summaries",
        group_name="corpus",
        deps=[conditions, *(MODEL_DEPS if llm else [])],
        code_version=version_of("summaries"),
        automation_condition=EAGER,
        pool="llm" if llm else None,
        # the corpus group needs no model otherwise
        required_resource_keys={"model_server"} if llm else set(),
        kinds={"python", "parquet"},
        description=(
            "LLM summaries (role 'summariser', summary.backend=llm)"
            if llm
            else "Extractive summaries (summary.backend=extractive)"
        )
        + " of each condition: symptoms and when/where to get help. What summary_index retrieves "
        "from.",
    )
    def summaries(
        context: dg.AssetExecutionContext, settings: PipelineSettings
    ) -> dg.MaterializeResult:
        cfg, paths = settings.pipeline_config(), settings.paths()
        if cfg.summary.backend != backend:
            raise T0Error(
                f"summary.backend is {cfg.summary.backend!r} but the code location was loaded with "
                f"{backend!r}; reload the code location (Deployment → Reload) after changing it."
            )
        serving = (
            context.resources.model_server.roles(cfg, paths, ["summariser"], context.log.info)
            if llm
            else contextlib.nullcontext(cfg)
        )
        with serving as cfg:
            out, info = run_summarise(
                paths, cfg.summary, cfg.llm, progress=context.log.info, prompts=cfg.prompts
            )
        for failure in info["failures"]:
            context.log.warning(
                f"summary failed: {failure}; re-materialise to retry (successful calls are cached)"
            )
        return dg.MaterializeResult(metadata=_summary_metadata(out, info, paths))

    return summaries


summaries = build_summaries(location_config().summary.backend)


@dg.asset_check(
    asset=summaries, description="Every condition has a non-empty summary of its current text."
)
def every_condition_summarised(settings: PipelineSettings) -> dg.AssetCheckResult:
    paths = settings.paths()
    problems = summary_problems(pl.read_parquet(paths.conditions), pl.read_parquet(paths.summaries))
    return dg.AssetCheckResult(
        passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)}
    )
