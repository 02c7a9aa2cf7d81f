"""Former path of :mod:`t0_pipeline.synthetic.sft`: ``python -m t0_pipeline.sft`` runs
``t0 sft``."""

from t0_pipeline.synthetic.sft import *  # noqa: F403

if __name__ == "__main__":
    from t0_pipeline.cli import run_stage

    run_stage("sft")
