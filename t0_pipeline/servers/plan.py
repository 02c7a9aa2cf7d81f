"""What a model server serves and how: the served name, the checkpoint (a folder, a Hugging Face
name, or a trained student's ``final/``), its tensor parallel size and the command line that starts
it (``servers.command`` with its placeholders filled).

The tensor parallel size, unless set, is the most of the server's GPUs that vLLM accepts for the
model: it must divide the attention heads, and divide or be a multiple of the key-value heads (read
from the checkpoint's ``config.json``, a local folder or the Hugging Face cache; no weights needed).
Qwen2.5-7B's 28 heads on an 8-GPU node give 4, not 8."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, ModelServerConfig, RoleConfig
from t0_pipeline.servers.model_shape import looks_local, read_model_config


@dataclass
class ServerPlan:
    """What one server serves and how: the model's served name, the checkpoint and tensor parallel
    size."""

    name: str
    checkpoint: str
    tensor_parallel_size: int | None = None
    max_model_len: int | None = None
    args: list[str] = field(default_factory=list)
    gpu_memory_utilization: float | None = None
    size: str | None = None  # Slurm: the site profile allocation the job takes

    def tensor_parallel(self, gpus: int) -> tuple[int, str]:
        """(tensor parallel size on ``gpus`` GPUs, why): the entry's own, else the most the model's
        attention heads allow."""
        if self.tensor_parallel_size:
            return self.tensor_parallel_size, "set by serve.tensor_parallel_size"
        heads = attention_heads(self.checkpoint)
        if heads is None:
            return gpus, f"every GPU ({gpus}); the model's config.json is not readable here"
        tp = tensor_parallel_size(gpus, *heads)
        return tp, f"the most of {gpus} GPU(s) that fits {heads[0]} attention heads ({heads[1]} KV)"

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
        if self.gpu_memory_utilization:
            cmd += ["--gpu-memory-utilization", f"{self.gpu_memory_utilization:g}"]
        return cmd + list(self.args)


def tensor_parallel_size(gpus: int, heads: int, kv_heads: int | None = None) -> int:
    """The largest count ≤ ``gpus`` that divides ``heads`` and divides, or is a multiple of,
    ``kv_heads`` (vLLM splits attention heads evenly and replicates key-value heads beyond their
    number)."""
    kv = kv_heads or heads
    for tp in range(max(1, gpus), 0, -1):
        if heads % tp == 0 and (kv % tp == 0 or tp % kv == 0):
            return tp
    return 1


def attention_heads(checkpoint: str) -> tuple[int, int] | None:
    """(attention heads, key-value heads) from the checkpoint's config.json (a folder, or a Hugging
    Face name already in the local cache), or None when it cannot be read here."""
    data = read_model_config(checkpoint) or {}
    heads = data.get("num_attention_heads")
    if not isinstance(heads, int) or heads < 1:
        return None
    kv = data.get("num_key_value_heads")
    return heads, kv if isinstance(kv, int) and kv > 0 else heads


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
    elif looks_local(checkpoint) and not Path(checkpoint).expanduser().exists():
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
        gpu_memory_utilization=launch.gpu_memory_utilization,
        size=launch.size or student,
    )
