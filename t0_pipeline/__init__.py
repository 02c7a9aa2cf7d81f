"""t0-pipeline: document collection → lean retrieval-augmented reasoning model, as Dagster
assets."""

import os

# litellm fetches its model price table from the internet when first imported unless told not to;
# set it here so that any import order inside the package keeps the pipeline offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
