"""Former path of :mod:`t0_pipeline.retrieval.retrieve`: ``python -m t0_pipeline.retrieve`` runs
``t0 retrieve``."""

from t0_pipeline.retrieval.retrieve import *  # noqa: F403

if __name__ == "__main__":
    from t0_pipeline.cli import run_stage

    run_stage("retrieve")
