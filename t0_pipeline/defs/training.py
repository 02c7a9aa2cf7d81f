"""Training assets: one student_checkpoint partition per student size.

The partitions are ``train.sizes`` from the config file named by ``$T0_CONFIG`` (read when
the code location loads), so a new size is a new partition and a backfill. Materialising
a partition runs ``python -m t0_pipeline train`` through the ``training_compute`` resource: a local
Pipes subprocess, or the site profile's Slurm job (torchrun on every node, DeepSpeed ZeRO-3) via
dagster-slurm; rank 0 reports back through Pipes.
One partition per run, in the ``gpu`` concurrency pool so two partitions never fight for one
local GPU.
"""

from pathlib import Path

import dagster as dg

from t0_pipeline.artifacts import T0Error
from t0_pipeline.defs.models import MODEL_DEPS
from t0_pipeline.defs.resources import (
    PipelineSettings,
    TrainingCompute,
    job_log_dir,
    location_config,
)
from t0_pipeline.defs.synthetic import sft_dataset
from t0_pipeline.defs.versions import version_of


def size_partitions() -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(list(location_config().train.sizes))


def build_student_checkpoint(partitions: dg.StaticPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="student_checkpoint",
        group_name="training",
        deps=[sft_dataset, *MODEL_DEPS],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
        pool="gpu",
        code_version=version_of("student_checkpoint"),
        automation_condition=dg.AutomationCondition.eager()
        if location_config().automation.training
        else None,
        kinds={"pytorch"},
        description="A fine-tuned student (Hugging Face format) per size; checkpoints under "
        "<data>/students/<size>/, resumable after preemption.",
    )
    def student_checkpoint(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        training_compute: TrainingCompute,
    ) -> dg.MaterializeResult:
        size = context.partition_key
        cfg = settings.pipeline_config()
        sizes = cfg.train.sizes
        if size not in sizes:
            raise T0Error(
                f"no base model for size {size!r} in train.sizes ({', '.join(sizes)}); add it to "
                "the config."
            )
        # the job reads the settings this run resolved (file, environment, launchpad overrides),
        # wherever it runs
        resolved = (
            Path(job_log_dir(str(Path(settings.data_dir).resolve()), size)) / "pipeline.config.json"
        )
        resolved.parent.mkdir(parents=True, exist_ok=True)
        resolved.write_text(cfg.model_dump_json(indent=2), encoding="utf-8")
        # blocking pre-check: a run the memory plan says cannot fit is not queued
        planned = training_compute.memory_plan(cfg, settings.paths(), size)
        if planned is not None and planned.blocking_reason():
            raise T0Error(planned.blocking_reason())
        if planned is not None:
            context.log.info(planned.lines()[1])
        result = training_compute.run(
            context,
            size=size,
            model=sizes[size],
            data_dir=str(Path(settings.data_dir).resolve()),
            config_file=str(resolved),
        )
        return result._replace(metadata={**(result.metadata or {}), **plan_metadata(planned)})

    return student_checkpoint


def plan_metadata(planned) -> dict:
    """The memory plan as materialisation metadata: the verdict and the itemised table."""
    if planned is None:
        return {}
    chosen = planned.chosen
    rows = "\n".join(f"| {name} | {gib:.2f} | {how} |" for name, gib, how in chosen.items)
    total = f"| total | {chosen.total_gib:.2f} | |"
    table = f"| item | GiB per GPU | counted as |\n|---|---|---|\n{rows}\n{total}"
    return {
        "memory_plan": dg.MetadataValue.md(f"{planned.header()}\n\n{table}\n\n{chosen.verdict()}"),
        "memory_plan_gib_per_gpu": round(chosen.total_gib, 2),
        "memory_plan_verdict": chosen.verdict(),
    }


student_checkpoint = build_student_checkpoint(size_partitions())


@dg.asset_check(
    asset=student_checkpoint,
    description="Every trained size's final/ is a loadable checkpoint (config, weights, "
    "tokenizer).",
)
def final_checkpoints_complete(settings: PipelineSettings) -> dg.AssetCheckResult:
    from t0_pipeline.checks import checkpoint_problems

    paths, sizes = settings.paths(), settings.pipeline_config().train.sizes
    trained = [size for size in sizes if (paths.student_dir(size) / "final").exists()]
    problems = [
        p for size in trained for p in checkpoint_problems(paths.student_dir(size) / "final")
    ]
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "trained_sizes": dg.MetadataValue.json(trained),
            "problems": dg.MetadataValue.json(problems),
        },
    )
