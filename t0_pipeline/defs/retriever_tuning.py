"""The tuned retriever: the embedder fine-tuned on the synthetic training queries, and the check
that the dense indexes use whichever embedder scored better on the development split."""

import dagster as dg

from t0_pipeline.defs.corpus import conditions, summaries
from t0_pipeline.defs.resources import PipelineSettings
from t0_pipeline.defs.retrieval import SYNTHETIC_QUERIES
from t0_pipeline.defs.versions import version_of


@dg.asset(
    group_name="models",
    deps=[summaries, conditions, SYNTHETIC_QUERIES],
    code_version=version_of("retriever_model"),
    automation_condition=(
        dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated()).allow(
            dg.AssetSelection.keys(SYNTHETIC_QUERIES)
        )
        & ~dg.AutomationCondition.in_progress()
    ).with_label("after new synthetic queries"),
    kinds={"pytorch"},
    description="The embedder fine-tuned on the synthetic training queries (query → its "
    "condition's document; in-batch and mined hard negatives), compared with the current one on a "
    "development split held out from those queries; when better it becomes the embedder of every "
    "dense index, which then re-index. The evaluation split is scored for the report only.",
)
def retriever_model(
    context: dg.AssetExecutionContext, settings: PipelineSettings
) -> dg.MaterializeResult:
    from t0_pipeline.retrieval.tune import run_tune

    cfg, paths = settings.pipeline_config(tuned=False), settings.paths()
    result = run_tune(
        cfg.retriever_tune, cfg.retrieval_eval, cfg.embedding, paths, log_fn=context.log.info
    )
    context.log.info("\n" + result.table())
    return dg.MaterializeResult(
        metadata={
            "p_at_k": dg.MetadataValue.md(result.table()),
            "used": result.used,
            "mean_gain": round(result.gain, 4),
            "pairs": result.pairs,
            "dev_queries": result.dev_queries,
            "eval_queries": result.eval_queries,
            "eval_p_at_k": dg.MetadataValue.json(
                {"current": result.eval_before, "tuned": result.eval_after}
            ),
            "steps": result.steps,
            "train_loss": result.train_loss,
            "seconds": result.seconds,
            "base": result.base,
            "model": dg.MetadataValue.path(result.model_dir),
            "notes": dg.MetadataValue.json(result.notes),
        }
    )


@dg.asset_check(
    asset=retriever_model,
    description="The dense indexes use whichever embedder scored better on the development split "
    "(held out from the training queries): the tuned one only when it gained p@k there.",
)
def better_embedder_in_use(settings: PipelineSettings) -> dg.AssetCheckResult:
    import json

    from t0_pipeline.checks import embedder_choice_problems

    paths = settings.paths()
    last = json.loads((paths.retriever_dir / "last_run.json").read_text(encoding="utf-8"))
    active = paths.retriever_dir / "active.json"
    in_use = settings.pipeline_config().embedding.model
    tuned_in_use = in_use is not None and active.exists() and in_use == last["model_dir"]
    problems = embedder_choice_problems(last, tuned_in_use)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "problems": dg.MetadataValue.json(problems),
            "before": dg.MetadataValue.json(last["before"]),
            "after": dg.MetadataValue.json(last["after"]),
            "tuned_in_use": tuned_in_use,
            "embedder": in_use or "configured default",
        },
    )
