"""Former path of :mod:`t0_pipeline.corpus.crawl`: ``python -m t0_pipeline.crawl`` runs
``t0 crawl``."""

from t0_pipeline.corpus.crawl import *  # noqa: F403

if __name__ == "__main__":
    from t0_pipeline.cli import run_stage

    run_stage("crawl")
