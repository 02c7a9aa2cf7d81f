"""Which checkpoints a training run may resume: those written with the same settings.

A run's checkpoints live in ``<output>/checkpoints/run-<digest>/``, the digest taken over what
decides the weights: the training settings (not the operational ones: where checkpoints go, how
often they are saved or logged, DeepSpeed, gradient checkpointing), the SFT data's bytes and the
base model (its weights' digest when local). A run with other settings (a new learning rate, new
data, a re-converted base) therefore starts afresh in its own folder instead of resuming weights
trained another way, while a preempted or requeued run finds its own. Every rank computes the same
folder from the same inputs, so nothing needs to be coordinated between them. ``run.json`` in the
folder records the settings, so a person can tell the folders apart.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from t0_pipeline.artifacts import file_digest
from t0_pipeline.config import TrainConfig
from t0_pipeline.weights import weights_digest

log = logging.getLogger(__name__)

# settings that change how a run is carried out or recorded, not the weights it ends with
OPERATIONAL = {
    "output_dir",
    "dataset",
    "eval_steps",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "sizes",
    "deepspeed",
    "gradient_checkpointing",
}


def run_settings(config: TrainConfig, dataset: Path) -> dict[str, Any]:
    """What decides the weights a run produces."""
    settings = config.model_dump(mode="json", exclude=OPERATIONAL)
    settings["block_size"] = config.block
    settings["dataset_sha256"] = file_digest(dataset)
    settings["base_weights"] = weights_digest(config.model) or config.model
    return settings


def run_dir(config: TrainConfig, dataset: Path, output_dir: Path) -> tuple[Path, dict[str, Any]]:
    """(the checkpoint folder for these settings, the settings); logs when earlier runs with other
    settings left checkpoints that this run will not resume."""
    settings = run_settings(config, dataset)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    root = output_dir / "checkpoints"
    folder = root / f"run-{digest}"
    others = [p for p in root.glob("run-*") if p != folder and any(p.glob("checkpoint-*"))]
    if others and not any(folder.glob("checkpoint-*")):
        log.warning(
            "training settings differ from those of the checkpoints in %s (%s); starting afresh in "
            "%s",
            ", ".join(p.name for p in others),
            differing_keys(settings, others),
            folder,
        )
    return folder, settings


def record_run(folder: Path, settings: dict[str, Any]) -> None:
    """``run.json``: the settings behind the checkpoints in ``folder`` (rank 0 writes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(settings, indent=2, sort_keys=True))


def differing_keys(settings: dict[str, Any], others: list[Path]) -> str:
    """The settings that differ from the newest other run's, by name (for the log)."""
    newest = max(others, key=lambda p: p.stat().st_mtime)
    try:
        theirs = json.loads((newest / "run.json").read_text())
    except (OSError, ValueError):
        return "settings not recorded"
    keys = sorted(k for k in set(settings) | set(theirs) if settings.get(k) != theirs.get(k))
    return "differing: " + ", ".join(keys) if keys else "same settings"


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
)


def checkpoint_complete(folder: Path) -> bool:
    """Whether a ``checkpoint-N`` folder was written whole: the trainer writes its
    ``trainer_state.json`` last, after the weights (or DeepSpeed's shards), optimizer and RNG
    states, so a run killed mid-write leaves a folder without it (or with it cut short)."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        step = int(folder.name.rsplit("-", 1)[1])
    except (OSError, ValueError, IndexError):
        return False
    weights = any((folder / name).is_file() for name in WEIGHT_FILES) or any(
        folder.glob("global_step*")
    )
    return weights and state.get("global_step") == step


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint in ``folder`` written whole; each newer, incomplete one is named in a
    warning and left out (a run killed while writing it, a pre-empted job's last save)."""
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob("checkpoint-*"):
        tail = path.name.rsplit("-", 1)[-1]
        if path.is_dir() and tail.isdigit():
            found.append((int(tail), path))
    for _, path in sorted(found, reverse=True):
        if checkpoint_complete(path):
            return str(path)
        log.warning(
            "%s is incomplete (written when the run stopped: no whole trainer_state.json or "
            "weights); resuming from an earlier checkpoint",
            path,
        )
    return None
