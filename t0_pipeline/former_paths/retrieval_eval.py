"""Former path of :mod:`t0_pipeline.retrieval.evaluate`: ``python -m
t0_pipeline.retrieval_eval`` runs ``t0 eval-retrieval``."""

from t0_pipeline.retrieval.evaluate import *  # noqa: F403

if __name__ == "__main__":
    from t0_pipeline.cli import run_stage

    run_stage("eval-retrieval")
