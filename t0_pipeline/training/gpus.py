"""The GPUs training runs on: memory as the device reports it and the dense bf16 peak that model
FLOPs utilisation (MFU) is measured against.

Peaks are NVIDIA's datasheet figures for bf16 Tensor Core throughput *without* structured
sparsity (datasheets print the sparse figure, twice the dense one, first). Memory is what
``torch.cuda.get_device_properties(...).total_memory`` reports, in GiB, slightly under the
marketing figure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    key: str
    name: str
    memory_gib: float
    bf16_dense_tflops: float
    source: str


GPUS = {
    g.key: g
    for g in (
        GPU(
            "a100-40gb",
            "NVIDIA A100 40GB (SXM4)",
            39.4,
            312.0,
            "NVIDIA A100 Tensor Core GPU datasheet: BF16 Tensor Core 312 TFLOPS (624 sparse)",
        ),
        GPU(
            "a100-80gb",
            "NVIDIA A100 80GB (SXM4)",
            79.2,
            312.0,
            "NVIDIA A100 Tensor Core GPU datasheet: BF16 Tensor Core 312 TFLOPS (624 sparse)",
        ),
        GPU(
            "h100-sxm",
            "NVIDIA H100 80GB (SXM5)",
            79.1,
            989.0,
            "NVIDIA H100 Tensor Core GPU datasheet, SXM: BF16 Tensor Core 1,979 TFLOPS sparse, "
            "989 dense",
        ),
        GPU(
            "h100-pcie",
            "NVIDIA H100 PCIe 80GB",
            79.1,
            756.0,
            "NVIDIA H100 Tensor Core GPU datasheet, PCIe: BF16 Tensor Core 1,513 TFLOPS sparse, "
            "756 dense",
        ),
        GPU(
            "h200",
            "NVIDIA H200 141GB (SXM)",
            139.8,
            989.0,
            "NVIDIA H200 Tensor Core GPU datasheet, SXM: BF16 Tensor Core 1,979 TFLOPS sparse, "
            "989 dense",
        ),
        GPU(
            "gh200-96gb",
            "NVIDIA GH200 Grace Hopper, 96GB HBM3",
            94.5,
            989.0,
            "NVIDIA GH200 Grace Hopper Superchip datasheet: BF16 Tensor Core 1,979 TFLOPS sparse, "
            "989 dense",
        ),
    )
}


def gpu_named(key: str) -> GPU | None:
    return GPUS.get(key.lower())


def identify(device_name: str, memory_gib: float) -> GPU | None:
    """The table's entry for a device as CUDA names it (``NVIDIA H100 80GB HBM3``,
    ``NVIDIA A100-SXM4-40GB``, ``NVIDIA GH200 480GB``), or None for a GPU not in the table."""
    name = device_name.upper()
    if "GH200" in name:
        return GPUS["gh200-96gb"]
    if "H200" in name:
        return GPUS["h200"]
    if "H100" in name:
        return GPUS["h100-pcie" if "PCIE" in name else "h100-sxm"]
    if "A100" in name:
        return GPUS["a100-80gb" if memory_gib > 50 else "a100-40gb"]
    return None


def local_gpu() -> tuple[GPU | None, float] | None:
    """(the table's entry or None, memory in GiB) of this process's CUDA device; None without
    one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    memory = props.total_memory / 2**30
    return identify(props.name, memory), memory


def mfu(flops_per_token: float, tokens_per_second_per_gpu: float, gpu: GPU | None) -> float | None:
    """Model FLOPs utilisation: the FLOPs the trained tokens needed per second over the GPU's dense
    bf16 peak (recomputation by gradient checkpointing not counted as useful work)."""
    if gpu is None or tokens_per_second_per_gpu <= 0:
        return None
    return flops_per_token * tokens_per_second_per_gpu / (gpu.bf16_dense_tflops * 1e12)
