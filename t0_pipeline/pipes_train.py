"""The training payload as run by the orchestrator: ``python -m t0_pipeline.pipes_train``.

Dagster starts this (locally as a Pipes subprocess; on a cluster inside the Slurm job) and
passes, through Dagster Pipes, the partition key (student size) plus ``config_file`` and
``data_dir`` extras. It runs the ordinary trainer and reports the checkpoint path, losses
and step counts back as materialisation metadata. It needs only the tiny ``dagster-pipes``
package, not Dagster itself.
"""

from __future__ import annotations

import json
import os
import time

from dagster_pipes import open_dagster_pipes


def main() -> None:
    from t0_pipeline.config import DataPaths, load_config
    from t0_pipeline.train import run_train

    with open_dagster_pipes() as pipes:
        size = pipes.partition_key or "default"
        extras = pipes.extras
        cfg = load_config(extras.get("config_file"))
        train_cfg = cfg.train
        if size in train_cfg.sizes:
            train_cfg.model = train_cfg.sizes[size]
        pipes.log.info(f"training {train_cfg.model} for partition {size}")
        started = time.time()
        result = run_train(DataPaths(extras.get("data_dir")), train_cfg, size)
        hours = (time.time() - started) / 3600
        devices = int(os.environ.get("WORLD_SIZE", "1"))
        pipes.report_asset_materialization(metadata={
            "checkpoint": {"raw_value": str(result.final_dir), "type": "path"},
            "base_model": train_cfg.model,
            "global_step": result.global_step,
            "train_examples": result.train_examples,
            "eval_examples": result.eval_examples,
            "first_train_loss": result.train_loss[0][1] if result.train_loss else None,
            "final_train_loss": result.train_loss[-1][1] if result.train_loss else None,
            "final_eval_loss": result.eval_loss[-1][1] if result.eval_loss else None,
            "eval_losses": {"raw_value": json.dumps(result.eval_loss), "type": "json"},
            "resumed_from": result.resumed_from or "",
            "device_hours": round(hours * devices, 4),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
            "resolved_config": {"raw_value": json.dumps(train_cfg.model_dump(mode="json")), "type": "json"},
        })


if __name__ == "__main__":
    main()
