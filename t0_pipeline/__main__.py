"""``python -m t0_pipeline <command> [options]``: the ``t0`` command, for Slurm nodes and scripts
where the console script is not on the PATH (``python -m t0_pipeline train --config t0.yaml``)."""

from t0_pipeline.cli import main

main()
