"""The memory plan of one training run, made from the settings users write: a site profile and a
student size (``t0 plan``, ``t0 sbatch``, the ``student_checkpoint`` pre-check), or the running
job itself (the trainer, where ``train.loss: auto`` and ``train.deepspeed: auto`` take the cheapest
settings that fit).

The sequence planned for is the longest the run will train: the SFT dataset's longest example
within ``block_size`` when the dataset exists (its ``n_tokens``), else ``block_size`` itself.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import TrainConfig
from t0_pipeline.servers.model_shape import model_shape
from t0_pipeline.training.cluster import deepspeed_config_path
from t0_pipeline.training.memory_plan import (
    OFFLOAD_CONFIGS,
    Plan,
    RunShape,
    fitting_settings,
    plan_memory,
    remedies,
    render,
    settings_text,
)

log = logging.getLogger(__name__)


def sft_lengths(dataset: Path) -> list[int] | None:
    """Token counts of the SFT dataset's examples (``n_tokens``), None when it is not built."""
    if not Path(dataset).is_file():
        return None
    import polars as pl

    try:
        frame = pl.read_parquet(dataset, columns=["n_tokens"])
    except Exception:  # not built by `t0 sft`, or unreadable: the trainer says why
        return None
    return [int(n) for n in frame["n_tokens"].drop_nulls()]


def planned_seq(config: TrainConfig, lengths: list[int] | None) -> int:
    """The longest sequence the run trains: the longest example that fits the block, else the
    block."""
    kept = [n for n in lengths or [] if n <= config.block]
    return max(kept) if kept else config.block


def offload_of(deepspeed: str | None) -> str:
    name = Path(str(deepspeed or "")).stem
    return {v: k for k, v in OFFLOAD_CONFIGS.items()}.get(name, "none")


def _zero3(config: TrainConfig, gpus: int) -> bool:
    name = str(config.deepspeed or "none")
    if name == "none" or config.lora.enabled and name == "auto":
        return False
    return gpus > 1 or name != "auto"


def _shape(config: TrainConfig, gpus: int, seq: int, **where) -> RunShape:
    loss = config.loss if config.loss != "auto" else "plain"
    return RunShape(
        shape=model_shape(config.model),
        seq=seq,
        batch=config.per_device_batch_size,
        checkpointing=config.gradient_checkpointing,
        loss=loss,
        chunk_tokens=config.loss_chunk_tokens,
        offload=offload_of(config.deepspeed),
        zero3=_zero3(config, gpus),
        lora=config.lora.enabled,
        **where,
    )


def automatic(config: TrainConfig, run: RunShape, losses=("chunked",)) -> Plan:
    """The plan with what ``auto`` settings choose: a cheaper loss when ``train.loss`` is auto,
    offload when ``train.deepspeed`` is auto; a setting the user named stays as named."""
    return fitting_settings(
        run, losses if config.loss == "auto" else (), offload=config.deepspeed == "auto"
    )


@dataclass
class SitePlan:
    """A plan for one size on one site: as configured, with auto settings applied, and the fixes."""

    size: str
    site: str
    model: str
    configured: Plan
    chosen: Plan
    lengths: list[int] | None

    def summary(self) -> str:
        chosen = self.chosen
        said = settings_text(chosen.run)
        return f"{self.size} on {self.site}: {chosen.verdict()} ({said}, sequence {chosen.run.seq})"

    def header(self) -> str:
        run = self.configured.run
        gpu = f"{run.gpu_memory_gib:.1f} GiB per GPU" if run.gpu_memory_gib else "no GPU memory"
        data = (
            f"the SFT data's longest example within the block: {run.seq} tokens"
            if self.lengths
            else f"block {run.seq} (the SFT data is not built yet)"
        )
        return f"{self.model} (size {self.size}) on {self.site} ({gpu}); {data}"

    def lines(self) -> list[str]:
        """The plan in a few comment lines (the job script's header)."""
        chosen = self.chosen
        items = ", ".join(f"{name} {gib:.1f}" for name, gib, _ in chosen.items)
        return [
            f"memory plan: {self.header()}",
            f"memory plan with {settings_text(chosen.run)}: {chosen.verdict()}",
            f"memory plan items (GiB per GPU): {items}",
        ]

    def report(self) -> str:
        fixes = remedies(self.configured.run, self.lengths)
        text = self.header() + "\n" + render(self.configured, fixes)
        if self.chosen is not self.configured:
            text += f"\n\nWith the auto settings ({settings_text(self.chosen.run)}): "
            text += self.chosen.verdict()
        return text

    def blocking_reason(self) -> str | None:
        """One line saying why the run cannot fit even with the auto settings, None if it fits."""
        if self.chosen.fits:
            return None
        fixes = [f for f in remedies(self.chosen.run, self.lengths) if f.plan.fits]
        hint = "; ".join(f"{f.change} ({f.drops})" if f.drops else f.change for f in fixes[-2:])
        return (
            f"student {self.summary()}; it would fail with out-of-memory after queueing. "
            f"{'Fits with: ' + hint + '. ' if hint else ''}"
            f"See `t0 plan --site {self.site} --size {self.size}`."
        )


def plan_for_site(config: TrainConfig, profile, size: str, model: str, dataset: Path) -> SitePlan:
    """The plan of training ``size`` (base model ``model``) on a site profile's allocation."""
    from t0_pipeline.training.cluster import job_spec

    if size not in profile.sizes:
        raise T0Error(
            f"site profile {profile.name!r} has no allocation for size {size!r}; it has "
            f"{', '.join(profile.sizes)}."
        )
    alloc = profile.sizes[size]
    job = job_spec(profile, size, account=profile.account or "-")
    lengths = sft_lengths(dataset)
    config = config.model_copy(update={"model": model})
    gpus = job.world_size if alloc.gpus_per_node else 0
    run = _shape(
        config,
        job.world_size,
        planned_seq(config, lengths),
        nodes=alloc.nodes,
        gpus_per_node=max(1, alloc.gpus_per_node),
        gpu_memory_gib=profile.gpu_memory() if gpus else None,
        cpu_memory_gib=profile.cpu_memory_gib,
    )
    configured = plan_memory(run)
    return SitePlan(size, profile.name, model, configured, automatic(config, run), lengths)


def plan_here(config: TrainConfig, processes: int, longest: int, ds_name: str | None) -> Plan:
    """The plan of the run this process is part of (torchrun's world, this node's GPU), with the
    auto settings applied; no cap on CPU ranks."""
    from importlib.util import find_spec

    from t0_pipeline.training.gpus import local_gpu

    here = local_gpu()
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", processes) or processes)
    name = ds_name if config.deepspeed == "auto" and ds_name else config.deepspeed
    run = _shape(
        config.model_copy(update={"deepspeed": name}),
        processes,
        longest,
        nodes=max(1, processes // max(1, per_node)),
        gpus_per_node=max(1, per_node),
        gpu_memory_gib=here[1] if here else None,
        dtype_bytes=2 if here else 4,
    )
    fused = here is not None and find_spec("liger_kernel") is not None
    return automatic(config, run, ("liger",) if fused else ("chunked",))


def resolve_deepspeed(config: TrainConfig, processes: int) -> Path | None:
    """The DeepSpeed config this run uses: ``auto`` = ZeRO-3 for several processes fine-tuning all
    weights."""
    from importlib.util import find_spec

    name = config.deepspeed
    if name in (None, "", "none"):
        return None
    installed = find_spec("deepspeed") is not None
    if name == "auto":
        if processes <= 1 or config.lora.enabled:
            return None
        if not installed:
            log.warning(
                "train.deepspeed is auto but DeepSpeed is not installed: %d processes run plain "
                "DDP, each holding the whole model (pip install deepspeed for ZeRO-3)",
                processes,
            )
            return None
        name = "zero3"
    path = deepspeed_config_path(str(name))
    if not installed:
        raise T0Error(
            f"train.deepspeed is {name} but DeepSpeed is not installed; install it (GPU nodes: "
            "pip install 't0-pipeline[gpu]'; CPU: DS_BUILD_OPS=0 pip install deepspeed "
            "--no-build-isolation) or set train.deepspeed: none."
        )
    return path


def join_deepspeed(ds_config: Path | None, processes: int, cuda: bool) -> None:
    """The DeepSpeed config this run uses; CPU ranks first join DeepSpeed's process group over gloo
    (accelerate leaves it to the GPU path)."""
    if ds_config is not None and processes > 1 and not cuda:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")


@dataclass
class RunSettings:
    """What this training run uses: the DeepSpeed config, the loss, and the plan that chose them."""

    deepspeed: Path | None
    loss: str
    plan: Plan | None
    said: str  # one line for the log: the plan's verdict and what auto changed


def choose_settings(config: TrainConfig, processes: int, longest: int, cuda: bool) -> RunSettings:
    """The DeepSpeed config and loss of this run: as configured, with ``auto`` resolved by the
    memory plan of the longest example on this node's GPU (no cap on CPU ranks: plain loss)."""
    ds_config = resolve_deepspeed(config, processes)
    try:
        plan = plan_here(config, processes, longest, ds_config.stem if ds_config else None)
    except T0Error as exc:  # a model whose config.json has no decoder shape: no plan
        loss = "plain" if config.loss == "auto" else config.loss
        return RunSettings(ds_config, loss, None, f"no memory plan ({exc})")
    if config.deepspeed == "auto" and ds_config is not None and plan.run.offload != "none":
        ds_config = deepspeed_config_path(OFFLOAD_CONFIGS[plan.run.offload])
    loss = plan.run.loss
    if loss == "liger":
        _need_liger(cuda)
    said = f"memory plan for sequences of {longest} tokens: {plan.verdict()}"
    if config.loss == "auto" or config.deepspeed == "auto":
        said += f"; using {settings_text(plan.run)}"
    return RunSettings(ds_config, loss, plan, said)


def _need_liger(cuda: bool) -> None:
    from importlib.util import find_spec

    if not cuda:
        raise T0Error(
            "train.loss is liger, but Liger Kernel's fused loss runs on GPUs only; use "
            "train.loss: chunked on CPU."
        )
    if find_spec("liger_kernel") is None:
        raise T0Error(
            "train.loss is liger but Liger Kernel is not installed; pip install "
            "'t0-pipeline[gpu]' (or liger-kernel), or use train.loss: chunked."
        )


def base_model_for(cfg, paths, size: str) -> str:
    """The base model ``size`` trains from: a ``base_models`` entry's folder, else the name."""
    model = cfg.train.sizes.get(size)
    if model is None:
        raise T0Error(
            f"no base model for size {size!r} in train.sizes ({', '.join(cfg.train.sizes)}); add "
            "it to the config."
        )
    return str(paths.base_model(model).resolve()) if model in cfg.base_models else model


def size_plan(cfg, paths, profile, size: str) -> SitePlan:
    """The plan of training ``size`` on ``profile`` with a pipeline config and its data folder."""
    dataset = cfg.train.dataset or paths.sft_dir / "train.parquet"
    return plan_for_site(cfg.train, profile, size, base_model_for(cfg, paths, size), dataset)


def job_plan(cfg, paths, profile, size: str) -> tuple[SitePlan | None, list[str]]:
    """(the plan, its lines for the job script's header); no plan, and a line saying why, for a
    model whose config.json cannot be read here."""
    try:
        planned = size_plan(cfg, paths, profile, size)
    except T0Error as exc:  # the plan advises; a model it cannot read still gets its script
        return None, [f"memory plan: none ({exc})"]
    return planned, planned.lines()
