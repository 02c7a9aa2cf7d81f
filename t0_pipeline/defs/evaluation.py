"""Evaluation assets: accuracy_report per model (partition), the combined report and its plot.

The partitions are the names in ``evaluation.models`` of the config file named by
``$T0_CONFIG`` (read when the code location loads): base Qwen sizes, fine-tuned students,
API models and the retrieval-only baseline. A new model is a new partition; its runs are
cached per (model, prompt, seed), so re-materialising with more runs computes only the new
ones. The check on the combined report warns when a fine-tuned student scores below its
base model at the same k on the same queries.

Each student size maps onto two partitions, ``student_checkpoint[7B]`` → ``accuracy_report[t0-7b]``
and the base ``accuracy_report[qwen2.5-7b]`` beside it, so the lineage shows which checkpoint a
report measured. When a checkpoint is materialised (a backfill of a new size), the evaluation sensor
evaluates both partitions and refreshes ``accuracy_comparison``: no hand step. Models with a
``serve`` section are served for the run by the ``model_server`` resource (vLLM here or as a Slurm
job).
"""

import base64

import dagster as dg

from t0_pipeline.checks import students_below_base
from t0_pipeline.config import PipelineConfig
from t0_pipeline.defs.models import MODEL_DEPS
from t0_pipeline.defs.resources import ModelServer, PipelineSettings, location_config
from t0_pipeline.defs.roles import usage_metadata
from t0_pipeline.defs.synthetic import retrieved_from, synthetic_queries
from t0_pipeline.defs.training import student_checkpoint
from t0_pipeline.defs.versions import version_of
from t0_pipeline.evaluation.tables import combine, fmt, model_table, read_summaries

GROUP = "evaluation"


def model_partitions() -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(list(location_config().evaluation.models))


def student_mapping(cfg: PipelineConfig) -> dict[str, set[str]]:
    """student size → the evaluation partitions measuring it: the student's entry and its base's."""
    mapping: dict[str, set[str]] = {}
    for name, entry in cfg.evaluation.models.items():
        if entry.student and entry.student in cfg.train.sizes:
            mapping.setdefault(entry.student, set()).add(name)
            if entry.base in cfg.evaluation.models:
                mapping[entry.student].add(entry.base)
    return mapping


# materialised after the student checkpoint it measures is (a backfill of a new size): evaluation
# follows training
AFTER_TRAINING = (
    dg.AutomationCondition.any_deps_updated().allow(dg.AssetSelection.assets("student_checkpoint"))
    & ~dg.AutomationCondition.in_progress()
).with_label("a student checkpoint it measures was updated")


def _accuracy_deps(cfg: PipelineConfig, checkpoints: dg.AssetsDefinition | None) -> list:
    """What an accuracy report reads: the query set, the index it retrieves from, the base models,
    and (per size) the student checkpoints of that size's entries."""
    index = retrieved_from(cfg.evaluation.index, cfg.evaluation.mode)
    deps: list = [synthetic_queries, *index, *MODEL_DEPS]
    if checkpoints is None:
        return deps
    sizes = checkpoints.partitions_def.get_partition_keys()  # type: ignore[union-attr]
    mapping = {size: names for size, names in student_mapping(cfg).items() if size in sizes}
    if mapping:
        deps.append(dg.AssetDep(checkpoints, partition_mapping=dg.StaticPartitionMapping(mapping)))
    return deps


def _report_metadata(summary: dict, rows: int, predictions) -> dict:
    headline = {
        f"{field}_accuracy_k{k}": fmt(s.get(f"{field}_accuracy"))
        for k, s in summary["by_k"].items()
        for field in ("condition", "disposition")
    }
    return {
        **headline,
        "queries": summary["queries"],
        "runs": summary["runs"],
        "seeds": dg.MetadataValue.json(summary["seeds"]),
        "dagster/row_count": rows,
        "notes": "; ".join(summary["notes"]) or "none",
        "table": dg.MetadataValue.md(model_table(summary)),
        "prompt_hash": summary["prompt_hash"],
        "queries_hash": summary["queries_hash"],
        **usage_metadata(summary["usage"]),
        "predictions": dg.MetadataValue.path(str(predictions)),
        "served_checkpoint": summary["served_checkpoint"] or "none (reached at its api_base)",
        # the digest of the weights measured (what the cached answers are keyed by)
        "weights": summary.get("weights") or "not local (the model's name identifies it)",
    }


def build_accuracy_report(
    partitions: dg.StaticPartitionsDefinition,
    checkpoints: dg.AssetsDefinition | None = None,
    cfg: PipelineConfig | None = None,
) -> dg.AssetsDefinition:
    cfg = cfg or PipelineConfig()

    @dg.asset(
        name="accuracy_report",
        group_name=GROUP,
        deps=_accuracy_deps(cfg, checkpoints),
        automation_condition=AFTER_TRAINING if cfg.automation.evaluation else None,
        partitions_def=partitions,
        pool="llm",
        code_version=version_of("accuracy_report"),
        kinds={"python", "parquet"},
        description="Condition and disposition accuracy of one model at k=0 and k=5, mean ± std "
        "over runs, by query type, with the severity confusion matrix; per-query predictions kept "
        "for error analysis.",
    )
    def accuracy_report(
        context: dg.AssetExecutionContext, settings: PipelineSettings, model_server: ModelServer
    ) -> dg.MaterializeResult:
        from t0_pipeline.evaluation.accuracy import model_settings, run_served_evaluation
        from t0_pipeline.evaluation.cases import EvaluationInputs

        cfg, paths, name = settings.pipeline_config(), settings.paths(), context.partition_key
        # the resource's retriever (one per process), opened only when some k needs it
        inputs = EvaluationInputs.resolve(cfg, paths)
        inputs.retriever = lambda: settings.retriever(cfg.evaluation.index, cfg)
        servers = model_server.factory(
            cfg, paths, model_settings(cfg.evaluation, name).size, context.log.info
        )
        df, summary = run_served_evaluation(paths, inputs, name, servers, progress=context.log.info)
        for note in summary["notes"]:
            context.log.warning(f"{name}: {note}")
        predictions = paths.accuracy_dir(name) / "predictions.parquet"
        return dg.MaterializeResult(metadata=_report_metadata(summary, df.height, predictions))

    return accuracy_report


accuracy_report = build_accuracy_report(model_partitions(), student_checkpoint, location_config())


@dg.asset(
    group_name=GROUP,
    deps=[accuracy_report],
    code_version=version_of("accuracy_comparison"),
    kinds={"python", "csv"},
    automation_condition=(
        dg.AutomationCondition.any_deps_updated() & ~dg.AutomationCondition.in_progress()
    ).with_label("a model's accuracy report was updated"),
    description="Every evaluated model in one table (Tables 2-4 layout), by query type, severity "
    "error shares, and condition accuracy by model size (base alone / base + retrieval / "
    "fine-tuned), like Figure 5.",
)
def accuracy_comparison(
    context: dg.AssetExecutionContext, settings: PipelineSettings
) -> dg.MaterializeResult:
    cfg, paths = settings.pipeline_config(), settings.paths()
    report = combine(paths, cfg.evaluation)
    context.log.info("\n" + report.markdown)
    plot = ""
    if report.png is not None:
        encoded = base64.b64encode(report.png.read_bytes()).decode()
        plot = f"\n\n![accuracy by size](data:image/png;base64,{encoded})"
    return dg.MaterializeResult(
        metadata={
            "models": dg.MetadataValue.json(report.models),
            "not_evaluated": dg.MetadataValue.json(report.missing),
            "table": dg.MetadataValue.md(report.markdown + plot),
            "csv": dg.MetadataValue.path(str(report.csv)),
            "students_below_base": len(report.below_base),
        }
    )


@dg.asset_check(
    asset=accuracy_comparison,
    description="No fine-tuned student scores below its base model (same k, same queries) on "
    "condition accuracy (WARN).",
)
def students_not_below_base(settings: PipelineSettings) -> dg.AssetCheckResult:
    cfg, paths = settings.pipeline_config(), settings.paths()
    below = students_below_base(read_summaries(paths, cfg.evaluation))
    return dg.AssetCheckResult(
        passed=not below,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"below_base": dg.MetadataValue.json(below)},
    )


@dg.asset_check(
    asset=accuracy_report,
    description="Every evaluated model has one prediction per (k, run, query).",
)
def one_prediction_per_case(settings: PipelineSettings) -> dg.AssetCheckResult:
    import json

    import polars as pl

    from t0_pipeline.checks import prediction_problems

    paths, problems, models = settings.paths(), {}, []
    for summary_path in sorted(paths.accuracy_dir().glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        models.append(summary["model"])
        found = prediction_problems(
            pl.read_parquet(summary_path.with_name("predictions.parquet")), summary
        )
        if found:
            problems[summary["model"]] = found
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "models": dg.MetadataValue.json(models),
            "problems": dg.MetadataValue.json(problems),
        },
    )
