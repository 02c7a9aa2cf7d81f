"""Report a training run to Dagster through Pipes, when Dagster started it.

``t0 train`` (and so every rank of a Slurm training job) runs inside :func:`dagster_reporter`. When
the process was started by Dagster (its Pipes context is in the environment: a local Pipes
subprocess, or the Slurm job that dagster-slurm submitted) and it is rank 0, the Pipes session is
opened: progress and losses reach the run's log as they happen, and the result becomes the
``student_checkpoint`` materialisation's metadata. Other ranks, and runs started by hand, report
nothing. Needs only ``dagster-pipes``, not Dagster.
"""

from __future__ import annotations

import base64
import json
import os
from contextlib import contextmanager
from typing import Any, Iterator

from t0_pipeline.config import TrainConfig
from t0_pipeline.training.ranks import rank
from t0_pipeline.training.result import TrainResult


def training_metadata(result: TrainResult, config: TrainConfig) -> dict[str, Any]:
    """The materialisation metadata of one finished training run."""
    hours = result.train_seconds / 3600
    sharded = bool(result.params_per_rank) and max(result.params_per_rank) < result.params_total
    return {
        "checkpoint": {"raw_value": str(result.final_dir), "type": "path"},
        "base_model": config.model,
        "global_step": result.global_step,
        "train_examples": result.train_examples,
        "eval_examples": result.eval_examples,
        "skipped_examples": result.skipped_examples,
        "first_train_loss": result.train_loss[0][1] if result.train_loss else None,
        "final_train_loss": result.train_loss[-1][1] if result.train_loss else None,
        "final_eval_loss": result.eval_loss[-1][1] if result.eval_loss else None,
        "eval_losses": {"raw_value": json.dumps(result.eval_loss), "type": "json"},
        "resumed_from": result.resumed_from or "",
        "world_size": result.world_size,
        "device": result.device,
        "deepspeed": result.deepspeed or "none",
        "device_hours": round(hours * result.world_size, 4),
        "gpu_hours": round(hours * result.world_size, 4) if result.device == "cuda" else 0.0,
        "tokens_per_second": result.tokens_per_second,
        "tokens_per_second_per_gpu": result.tokens_per_second_per_gpu,
        # model FLOPs utilisation against the GPU's dense bf16 peak (t0_pipeline.training.gpus);
        # None on CPU
        "mfu": result.mfu,
        "gpu": result.gpu or "",
        "loss": result.loss,
        "memory_plan_as_run": {"raw_value": json.dumps(result.memory_plan), "type": "json"},
        "peak_memory_gb_max": max(result.peak_memory_gb) if result.peak_memory_gb else None,
        "peak_memory_gb_per_rank": {"raw_value": json.dumps(result.peak_memory_gb), "type": "json"},
        "params_total": result.params_total,
        "params_per_rank": {"raw_value": json.dumps(result.params_per_rank), "type": "json"},
        "params_sharded": sharded,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
        "slurm_nodes": int(os.environ.get("SLURM_JOB_NUM_NODES", "0") or 0),
        "resolved_config": {
            "raw_value": json.dumps(config.model_dump(mode="json")),
            "type": "json",
        },
        **_files(result),
    }


def _files(result: TrainResult) -> dict[str, Any]:
    """The loss curve (shown in the UI and linked) and the model card, where written."""
    out: dict[str, Any] = {}
    plot = result.final_dir.parent / "loss.png"
    if plot.is_file():
        encoded = base64.b64encode(plot.read_bytes()).decode()
        out["loss_plot"] = {
            "raw_value": f"![loss by step](data:image/png;base64,{encoded})",
            "type": "md",
        }
        out["loss_png"] = {"raw_value": str(plot), "type": "path"}
    card = result.final_dir / "README.md"
    if card.is_file():
        out["model_card"] = {"raw_value": card.read_text(encoding="utf-8"), "type": "md"}
    runs = result.final_dir.parent / "runs"
    if runs.is_dir():
        out["tracker_files"] = {"raw_value": str(runs), "type": "path"}
    return out


class Reporter:
    """What the trainer tells Dagster; every call is a no-op when no Pipes session is open."""

    def __init__(self, pipes=None):
        self.pipes = pipes

    @property
    def run_id(self) -> str | None:
        """The Dagster run that started this training (names the trackers' run), else None."""
        return self.pipes.run_id if self.pipes is not None else None

    def callbacks(self) -> list:
        if self.pipes is None:
            return []
        from transformers import TrainerCallback

        pipes = self.pipes

        class Progress(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if state.is_world_process_zero and logs:
                    shown = ", ".join(
                        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in logs.items()
                    )
                    pipes.log.info(f"step {state.global_step}/{state.max_steps}: {shown}")

        return [Progress()]

    def info(self, message: str) -> None:
        if self.pipes is not None:
            self.pipes.log.info(message)

    def finished(self, result: TrainResult, config: TrainConfig) -> None:
        if self.pipes is None:
            return
        # the job requeues and resumes; the materialisation comes from the run that finishes
        if result.preempted:
            self.pipes.log.warning(
                f"stopped at step {result.global_step} before the time limit; checkpoint saved"
            )
            return
        self.pipes.report_asset_materialization(metadata=training_metadata(result, config))


@contextmanager
def dagster_reporter() -> Iterator[Reporter]:
    """A Pipes session on rank 0 of a run Dagster started; a silent reporter otherwise."""
    if "DAGSTER_PIPES_CONTEXT" not in os.environ or rank() != 0:
        yield Reporter(None)
        return
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        yield Reporter(pipes)
