"""Former path of :mod:`t0_pipeline.retrieval.index`: ``python -m t0_pipeline.index`` runs
``t0 index``."""

from t0_pipeline.retrieval.index import *  # noqa: F403

if __name__ == "__main__":
    from t0_pipeline.cli import run_stage

    run_stage("index")
