"""What a checkpoint's weights are, as a short digest: the identity every cached model answer is
keyed by, so a retrained student is evaluated afresh and an unchanged one is never paid for twice.

A local checkpoint (a folder, or one weight file such as a GGUF) → ``sha256:<20 hex>`` over its
``config.json`` and weight files (names and contents). Hashing tens of GB takes a while, so the
digest is remembered in ``t0-weights-digest.json`` beside the weights, keyed by each file's size
and modification time: an unchanged checkpoint is hashed once. A hub name or an API model has no
local weights (``None``): its name is its identity.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".npz")
SIDECAR = "t0-weights-digest.json"
_CHUNK = 8 << 20


def weight_files(checkpoint: Path) -> list[Path]:
    """The files whose bytes decide the model's outputs: config.json and the weights."""
    if checkpoint.is_file():
        return [checkpoint]
    return sorted(
        p
        for p in checkpoint.iterdir()
        if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name == "config.json")
    )


def weights_digest(checkpoint: str | Path | None) -> str | None:
    """``sha256:…`` of a local checkpoint's weights; None when ``checkpoint`` is no local path."""
    if not checkpoint:
        return None
    path = Path(checkpoint).expanduser()
    if not path.exists():
        return None
    files = weight_files(path)
    stats = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    sidecar = (path if path.is_dir() else path.parent) / SIDECAR
    remembered = _read_sidecar(sidecar)
    if remembered and remembered.get("files") == stats:
        return remembered["digest"]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with f.open("rb") as handle:
            while block := handle.read(_CHUNK):
                digest.update(block)
    value = f"sha256:{digest.hexdigest()[:20]}"
    try:  # a read-only checkpoint is hashed again next time, nothing worse
        tmp = sidecar.with_suffix(f".{os.getpid()}.tmp")  # ranks may hash at once
        tmp.write_text(json.dumps({"digest": value, "files": stats}))
        tmp.replace(sidecar)
    except OSError:
        pass
    return value


def _read_sidecar(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) and isinstance(data.get("digest"), str) else None
    except (OSError, ValueError):
        return None
