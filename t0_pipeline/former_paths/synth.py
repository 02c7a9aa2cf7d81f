"""Former path of :mod:`t0_pipeline.synthetic.queries`: ``python -m t0_pipeline.synth`` runs
``t0 synth-queries``."""

from t0_pipeline.synthetic.queries import *  # noqa: F403

if __name__ == "__main__":
    from t0_pipeline.cli import run_stage

    run_stage("synth-queries")
