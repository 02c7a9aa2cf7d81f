"""t0-pipeline: document collection → lean retrieval-augmented reasoning model, as Dagster
assets.

The method's parts are packages: ``corpus`` → ``retrieval`` → ``synthetic`` (through ``llm``) →
``training`` → ``evaluation``, with ``servers`` for the models they call; ``config``, ``cli``,
``defs`` (Dagster) and ``serve`` (the chat service) sit on top. ``python -m t0_pipeline <command>``
is the ``t0`` command.
"""

import os

# the module paths from before the stage packages (``python -m t0_pipeline.train`` in a user's
# Slurm script, ``t0_pipeline.cpu_server`` in a model server's command) resolve to thin shims kept
# in former_paths/
__path__.append(os.path.join(os.path.dirname(__file__), "former_paths"))

# litellm fetches its model price table from the internet when first imported unless told not to;
# set it here so that any import order inside the package keeps the pipeline offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
