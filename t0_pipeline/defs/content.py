"""Content checks on the synthetic data, blocking: the queries read as patients' messages and the
kept teacher thinking is about its query, with nothing offensive in what a student trains on
(:mod:`t0_pipeline.synthetic.content_checks`). A check that passes on gibberish would be a
defect."""

import dagster as dg
import polars as pl

from t0_pipeline.defs.resources import PipelineSettings
from t0_pipeline.defs.synthetic import reasoning_traces, synthetic_queries
from t0_pipeline.synthetic.content_checks import corpus_vocabulary, query_content, trace_content
from t0_pipeline.synthetic.query_prompt import load_examples


@dg.asset_check(
    asset=synthetic_queries,
    blocking=True,
    description="At least queries.min_readable_share of each set reads as a patient's own "
    "first-person message in words (not codes, digits or a copy of the writer's examples); no "
    "offensive word.",
)
def queries_read_as_messages(settings: PipelineSettings) -> dg.AssetCheckResult:
    cfg, paths = settings.pipeline_config().queries, settings.paths()
    vocabulary = corpus_vocabulary(paths)
    examples = [e["query"] for e in load_examples(cfg.examples_file)] if cfg.examples else []
    figures, problems = {}, []
    for split in ("eval", "train"):
        queries = pl.read_parquet(paths.synthetic_queries(split))
        figures[split], found = query_content(queries, vocabulary, cfg.min_readable_share, examples)
        problems += [f"{split}: {p}" for p in found]
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "readable_share_eval": figures["eval"]["readable_first_person_share"],
            "readable_share_train": figures["train"]["readable_first_person_share"],
            "min_readable_share": cfg.min_readable_share,
            "figures": dg.MetadataValue.json(figures),
            "problems": dg.MetadataValue.json(problems),
        },
    )


@dg.asset_check(
    asset=reasoning_traces,
    blocking=True,
    description="Some trace is kept, and at least traces.min_grounded_share of the kept ones "
    "think in readable words about their query (a complaint of it, or a retrieved title); no "
    "offensive word in what is kept.",
)
def kept_traces_think_about_their_query(settings: PipelineSettings) -> dg.AssetCheckResult:
    cfg, paths = settings.pipeline_config().traces, settings.paths()
    figures, problems = trace_content(
        pl.read_parquet(paths.traces), corpus_vocabulary(paths), cfg.min_grounded_share
    )
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "readable_grounded_share": figures["readable_grounded_share"],
            "min_grounded_share": cfg.min_grounded_share,
            "figures": dg.MetadataValue.json(figures),
            "problems": dg.MetadataValue.json(problems),
        },
    )
