"""Former path of :mod:`t0_pipeline.corpus.clean`: ``python -m t0_pipeline.clean`` runs
``t0 clean``."""

from t0_pipeline.corpus.clean import *  # noqa: F403

if __name__ == "__main__":
    from t0_pipeline.cli import run_stage

    run_stage("clean")
