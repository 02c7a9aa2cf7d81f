"""Former path of :mod:`t0_pipeline.synthetic.traces`: ``python -m t0_pipeline.traces`` runs
``t0 traces``."""

from t0_pipeline.synthetic.traces import *  # noqa: F403

if __name__ == "__main__":
    from t0_pipeline.cli import run_stage

    run_stage("traces")
