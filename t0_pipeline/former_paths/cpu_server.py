"""Former path of :mod:`t0_pipeline.servers.cpu_server`, which model server commands written
before the stage packages name (``[{python}, -m, t0_pipeline.cpu_server, …]``)."""

import sys

from t0_pipeline.servers.cpu_server import *  # noqa: F403

if __name__ == "__main__":
    from t0_pipeline.servers.cpu_server import main

    sys.exit(main())
