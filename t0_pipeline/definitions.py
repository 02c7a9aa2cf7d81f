"""The Dagster code location: every asset, check, resource, job, schedule and sensor.

Open it with ``dagster dev`` (``make ui``); materialise it headless with
``dagster asset materialize -m t0_pipeline.definitions --select '*'`` (``make demo``).
"""

import dagster as dg

from t0_pipeline.defs import (
    content,
    corpus,
    evaluation,
    models,
    retrieval,
    retriever_tuning,
    synthetic,
    training,
)
from t0_pipeline.defs.resources import ModelServer, PipelineSettings, TrainingCompute

# Everything downstream of the source that needs no LLM endpoint: what a re-crawl refreshes.
refresh_corpus = dg.define_asset_job(
    "refresh_corpus",
    selection=dg.AssetSelection.assets(corpus.condition_pages).downstream()
    & dg.AssetSelection.groups("corpus", "retrieval"),
    description="Re-crawl the source and rebuild whatever changed (indexes update incrementally).",
)
synthetic_data_job = dg.define_asset_job(
    "synthetic_data",
    selection=dg.AssetSelection.groups("synthetic_data"),
    description="LLM summaries, synthetic queries, teacher traces and the SFT dataset (needs LLM "
    "endpoints).",
)
evaluation_job = dg.define_asset_job(
    "evaluation",
    selection=dg.AssetSelection.groups("evaluation"),
    description="Accuracy of every configured model (one run per partition) and the combined "
    "report.",
)
observe_corpus = dg.define_asset_job(
    "observe_corpus",
    selection=[corpus.corpus_source],
    description="Hash the source; a new hash triggers the eager corpus assets.",
)

weekly_recrawl = dg.ScheduleDefinition(
    name="weekly_recrawl",
    job=refresh_corpus,
    cron_schedule="0 3 * * 1",
    execution_timezone="Europe/London",
    description="Mondays 03:00: re-crawl (conditional requests) and refresh the indexes.",
)
daily_observe = dg.ScheduleDefinition(
    name="daily_corpus_observation",
    job=observe_corpus,
    cron_schedule="0 6 * * *",
    execution_timezone="Europe/London",
    description="Daily 06:00: hash the source (no crawl of unchanged pages); a new version makes "
    "corpus_automation rebuild the corpus, summaries, indexes and reports.",
)
corpus_automation = dg.AutomationConditionSensorDefinition(
    "corpus_automation",
    target=dg.AssetSelection.all() - dg.AssetSelection.groups("evaluation"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-materialises assets whose upstream changed (a new corpus_source data version, "
    "new synthetic queries): corpus → summaries → indexes → evaluation queries → reports; the "
    "model-calling and training groups too when automation.synthetic_data / automation.training "
    "are set.",
)
evaluation_automation = dg.AutomationConditionSensorDefinition(
    "evaluation_automation",
    target=dg.AssetSelection.assets(evaluation.accuracy_report, evaluation.accuracy_comparison),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates a student and its base once its checkpoint is materialised (a backfill "
    "of a new size), then refreshes the comparison table and plot.",
)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(
        [models, corpus, retrieval, retriever_tuning, synthetic, training, evaluation]
    ),
    asset_checks=dg.load_asset_checks_from_modules(
        [models, corpus, retrieval, retriever_tuning, synthetic, content, training, evaluation]
    ),
    jobs=[refresh_corpus, observe_corpus, synthetic_data_job, evaluation_job],
    schedules=[weekly_recrawl, daily_observe],
    sensors=[corpus_automation, evaluation_automation],
    resources={
        "settings": PipelineSettings(),
        "training_compute": TrainingCompute(),
        "model_server": ModelServer(),
    },
)
