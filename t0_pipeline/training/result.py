"""What one training run did (:class:`TrainResult`, saved as ``metrics.json``), read from the
trainer's state when it ends: losses and learning rates by step, throughput, memory per rank and,
on a GPU in the table, MFU."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t0_pipeline.artifacts import T0Error
from t0_pipeline.training.ranks import gather_per_rank, peak_memory_gb


@dataclass
class TrainResult:
    final_dir: Path
    train_loss: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    eval_loss: list[tuple[int, float]] = field(default_factory=list)
    learning_rates: list[tuple[int, float]] = field(default_factory=list)
    global_step: int = 0
    resumed_from: str | None = None
    train_examples: int = 0
    eval_examples: int = 0
    skipped_examples: int = 0  # longer than block_size (or no answer): left out, never cut
    world_size: int = 1
    device: str = "cpu"
    deepspeed: str | None = None  # the DeepSpeed config used, None = none
    train_seconds: float = 0.0
    tokens_per_second: float = 0.0  # input tokens seen (all ranks) per second of training
    # per rank: GPU allocated, or process RSS on CPU
    peak_memory_gb: list[float] = field(default_factory=list)
    # parameters each rank holds (ZeRO-3: its shard)
    params_per_rank: list[int] = field(default_factory=list)
    params_total: int = 0
    # per tensor, gathered before saving final/
    weights_digest: dict[str, str] = field(default_factory=dict)
    preempted: bool = False  # stopped at a checkpoint before the time limit; final/ not written
    loss: str = "plain"  # plain, chunked or liger (train.loss auto resolved by the memory plan)
    # t0_pipeline.training.memory_plan, as run
    memory_plan: dict[str, Any] = field(default_factory=dict)
    # per rank, before the model was loaded (libraries, data): peak − baseline is what the plan
    # predicts on CPU ranks
    baseline_memory_gb: list[float] = field(default_factory=list)
    loaded_memory_gb: list[float] = field(default_factory=list)  # per rank, the model loaded
    tokens_per_second_per_gpu: float = 0.0
    mfu: float | None = None  # model FLOPs utilisation against the GPU's dense bf16 peak
    gpu: str | None = None  # the GPU table's entry (t0_pipeline.training.gpus), None on CPU

    def metrics(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "final_dir"}
        out["final_dir"] = str(self.final_dir)
        return out


def throughput(result: TrainResult, model: str, rows: list[dict]) -> None:
    """Tokens/s per device and, on a GPU in the table, MFU: model FLOPs per token (6·N + attention
    at the mean example length) × tokens/s per GPU over the dense bf16 peak."""
    from t0_pipeline.servers.model_shape import model_shape
    from t0_pipeline.training.gpus import local_gpu, mfu

    per_device = result.tokens_per_second / max(1, result.world_size)
    result.tokens_per_second_per_gpu = round(per_device, 1)
    here = local_gpu()
    if here is None or here[0] is None or not rows:
        return
    result.gpu = here[0].key
    try:
        shape = model_shape(model)
    except T0Error:
        return
    mean_len = sum(len(r["input_ids"]) for r in rows) / len(rows)
    value = mfu(shape.train_flops_per_token(mean_len), per_device, here[0])
    result.mfu = round(value, 4) if value is not None else None


def read_state(result: TrainResult, state, seconds: float, cuda: bool) -> None:
    """Throughput, memory per rank, and the loss and learning-rate curves from the trainer's log."""
    tokens = getattr(state, "num_input_tokens_seen", 0) or 0
    result.tokens_per_second = round(tokens / seconds, 1) if seconds > 0 else 0.0
    result.peak_memory_gb = gather_per_rank(peak_memory_gb(cuda))
    for entry in state.log_history:
        if "loss" in entry and not math.isnan(entry["loss"]):
            result.train_loss.append((entry["step"], float(entry["loss"])))
            if "learning_rate" in entry:
                result.learning_rates.append((entry["step"], float(entry["learning_rate"])))
        if "eval_loss" in entry:
            result.eval_loss.append((entry["step"], float(entry["eval_loss"])))
