"""What each training rank knows of the others: its place (rank, world size), what it measured
(peak memory, parameters held, weight fingerprints gathered across ZeRO-3 shards), the stop file
every rank must agree on, and the error a failed rank leaves for the submitter to quote."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def close_process_group() -> None:
    """Leave the process group cleanly once training is done: a rank that exits with it still open
    can abort in its communication threads ("terminate called without an active exception")."""
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def stop_file_callback(stop_file: str | None):
    """Save a checkpoint and stop, on every rank at the same step, once ``stop_file`` exists."""
    from transformers import TrainerCallback

    class StopFile(TrainerCallback):
        stopped = False

        def on_step_end(self, args, state, control, **kwargs):
            if not stop_file:
                return
            import torch
            import torch.distributed as dist

            flag = torch.tensor([1.0 if os.path.exists(stop_file) else 0.0], device=args.device)
            if dist.is_available() and dist.is_initialized():
                # ranks must agree, or the save's collectives hang
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() > 0:
                log.warning(
                    "stop requested (%s): saving a checkpoint at step %d and stopping",
                    stop_file,
                    state.global_step,
                )
                control.should_save = True
                control.should_training_stop = True
                self.stopped = True

    return StopFile()


def gather_per_rank(value):
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, value)
        return out
    return [value]


def _status_gib(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (Linux), in GiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _trim() -> None:
    """Give freed heap memory back to the system (glibc), so resident memory counts live data."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_now_gb(cuda: bool) -> float:
    """GPU memory allocated, or the process's resident memory on CPU."""
    import torch

    if cuda:
        return round(torch.cuda.memory_allocated() / 2**30, 3)
    _trim()
    return round(_status_gib("VmRSS") or 0.0, 3)


def reset_peak_memory(cuda: bool) -> None:
    """Start measuring the peak afresh (model loading can peak higher than training on CPU)."""
    import torch

    if cuda:
        torch.cuda.reset_peak_memory_stats()
        return
    _trim()
    try:  # "5" resets the resident-set high-water mark (Linux ≥ 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_gb(cuda: bool) -> float:
    import resource

    import torch

    if cuda:
        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    hwm = _status_gib("VmHWM")
    if hwm is not None:
        return round(hwm, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KiB on Linux


def parameter_counts(model) -> tuple[int, int]:
    """(held by this rank, whole model): a ZeRO-3 parameter keeps only its shard in
    ``ds_tensor``."""
    local = total = 0
    for p in model.parameters():
        if hasattr(p, "ds_tensor"):
            local += p.ds_tensor.numel()
            total += p.ds_numel
        else:
            local += p.numel()
            total += p.numel()
    return local, total


def tensor_digest(tensor) -> str:
    """A dtype-independent fingerprint of a tensor's values (compared with the saved ``final/``)."""
    values = tensor.detach().cpu().float().contiguous().numpy().tobytes()
    return hashlib.sha256(values).hexdigest()[:16]


def gathered_digest(model, zero3: bool, is_main: bool) -> dict[str, str]:
    """Fingerprints of the full trained weights; ZeRO-3 gathers one parameter at a time to bound
    memory."""
    digest = {}
    for name, p in model.named_parameters():
        if zero3:
            import deepspeed

            ctx = deepspeed.zero.GatheredParameters([p], modifier_rank=None)
        else:
            ctx = nullcontext()
        with ctx:
            if is_main:
                digest[name] = tensor_digest(p)
    return digest


def record_failure(log_dir: Path, exc: BaseException) -> Path | None:
    """Leave this rank's error where the submitter can read it (Dagster quotes it in the run's
    error)."""
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        lines = traceback.format_exception(exc)
        tail = "".join(lines).rstrip().splitlines()[-25:]
        path = log_dir / f"rank-{rank()}.error"
        path.write_text(
            json.dumps(
                {
                    "rank": rank(),
                    "host": socket.gethostname(),
                    "job": os.environ.get("SLURM_JOB_ID"),
                    "time": time.time(),
                    "error": f"{exc.__class__.__name__}: {exc}"[:500],
                    "tail": tail,
                }
            ),
            encoding="utf-8",
        )
        return path
    except OSError:
        return None


def parse_failures(text: str) -> list[dict[str, Any]]:
    """Rank errors (left by :func:`record_failure`, one JSON object per line as ``cat`` prints
    them), first failure first; lines that are not such records are skipped."""
    found = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "rank" in record:
            found.append(record)
    return sorted(found, key=failure_order)


def failure_order(failure: dict[str, Any]) -> tuple[float, int]:
    """Sort key for rank errors: the rank that failed first caused the others (a dead peer breaks
    every collective)."""
    return (failure.get("time", float("inf")), failure.get("rank", 0))
