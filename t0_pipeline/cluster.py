"""Cluster site profiles and the sbatch scripts rendered from them.

A profile (``slurm/profiles/<site>.yaml``) says, per student size, how many nodes and GPUs,
how many hours and how much memory a training job gets, and which modules, container and
setup lines a node needs. ``slurm/templates/train.sbatch.j2`` turns a profile + size into a
job script that launches ``python -m t0_pipeline.train`` under torchrun on every node, with
the rendezvous taken from Slurm's allocation. Hyperparameters never appear in the script:
they come from the t0 config file it passes along. A new cluster is a new profile file.

Run it: ``t0 sbatch --site baskerville --size 7B --config t0.yaml [--out job.sbatch]``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from t0_pipeline.artifacts import T0Error

SLURM_DIR = Path(__file__).resolve().parents[1] / "slurm"


class Allocation(BaseModel):
    nodes: int = Field(ge=1)
    gpus_per_node: int = Field(ge=0)  # 0 = a CPU-only job (one process per node)
    hours: int = Field(ge=1)
    mem: str | int = 0  # Slurm --mem per node; 0 = all of it


class SiteProfile(BaseModel):
    name: str
    arch: str = "x86_64"
    account: str | None = None
    partition: str | None = None
    qos: str | None = None
    gpus_per_node: int = 4
    cpus_per_gpu: int = 8  # CPU-only jobs get this many CPUs
    modules: list[str] = Field(default_factory=list)
    container: str | None = None  # an Apptainer image; the command runs inside it
    setup: list[str] = Field(default_factory=list)
    sizes: dict[str, Allocation]


def profile_names(profiles_dir: Path | None = None) -> list[str]:
    folder = profiles_dir or SLURM_DIR / "profiles"
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_profile(site: str, profiles_dir: Path | None = None) -> SiteProfile:
    import yaml

    folder = profiles_dir or SLURM_DIR / "profiles"
    path = folder / f"{site}.yaml"
    if not path.is_file():
        raise T0Error(f"unknown site profile {site!r}; known: {', '.join(profile_names(folder)) or 'none'} "
                      f"(add {path} to define it).")
    try:
        return SiteProfile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise T0Error(f"site profile {path}: field {'.'.join(map(str, err['loc']))!r}: {err['msg']}.") from None


def render_sbatch(profile: SiteProfile, size: str, *, config_file: str | None, data_dir: str, log_dir: str,
                  model: str | None = None, deepspeed: str | None = "slurm/deepspeed/zero3.json",
                  template: Path | None = None) -> str:
    """The job script for one student size on one site."""
    import jinja2

    if size not in profile.sizes:
        raise T0Error(f"site profile {profile.name!r} has no allocation for size {size!r}; "
                      f"it has {', '.join(profile.sizes)}. Add one under sizes:.")
    alloc = profile.sizes[size]
    if alloc.gpus_per_node > profile.gpus_per_node:
        raise T0Error(f"site profile {profile.name!r}: size {size} asks for {alloc.gpus_per_node} GPUs per node "
                      f"but nodes have {profile.gpus_per_node}.")
    source = (template or SLURM_DIR / "templates" / "train.sbatch.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    prefix = f"apptainer exec --nv {profile.container} " if profile.container else ""
    return env.from_string(source).render(
        profile=profile, size=size, alloc=alloc, job_name=f"t0-train-{size}", config_file=config_file,
        data_dir=data_dir, log_dir=log_dir, model=model, deepspeed=deepspeed, container_prefix=prefix)


def prepare_env_dir(path: Path, venv: Path) -> Path:
    """Lay out ``path`` as dagster-slurm's pre-deployed environment: ``activate.sh`` + ``env/`` (→ the venv).

    The venv itself is linked (not just its bin/), so its interpreter still finds pyvenv.cfg.
    Use a path on storage the compute nodes share.
    """
    path = Path(path)
    venv = Path(venv).resolve()
    if not (venv / "bin" / "python").exists():
        raise T0Error(f"{venv} is not a virtual environment (no bin/python); pass the venv holding t0-pipeline.")
    path.mkdir(parents=True, exist_ok=True)
    link = path / "env"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(venv, target_is_directory=True)
    (path / "activate.sh").write_text(f'source "{venv}/bin/activate"\n', encoding="utf-8")
    return path
