"""Former path of :mod:`t0_pipeline.training.train`: ``python -m t0_pipeline.train`` runs
``t0 train``."""

from t0_pipeline.training.train import *  # noqa: F403

if __name__ == "__main__":
    from t0_pipeline.cli import run_stage

    run_stage("train")
