"""Training assets: one student_checkpoint partition per student size.

The partitions are ``train.sizes`` from the config file named by ``$T0_CONFIG`` (read when
the code location loads), so a new size is a new partition and a backfill. Materialising
a partition runs ``python -m t0_pipeline.train`` through the ``training_compute`` resource: a local
Pipes subprocess, or the site profile's Slurm job (torchrun on every node, DeepSpeed ZeRO-3) via
dagster-slurm; rank 0 reports back through Pipes.
One partition per run, in the ``gpu`` concurrency pool so two partitions never fight for one
local GPU.
"""

import os
from pathlib import Path

import dagster as dg

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import load_config
from t0_pipeline.defs.resources import PipelineSettings, TrainingCompute
from t0_pipeline.defs.synthetic import sft_dataset


def size_partitions() -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(list(load_config(os.environ.get("T0_CONFIG") or None).train.sizes))


def build_student_checkpoint(partitions: dg.StaticPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="student_checkpoint", group_name="training", deps=[sft_dataset], partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1), pool="gpu", code_version="1",
        kinds={"pytorch"},
        description="A fine-tuned student (Hugging Face format) per size; checkpoints under "
                    "<data>/students/<size>/, resumable after preemption.",
    )
    def student_checkpoint(context: dg.AssetExecutionContext, settings: PipelineSettings,
                           training_compute: TrainingCompute) -> dg.MaterializeResult:
        size = context.partition_key
        sizes = settings.pipeline_config().train.sizes
        if size not in sizes:
            raise T0Error(f"no base model for size {size!r} in train.sizes ({', '.join(sizes)}); add it to the config.")
        return training_compute.run(
            context, size=size, model=sizes[size], data_dir=str(Path(settings.data_dir).resolve()),
            config_file=str(Path(settings.config_file).resolve()) if settings.config_file else None)

    return student_checkpoint


student_checkpoint = build_student_checkpoint(size_partitions())
