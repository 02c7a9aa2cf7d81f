"""Hand a trained student on: ``t0 export --size Z --to DIR`` copies its ``final/`` (weights,
tokenizer and chat template, ``generation_config.json`` with the budget-forcing settings, the model
card and ``loss.png``) into a folder that loads on its own with plain ``from_pretrained``, and
optionally pushes that folder to a private repository on a Hugging Face hub.

What only this machine needs stays behind (the weights-digest cache, whose file times are this
machine's). The folder is written under a temporary name and renamed when whole, and an existing
folder that is not empty is never overwritten.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from t0_pipeline.artifacts import T0Error
from t0_pipeline.training.model_card import EVALUATION_START, NOT_EVALUATED
from t0_pipeline.weights import SIDECAR, weights_digest

LEFT_BEHIND = {SIDECAR}


@dataclass
class Exported:
    folder: Path
    files: list[tuple[str, int]] = field(default_factory=list)  # (name, bytes)
    weights: str | None = None
    evaluated: bool = False
    pushed_to: str | None = None


def export_student(final: Path, to: Path) -> Exported:
    """Copy ``final`` into ``to`` (new, or an empty folder)."""
    final, to = Path(final), Path(to)
    if not (final / "config.json").is_file():
        raise T0Error(
            f"no trained student at {final}; train it first (t0 train --partition SIZE, or "
            "materialise student_checkpoint for the size)."
        )
    if not (final / "README.md").is_file():
        raise T0Error(f"{final} has no model card (README.md); train it again with this version.")
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise T0Error(f"{to} exists and is not an empty folder; name a new folder with --to.")
    staging = to.with_name(f".{to.name}.export-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for item in sorted(final.iterdir()):
            if item.name in LEFT_BEHIND:
                continue
            copy = shutil.copytree if item.is_dir() else shutil.copy2
            copy(item, staging / item.name)
        if to.exists():
            to.rmdir()
        staging.rename(to)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    card = (to / "README.md").read_text(encoding="utf-8")
    body = card[card.find(EVALUATION_START) :]
    return Exported(
        folder=to,
        files=[(p.name, p.stat().st_size) for p in sorted(to.iterdir()) if p.is_file()],
        weights=weights_digest(final),
        evaluated=NOT_EVALUATED.split(":")[0] not in body,
    )


def push(folder: Path, repo: str, hub_url: str | None = None) -> str:
    """Upload ``folder`` to the private model repository ``repo`` (created if missing) on the hub
    at ``hub_url`` (default ``$HF_ENDPOINT``, else huggingface.co) with ``$HF_TOKEN``; its URL."""
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    endpoint = hub_url or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    api = HfApi(endpoint=endpoint)
    try:
        api.create_repo(repo, private=True, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            folder_path=str(folder), repo_id=repo, commit_message="t0 export"
        )
    except HfHubHTTPError as exc:
        raise T0Error(
            f"the hub at {endpoint} refused the push to {repo} ({str(exc).splitlines()[0]}); "
            "check HF_TOKEN and that you may write there. The exported folder is kept."
        ) from None
    except (httpx.TransportError, OSError) as exc:
        raise T0Error(
            f"cannot reach the hub at {endpoint} ({exc.__class__.__name__}); check --hub-url or "
            "HF_ENDPOINT. The exported folder is kept."
        ) from None
    return str(getattr(commit, "repo_url", None) or f"{endpoint}/{repo}")
