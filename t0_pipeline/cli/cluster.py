"""Cluster commands: sbatch (the training job script for one size on one site) and slurm-env
(the pre-deployed environment dagster-slurm expects)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from t0_pipeline.artifacts import T0Error
from t0_pipeline.cli.common import (
    ConfigFile,
    DataDir,
    SetOpt,
    app,
    setup,
)

_SBATCH_SITE = typer.Option(
    ..., help="Site profile (baskerville, isambard-ai, or one in --profiles-dir)."
)
_SBATCH_SIZE = typer.Option(
    ..., help="Student size, a key of the profile's sizes and of train.sizes (e.g. 7B)."
)
_SBATCH_ACCOUNT = typer.Option(
    None,
    envvar="T0_SLURM_ACCOUNT",
    help="Project the job is charged to (required on Baskerville and Isambard-AI).",
)
_SBATCH_QOS = typer.Option(
    None, help="Slurm QoS (default: the profile's; per project on Baskerville)."
)
_SBATCH_PROFILES_DIR = typer.Option(None, help="Folder of your own site profiles (<site>.yaml).")
_SBATCH_OUT = typer.Option(
    None, "--out", "-o", help="Write the script here instead of printing it."
)
_SBATCH_DEEPSPEED = typer.Option(
    None,
    help="auto (ZeRO-3 when several GPUs train all weights), zero3, zero3_offload, a path on "
    "the cluster, or none (default: train.deepspeed).",
)


@app.command()
def sbatch(
    site: str = _SBATCH_SITE,
    size: str = _SBATCH_SIZE,
    config: Optional[Path] = ConfigFile,
    data_dir: Optional[Path] = DataDir,
    account: Optional[str] = _SBATCH_ACCOUNT,
    partition: Optional[str] = typer.Option(None, help="Slurm partition (default: the profile's)."),
    qos: Optional[str] = _SBATCH_QOS,
    profiles_dir: Optional[Path] = _SBATCH_PROFILES_DIR,
    out: Optional[Path] = _SBATCH_OUT,
    deepspeed: Optional[str] = _SBATCH_DEEPSPEED,
    sets: Optional[list[str]] = SetOpt,
):
    """Render the training job script for one student size on one cluster (submit it with sbatch).

    It is the script Dagster submits for the same size: srun starts torchrun on every node,
    one rank per GPU.
    """
    from t0_pipeline.training.cluster import load_profile, render_sbatch
    from t0_pipeline.training.plan import job_plan

    cfg, paths = setup(data_dir, config, sets=sets)
    model = cfg.train.sizes.get(size)
    if model is None:
        raise T0Error(
            f"no base model for size {size!r} in train.sizes ({', '.join(cfg.train.sizes)}); add "
            "it to the config."
        )
    log_dir = paths.student_dir(size) / "logs"
    profile = load_profile(site, profiles_dir)
    planned, lines = job_plan(cfg, paths, profile, size)
    script = render_sbatch(
        profile,
        size,
        config_file=str(config.resolve()) if config else None,
        data_dir=str(paths.root.resolve()),
        log_dir=str(log_dir.resolve()),
        model=model,
        deepspeed=deepspeed or cfg.train.deepspeed,
        account=account,
        partition=partition,
        qos=qos,
        plan_lines=lines,
    )
    typer.echo(lines[-2] if planned else lines[0], err=True)
    if planned and planned.blocking_reason():
        typer.echo(f"warning: {planned.blocking_reason()}", err=True)
    if out:
        log_dir.mkdir(parents=True, exist_ok=True)  # Slurm opens the log file before the job starts
        out.write_text(script, encoding="utf-8")
        typer.echo(f"wrote {out}; submit with: sbatch {out}")
    else:
        typer.echo(script, nl=False)


@app.command("slurm-env")
def slurm_env(
    path: Path = typer.Option(..., help="Directory on storage the compute nodes share."),
    venv: Optional[Path] = typer.Option(
        None, help="The virtual environment holding t0-pipeline (default: this one)."
    ),
):
    """Lay out a pre-deployed environment for dagster-slurm (activate.sh + env/ → the venv)."""

    from t0_pipeline.training.cluster import prepare_env_dir

    out = prepare_env_dir(path, venv or Path(sys.prefix))
    typer.echo(f"pre-deployed environment ready at {out}; set TrainingCompute.env_path to it")


def site_plans(cfg, paths, site: str, size: str, profiles_dir: Optional[Path] = None):
    from t0_pipeline.training.cluster import load_profile
    from t0_pipeline.training.plan import size_plan

    return size_plan(cfg, paths, load_profile(site, profiles_dir), size)


@app.command()
def plan(
    site: Optional[str] = typer.Option(
        None, help="Site profile (baskerville, isambard-ai, or one in --profiles-dir)."
    ),
    size: Optional[str] = typer.Option(None, help="Student size, a key of train.sizes (e.g. 7B)."),
    every: bool = typer.Option(
        False, "--all", help="One line per size on every site profile instead of one itemised plan."
    ),
    config: Optional[Path] = ConfigFile,
    data_dir: Optional[Path] = DataDir,
    profiles_dir: Optional[Path] = _SBATCH_PROFILES_DIR,
    sets: Optional[list[str]] = SetOpt,
):
    """Per-GPU memory of a training run before it is submitted: itemised, against the site's GPUs.

    Made from the base model's config.json (no weights needed; the report's Qwen2.5 sizes are
    built in), the site profile's allocation and GPU, train.block_size (or the SFT data's longest
    example once it is built) and the memory settings. Prints the verdict and the changes that
    would make it fit, cheapest first; `train.loss: auto` and `train.deepspeed: auto` take them by
    themselves at run time. `--set train.block_size=16384` plans another block.
    """
    from t0_pipeline.training.cluster import profile_names

    cfg, paths = setup(data_dir, config, sets=sets)
    if every:
        sites = [site] if site else profile_names(profiles_dir)
        sizes = [size] if size else list(cfg.train.sizes)
        for name in sites:
            for each in sizes:
                try:
                    typer.echo(site_plans(cfg, paths, name, each, profiles_dir).summary())
                except T0Error as exc:
                    typer.echo(f"{each} on {name}: no plan ({exc})")
        return
    if not site or not size:
        raise T0Error("t0 plan needs --site and --size (or --all for every site and size).")
    typer.echo(site_plans(cfg, paths, site, size, profiles_dir).report())
