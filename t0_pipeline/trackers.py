"""Experiment trackers for training runs: the transformers trainer's own integrations, named by
``train.report_to`` (and ``retriever_tune.report_to``).

The default, ``tensorboard``, needs no account and no network: its event files go under the run's
folder (``<output>/runs/<run name>/``; open them with ``tensorboard --logdir <output>/runs``).
``wandb``, ``mlflow``, ``trackio`` and the trainer's other integrations are extras, checked before
anything loads: a named tracker that is not installed is one error naming what to install. Where
the user has not said otherwise, the trackers that write local files write them beside the
TensorBoard ones (W&B's offline runs for ``wandb sync``, MLflow's file store, Trackio's database),
so a compute node without internet keeps everything in the run's folder.

The run is named after the student size and the Dagster run that started it (:func:`run_name`);
the resolved settings are logged as the run's parameters (:func:`log_settings`).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from t0_pipeline.artifacts import T0Error

# the trainer's integration name → (the module that must import, what to pip install)
TRACKERS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "t0-pipeline[wandb]"),
    "mlflow": ("mlflow", "t0-pipeline[mlflow]"),
    "trackio": ("trackio", "t0-pipeline[trackio]"),
    "comet_ml": ("comet_ml", "comet-ml"),
    "clearml": ("clearml", "clearml"),
    "dvclive": ("dvclive", "dvclive"),
    "neptune": ("neptune", "neptune"),
    "swanlab": ("swanlab", "swanlab"),
    "codecarbon": ("codecarbon", "codecarbon"),
}


def normalise(value: Any) -> list[str]:
    """A ``report_to`` setting as a list (a name, a comma-separated string or a list); ``none`` or
    an empty list = no tracker. Unknown names are a ValueError listing the known ones."""
    if value is None:
        return []
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(
            f"unknown tracker(s) {', '.join(unknown)}; known: {', '.join(TRACKERS)}, or none"
        )
    return list(dict.fromkeys(names))


def check_installed(names: list[str], setting: str) -> None:
    """One error for the first named tracker whose package is missing."""
    import importlib.util

    for name in names:
        module, package = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise T0Error(
                f"{setting} names {name}, which is not installed here: pip install "
                f"'{package}', or take {name} out of {setting} (none = no tracker)."
            )


def run_name(size: str | None, dagster_run_id: str | None = None) -> str:
    """``t0-<size>-<first 8 of the Dagster run id>``, or the start time for a run started by
    hand."""
    stamp = dagster_run_id[:8] if dagster_run_id else time.strftime("%Y%m%d-%H%M%S")
    return f"t0-{(size or 'student').lower()}-{stamp}"


@contextmanager
def tracking(names: list[str], folder: Path, name: str, setting: str) -> Iterator[list[str]]:
    """Check the trackers and, while the block runs, point the local ones at ``folder`` (unless the
    environment already does); yields what ``TrainingArguments.report_to`` takes. The environment
    is restored after, so one process's runs never write into another's folder."""
    check_installed(names, setting)
    if "tensorboard" in names:
        # what its callback imports, loaded now: memory measured before the model counts it
        import torch.utils.tensorboard  # noqa: F401
    runs = Path(folder).resolve() / "runs"
    local = {
        "tensorboard": ("TENSORBOARD_LOGGING_DIR", str(runs / name)),
        "wandb": ("WANDB_DIR", str(runs)),
        "mlflow": ("MLFLOW_TRACKING_URI", (runs / "mlruns").as_uri()),
        "trackio": ("TRACKIO_DIR", str(runs / "trackio")),
    }
    chosen = {local[t][0]: local[t][1] for t in names if t in local}
    saved = {variable: os.environ.get(variable) for variable in chosen}
    # the trackers write from the first rank only; the others (whose start time, and so the run's
    # name, may differ by a second) make no folder
    first_rank = os.environ.get("RANK", "0") == "0"
    for variable, value in chosen.items():
        if saved[variable] is None:
            os.environ[variable] = value
            if first_rank and not value.startswith("file:"):
                Path(value).mkdir(parents=True, exist_ok=True)
    try:
        # "none": the trainer would otherwise pick every installed tracker when given none
        yield names or ["none"]
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)


def flat(settings: dict[str, Any], prefix: str = "t0") -> Iterator[tuple[str, Any]]:
    """``{"train": {"lr": 1}}`` → ``("t0.train.lr", 1)``: parameter names every tracker takes."""
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            yield from flat(value, f"{prefix}.{key}")
        else:
            yield (
                f"{prefix}.{key}",
                value if isinstance(value, (int, float, str, bool)) else str(value),
            )


def log_settings(model, settings: dict[str, Any]):
    """Put ``settings`` (flattened) on the model's config, which every tracker integration logs as
    the run's parameters when training begins; returns a function that takes them off again, so the
    saved checkpoint's ``config.json`` (and its weights digest) never holds them."""
    config = getattr(model, "config", None)
    if config is None:
        return lambda: None
    keys = []
    for key, value in flat(settings):
        setattr(config, key, value)
        keys.append(key)

    def remove() -> None:
        for key in keys:
            if hasattr(config, key):
                delattr(config, key)

    return remove
