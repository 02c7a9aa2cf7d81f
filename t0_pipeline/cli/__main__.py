"""``python -m t0_pipeline.cli``: the ``t0`` command."""

from t0_pipeline.cli import main

main()
