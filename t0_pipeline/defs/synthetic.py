"""Synthetic-data assets: LLM summaries (+ their index and a comparison with the extractive
ones), synthetic patient queries, teacher reasoning traces and the SFT dataset.

Every asset here that calls a model runs in the ``llm`` concurrency pool (dagster.yaml)
and takes an optional run config overriding its role (model, endpoint, sampling).
"""

import json

import dagster as dg
import polars as pl

from t0_pipeline.artifacts import T0Error
from t0_pipeline.checks import (
    disjoint_problems,
    json_validity_problems,
    json_validity_rate,
    parsable_in_retrieved_share,
    query_rate_problems,
    query_rates,
    traces_outside_retrieved,
    traces_without_thinking,
)
from t0_pipeline.defs.corpus import EAGER, conditions, preview
from t0_pipeline.defs.models import MODEL_DEPS
from t0_pipeline.defs.resources import ModelServer, PipelineSettings, location_config
from t0_pipeline.defs.retrieval import (
    full_page_bm25,
    full_page_index,
    summary_bm25,
    summary_index,
)
from t0_pipeline.defs.roles import RoleOverrides, role_config, usage_metadata
from t0_pipeline.defs.versions import version_of
from t0_pipeline.synthetic.content_checks import query_set_problems
from t0_pipeline.synthetic.queries import run_generate_queries
from t0_pipeline.synthetic.sft import run_sft
from t0_pipeline.synthetic.traces import run_traces

GROUP = "synthetic_data"


LOCATION = location_config()
# the model-calling assets follow their inputs only when automation.synthetic_data says so
FOLLOW_IF_SET = EAGER if LOCATION.automation.synthetic_data else None


def _summary_study() -> tuple:
    from t0_pipeline.defs import summary_study as study

    return (
        study.llm_summaries,
        study.every_condition_llm_summarised,
        study.llm_summary_index,
        study.every_llm_summary_indexed,
        study.summary_comparison,
        study.both_summaries_scored,
    )


INDEX_ASSETS = {
    "full": [full_page_index, full_page_bm25],
    "summaries": [summary_index, summary_bm25],
}
if LOCATION.summary.backend == "extractive":
    (
        llm_summaries,
        every_condition_llm_summarised,
        llm_summary_index,
        every_llm_summary_indexed,
        summary_comparison,
        both_summaries_scored,
    ) = _summary_study()
    INDEX_ASSETS["llm_summaries"] = [llm_summary_index]


def retrieved_from(index: str, mode: str) -> list:
    """The index assets a stage retrieving from ``index`` in ``mode`` (config values) depends on:
    lineage follows config."""
    assets = list(INDEX_ASSETS.get(index) or [])
    # fuses the full pages' rankings
    if index != "full" and mode == "hybrid" and LOCATION.retrieval.fuse_full_pages:
        weights = LOCATION.retrieval.fusion_weights
        assets += [
            a
            for a, w in ((full_page_index, weights.full_dense), (full_page_bm25, weights.full_bm25))
            if w > 0
        ]
    if not assets:
        raise T0Error(
            f"nothing builds the {index!r} index in this code location (with summary.backend=llm "
            "the LLM summaries are 'summaries'); set traces.index / evaluation.index to full or "
            "summaries."
        )
    return assets


@dg.asset(
    group_name=GROUP,
    deps=[conditions, *MODEL_DEPS],
    code_version=version_of("synthetic_queries"),
    pool="llm",
    kinds={"python", "parquet"},
    automation_condition=FOLLOW_IF_SET,
    description="Synthetic patient queries (role 'query_writer'): an evaluation and a training "
    "set sharing no (condition, disposition) pair, balanced over query type, disposition and "
    "sex.",
)
def synthetic_queries(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    model_server: ModelServer,
    config: RoleOverrides,
) -> dg.MaterializeResult:
    cfg, paths = role_config(settings, config, "query_writer"), settings.paths()
    with model_server.roles(cfg, paths, ["query_writer"], context.log.info) as cfg:
        eval_df, train_df, report = run_generate_queries(
            paths, cfg.queries, cfg.llm, progress=context.log.info, prompts=cfg.prompts
        )
    counts = lambda df, col: dg.MetadataValue.json(
        dict(df.group_by(col).len().sort(col).iter_rows())
    )  # noqa: E731
    return dg.MaterializeResult(
        metadata={
            "eval_queries": eval_df.height,
            "train_queries": train_df.height,
            "requested_eval": report["eval"]["requested"],
            "requested_train": report["train"]["requested"],
            "refusals": report["eval"]["refusals"] + report["train"]["refusals"],
            "failed_draws": len(report["eval"]["failures"]) + len(report["train"]["failures"]),
            "overlaps_removed": report["train"]["removed_overlaps"],
            "top_up_draws": report["train"]["top_up_draws"],
            "eval_by_disposition": counts(eval_df, "disposition"),
            "eval_by_query_type": counts(eval_df, "query_type"),
            "eval_cells": dg.MetadataValue.json(report["eval"]["cells"]),
            "train_cells": dg.MetadataValue.json(report["train"]["cells"]),
            "repeated_texts_dropped": report["eval"]["repeated_texts"]
            + report["train"]["repeated_texts"],
            "preview": preview(eval_df, ["slug", "disposition", "query_type", "query"], rows=5),
            "prompt_hash": report["prompt_hash"],
            **usage_metadata(report["usage"]),
            "eval_path": dg.MetadataValue.path(str(paths.synthetic_queries("eval"))),
            "train_path": dg.MetadataValue.path(str(paths.synthetic_queries("train"))),
        }
    )


def _query_report(settings: PipelineSettings) -> dict:
    return json.loads(settings.paths().synthetic_queries("report").with_suffix(".json").read_text())


@dg.asset_check(
    asset=synthetic_queries,
    blocking=True,
    description="No (condition, disposition) pair is in both sets.",
)
def eval_train_disjoint(settings: PipelineSettings) -> dg.AssetCheckResult:
    paths = settings.paths()
    problems = disjoint_problems(
        pl.read_parquet(paths.synthetic_queries("eval")),
        pl.read_parquet(paths.synthetic_queries("train")),
    )
    return dg.AssetCheckResult(
        passed=not problems, metadata={"shared_pairs": dg.MetadataValue.json(problems[:20])}
    )


@dg.asset_check(
    asset=synthetic_queries,
    blocking=True,
    description="Distinct ids and texts; type × disposition × sex cells balanced up to the draws "
    "lost.",
)
def queries_distinct_and_balanced(settings: PipelineSettings) -> dg.AssetCheckResult:
    paths, cfg, report = (
        settings.paths(),
        settings.pipeline_config().queries,
        _query_report(settings),
    )
    problems = {
        split: query_set_problems(
            pl.read_parquet(paths.synthetic_queries(split)), report[split], cfg
        )
        for split in ("eval", "train")
    }
    return dg.AssetCheckResult(
        passed=not any(problems.values()),
        metadata={
            "problems": dg.MetadataValue.json(problems),
            "eval_cells": dg.MetadataValue.json(report["eval"].get("cells", {})),
            "train_cells": dg.MetadataValue.json(report["train"].get("cells", {})),
        },
    )


@dg.asset_check(
    asset=synthetic_queries,
    description="Valid JSON from the query writer (after one repair) for ≥ 95% of replies.",
)
def query_json_validity(settings: PipelineSettings) -> dg.AssetCheckResult:
    usage = _query_report(settings)["usage"]
    problems = json_validity_problems(usage, 0.95)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"json_validity_rate": json_validity_rate(usage), "repairs": usage["repairs"]},
    )


@dg.asset_check(
    asset=synthetic_queries,
    description="Refusal and failure rates under the configured thresholds.",
)
def query_refusal_and_failure_rates(settings: PipelineSettings) -> dg.AssetCheckResult:
    cfg, report = settings.pipeline_config().queries, _query_report(settings)
    problems = query_rate_problems(report, cfg.max_failure_rate, cfg.max_refusal_rate)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            **query_rates(report),
            "max_failure_rate": cfg.max_failure_rate,
            "max_refusal_rate": cfg.max_refusal_rate,
        },
    )


@dg.asset(
    group_name=GROUP,
    deps=[
        synthetic_queries,
        *retrieved_from(LOCATION.traces.index, LOCATION.traces.mode),
        *MODEL_DEPS,
    ],
    code_version=version_of("reasoning_traces"),
    pool="llm",
    automation_condition=FOLLOW_IF_SET,
    kinds={"python", "parquet"},
    description="The teacher's thinking and '(condition, severity)' answer over k retrieved "
    "summaries for each training query, parsed and filtered by the configured policy.",
)
def reasoning_traces(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    model_server: ModelServer,
    config: RoleOverrides,
) -> dg.MaterializeResult:
    cfg, paths = role_config(settings, config, "teacher"), settings.paths()
    retriever = settings.retriever(cfg.traces.index, cfg)
    with model_server.roles(cfg, paths, ["teacher"], context.log.info) as cfg:
        traces, stats = run_traces(
            paths, cfg.traces, cfg.llm, retriever, progress=context.log.info, prompts=cfg.prompts
        )
    return dg.MaterializeResult(
        metadata={
            **{k: v for k, v in stats.items() if k != "usage"},
            **usage_metadata(stats["usage"]),
            "preview": preview(
                traces,
                ["gold_slug", "gold_disposition", "pred_slug", "pred_severity", "kept"],
                rows=8,
            ),
            "path": dg.MetadataValue.path(str(paths.traces)),
        }
    )


@dg.asset_check(
    asset=reasoning_traces,
    description="Every kept trace names one of its retrieved documents or 'inconclusive'.",
)
def trace_conditions_retrieved(settings: PipelineSettings) -> dg.AssetCheckResult:
    traces = pl.read_parquet(settings.paths().traces)
    bad = traces_outside_retrieved(traces)
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={
            "kept_not_in_retrieved": dg.MetadataValue.json(bad[:20]),
            "share_of_parsable_in_retrieved": parsable_in_retrieved_share(traces),
        },
    )


@dg.asset_check(
    asset=reasoning_traces,
    blocking=True,
    description="No kept trace lacks thinking (ERROR); most answered traces have thinking (WARN "
    "otherwise: the teacher's thinking is probably not being read).",
)
def trace_thinking_present(settings: PipelineSettings) -> dg.AssetCheckResult:
    traces = pl.read_parquet(settings.paths().traces)
    kept_empty, share = traces_without_thinking(traces)
    metadata = {"kept_without_thinking": dg.MetadataValue.json(kept_empty[:20])}
    metadata["share_without_thinking"] = round(share, 4)
    if kept_empty:
        return dg.AssetCheckResult(passed=False, metadata=metadata)
    return dg.AssetCheckResult(
        passed=share <= 0.5, severity=dg.AssetCheckSeverity.WARN, metadata=metadata
    )


@dg.asset(
    group_name=GROUP,
    deps=[reasoning_traces, *MODEL_DEPS],
    code_version=version_of("sft_dataset"),
    kinds={"parquet"},
    automation_condition=FOLLOW_IF_SET,
    description="Chat examples (system: retrieved context; user: demographics + query; assistant: "
    "thinking + answer) rendered with the student's chat template, with a dataset card.",
)
def sft_dataset(settings: PipelineSettings) -> dg.MaterializeResult:
    cfg, paths = settings.pipeline_config(), settings.paths()
    from t0_pipeline.cards import provenance

    df, stats = run_sft(paths, cfg.sft, cfg.prompts, cfg.chat_format, provenance(cfg))
    return dg.MaterializeResult(
        metadata={
            **stats,
            "dagster/row_count": df.height,
            "card": dg.MetadataValue.md((paths.sft_dir / "README.md").read_text()),
            "path": dg.MetadataValue.path(str(paths.sft_dir / "train.parquet")),
        }
    )


@dg.asset_check(
    asset=sft_dataset,
    blocking=True,
    description="Examples exist, fit the block size and end their thinking with the chat format's "
    "marker.",
)
def sft_examples_fit_the_format(settings: PipelineSettings) -> dg.AssetCheckResult:
    from t0_pipeline.checks import sft_problems

    cfg, paths = settings.pipeline_config(), settings.paths()
    df = pl.read_parquet(paths.sft_dir / "train.parquet")
    problems = sft_problems(df, cfg.sft.block_size, cfg.chat_format.think_end)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"examples": df.height, "problems": dg.MetadataValue.json(problems)},
    )
