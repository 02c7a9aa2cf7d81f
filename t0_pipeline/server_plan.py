"""What a model server serves and how: the served name, the checkpoint (a folder, a Hugging Face
name, or a trained student's ``final/``), its tensor parallel size and the command line that starts
it (``servers.command`` with its placeholders filled)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, ModelServerConfig, RoleConfig


@dataclass
class ServerPlan:
    """What one server serves and how: the model's served name, the checkpoint and tensor parallel
    size."""

    name: str
    checkpoint: str
    tensor_parallel_size: int | None = None
    max_model_len: int | None = None
    args: list[str] = field(default_factory=list)

    def command(self, servers: ModelServerConfig, host: str, port: str, tp: int) -> list[str]:
        values = {
            "checkpoint": self.checkpoint,
            "name": self.name,
            "host": host,
            "port": port,
            "tp": str(tp),
            "python": sys.executable,
        }
        # only these placeholders are filled: other braces (JSON arguments) pass through untouched
        cmd = [
            re.sub(r"\{(checkpoint|name|host|port|tp|python)\}", lambda m: values[m.group(1)], part)
            for part in servers.command
        ]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        return cmd + list(self.args)


def plan_for(name: str, entry: RoleConfig, paths: DataPaths) -> ServerPlan:
    """The server a role or an evaluation entry asks for; a student entry serves that student's
    ``final/``."""
    launch = entry.serve
    if launch is None:
        raise T0Error(f"model {name!r} has no serve section; it is reached at its api_base.")
    checkpoint = launch.checkpoint
    student = getattr(entry, "student", None)
    if checkpoint is None:
        if not student:
            raise T0Error(
                f"model {name!r}: serve needs a checkpoint (a folder or Hugging Face name), or "
                "`student` naming a train.sizes entry whose checkpoint to serve."
            )
        final = paths.student_dir(student) / "final"
        if not (final / "config.json").is_file():
            raise T0Error(
                f"model {name!r} serves the {student} student, but {final} holds no trained "
                f"checkpoint; materialise student_checkpoint[{student}] (or `t0 train --partition "
                f"{student}`) first."
            )
        checkpoint = str(final.resolve())
    elif _looks_local(checkpoint) and not Path(checkpoint).expanduser().exists():
        hint = (
            "materialise base_models first (`t0 base-models`)"
            if Path(checkpoint).parent.name == "models"
            else "fix serve.checkpoint"
        )
        raise T0Error(f"model {name!r}: checkpoint folder {checkpoint} does not exist; {hint}.")
    return ServerPlan(
        name=entry.served_name,
        checkpoint=checkpoint,
        tensor_parallel_size=launch.tensor_parallel_size,
        max_model_len=launch.max_model_len,
        args=list(launch.args),
    )


def _looks_local(checkpoint: str) -> bool:
    return checkpoint.startswith(("/", "./", "../", "~")) or checkpoint.count("/") >= 2
