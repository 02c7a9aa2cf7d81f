"""Cluster site profiles and the one training job script rendered from them.

A profile (``slurm/profiles/<site>.yaml``, shipped inside the package) says what a node has (GPUs,
cores), how jobs are charged (account, partition, QoS), which modules, container and setup lines a
node needs, and per student size how many nodes, hours and how much memory a training job gets.
:func:`job_spec` resolves a profile + size (+ the user's account/partition/QoS) into the job's shape
and checks it against the node; :func:`render_sbatch` turns that into the job script: ``srun``
starts one ``torchrun`` per node, which starts one rank per GPU (or ``procs_per_node`` CPU ranks),
rendezvous from Slurm's allocation. The same script is printed by ``t0 sbatch`` and submitted by
Dagster (dagster-slurm, see ``defs/launcher.py``): one way to build a job, two ways to submit it.
Hyperparameters never appear in it; they come from the t0 config file it passes along. A new cluster
is a new profile file (``--profiles-dir`` for your own).

Run it: ``t0 sbatch --site baskerville --size 7B --account myproj --config t0.yaml [--out
job.sbatch]``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, field_validator

from t0_pipeline.artifacts import T0Error

# package data: profiles, template, DeepSpeed configs
SLURM_DIR = Path(__file__).resolve().parent.parent / "slurm"  # t0_pipeline/slurm/
# a submitter's additions (Dagster's Pipes context), sourced from the job's work dir
JOB_ENV_FILE = "t0-job.env"
# seconds before the time limit at which the trainer checkpoints and the job requeues
STOP_LEAD_S = 300


class Allocation(BaseModel):
    nodes: int = Field(ge=1)
    gpus_per_node: int = Field(ge=0)  # 0 = a CPU-only job
    # ranks per node; None = one per GPU (1 without GPUs)
    procs_per_node: int | None = Field(default=None, ge=1)
    hours: int = Field(ge=1)
    mem: str | int = 0  # Slurm --mem per node; 0 = all of it


class SiteProfile(BaseModel):
    name: str
    arch: str = "x86_64"
    account: str | None = None
    # the site charges every job to a project: refuse to render without one
    account_required: bool = False
    partition: str | None = None
    qos: str | None = None
    gpus_per_node: int = 4
    # the GPU model, a key of t0_pipeline.training.gpus.GPUS (a100-40gb, a100-80gb, h100-sxm, h200,
    # gh200-96gb): its memory is what `t0 plan` and the training pre-check plan against
    gpu: str | None = None
    gpu_memory_gib: float | None = Field(default=None, gt=0)  # overrides the table's
    cpu_memory_gib: float | None = Field(default=None, gt=0)  # per node, for optimizer offload
    cpus_per_node: int = Field(default=8, ge=1)  # cores one job may use on a node
    # cores per training process (OMP threads, data loading)
    cpus_per_rank: int = Field(default=1, ge=1)
    modules: list[str] = Field(default_factory=list)
    container: str | None = None  # an Apptainer image; torchrun runs inside it
    setup: list[str] = Field(default_factory=list)
    sizes: dict[str, Allocation]

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, value: str | None) -> str | None:
        from t0_pipeline.training.gpus import GPUS

        if value is not None and value.lower() not in GPUS:
            raise ValueError(f"unknown GPU {value!r}; known: {', '.join(GPUS)}")
        return value.lower() if value else None

    def gpu_memory(self) -> float | None:
        """GiB per GPU: the profile's own figure, else the GPU table's; None when unknown."""
        from t0_pipeline.training.gpus import gpu_named

        if self.gpu_memory_gib:
            return self.gpu_memory_gib
        gpu = gpu_named(self.gpu) if self.gpu else None
        return gpu.memory_gib if gpu else None


class JobSpec(BaseModel):
    """The shape of one training job, as both submitters ask Slurm for it."""

    nodes: int
    gpus_per_node: int
    procs_per_node: int
    cpus_per_rank: int
    cpus_per_task: int  # one srun task (torchrun) per node holds all its ranks
    hours: int
    mem: str
    account: str | None
    partition: str | None
    qos: str | None
    stop_lead_s: int = STOP_LEAD_S

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def time_limit(self) -> str:
        return f"{self.hours:02d}:00:00"


def profile_names(profiles_dir: Path | None = None) -> list[str]:
    folder = profiles_dir or SLURM_DIR / "profiles"
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_profile(site: str, profiles_dir: Path | None = None) -> SiteProfile:
    import yaml

    folder = Path(profiles_dir) if profiles_dir else SLURM_DIR / "profiles"
    path = folder / f"{site}.yaml"
    if not path.is_file():
        raise T0Error(
            f"unknown site profile {site!r}; known: {', '.join(profile_names(folder)) or 'none'} "
            f"(add {path} to define it)."
        )
    try:
        return SiteProfile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise T0Error(
            f"site profile {path}: field {'.'.join(map(str, err['loc']))!r}: {err['msg']}."
        ) from None


def job_spec(
    profile: SiteProfile,
    size: str,
    *,
    account: str | None = None,
    partition: str | None = None,
    qos: str | None = None,
) -> JobSpec:
    """The job for ``size`` on this site, checked against what a node has; arguments override the
    profile."""
    if size not in profile.sizes:
        raise T0Error(
            f"site profile {profile.name!r} has no allocation for size {size!r}; it has "
            f"{', '.join(profile.sizes)}. Add one under sizes:."
        )
    alloc = profile.sizes[size]
    if alloc.gpus_per_node > profile.gpus_per_node:
        raise T0Error(
            f"site profile {profile.name!r}: size {size} asks for {alloc.gpus_per_node} GPUs per "
            f"node but nodes have {profile.gpus_per_node}; lower sizes.{size}.gpus_per_node or add "
            "nodes."
        )
    procs = alloc.procs_per_node or max(1, alloc.gpus_per_node)
    if alloc.gpus_per_node and procs != alloc.gpus_per_node:
        raise T0Error(
            f"site profile {profile.name!r}: size {size} runs {procs} ranks on "
            f"{alloc.gpus_per_node} GPUs per node; a GPU job runs one rank per GPU (drop "
            "procs_per_node)."
        )
    cpus = procs * profile.cpus_per_rank
    if cpus > profile.cpus_per_node:
        raise T0Error(
            f"site profile {profile.name!r}: size {size} needs {procs} ranks × "
            f"{profile.cpus_per_rank} cores = {cpus} per node but nodes have "
            f"{profile.cpus_per_node}; lower cpus_per_rank."
        )
    account = account or profile.account
    if profile.account_required and not account:
        raise T0Error(
            f"site profile {profile.name!r} charges every job to a project but no account is set; "
            "pass --account (t0 sbatch) or set TrainingCompute.account / T0_SLURM_ACCOUNT to your "
            "project."
        )
    return JobSpec(
        nodes=alloc.nodes,
        gpus_per_node=alloc.gpus_per_node,
        procs_per_node=procs,
        cpus_per_rank=profile.cpus_per_rank,
        cpus_per_task=cpus,
        hours=alloc.hours,
        mem=str(alloc.mem),
        account=account,
        partition=partition or profile.partition,
        qos=qos or profile.qos,
        stop_lead_s=min(STOP_LEAD_S, alloc.hours * 3600 // 10),
    )


def render_sbatch(
    profile: SiteProfile,
    size: str,
    *,
    config_file: str | None,
    data_dir: str,
    log_dir: str,
    model: str | None = None,
    deepspeed: str | None = "auto",
    account: str | None = None,
    partition: str | None = None,
    qos: str | None = None,
    template: Path | None = None,
    plan_lines: list[str] | tuple[str, ...] = (),
) -> str:
    """The job script for one student size on one site (``deepspeed``: a name in slurm/deepspeed, a
    path, auto); ``plan_lines`` (the memory plan) become comments in its header."""
    import jinja2

    job = job_spec(profile, size, account=account, partition=partition, qos=qos)
    source = (template or SLURM_DIR / "templates" / "train.sbatch.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    prefix = f"apptainer exec --nv {profile.container} " if profile.container else ""
    return env.from_string(source).render(
        profile=profile,
        size=size,
        job=job,
        config_file=config_file,
        data_dir=data_dir,
        log_dir=log_dir,
        model=model,
        deepspeed=deepspeed,
        container_prefix=prefix,
        env_file=JOB_ENV_FILE,
        plan_lines=list(plan_lines),
    )


def job_env_file(pipes_env: dict[str, str], venv: str | None) -> str:
    """What Dagster adds to the job: its Pipes context, and where the environment is
    (``$T0_VENV``)."""
    import shlex

    lines = ["# written by t0-pipeline's Dagster launcher; sourced by the job script"]
    if venv:
        lines.append(f"export T0_VENV={shlex.quote(venv)}")
    lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted(pipes_env.items())]
    return "\n".join(lines) + "\n"


def deepspeed_config_path(name: str) -> Path:
    """A DeepSpeed config by name (``zero3``, ``zero3_offload`` in slurm/deepspeed) or by path."""
    shipped = SLURM_DIR / "deepspeed" / f"{name}.json"
    if shipped.is_file():
        return shipped
    path = Path(name)
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in (SLURM_DIR / "deepspeed").glob("*.json")))
        raise T0Error(
            f"DeepSpeed config {name} not found; use one of {names}, a path to a JSON file, or "
            "'none'."
        )
    return path


def prepare_env_dir(path: Path, venv: Path) -> Path:
    """Lay out ``path`` as dagster-slurm's pre-deployed environment: ``activate.sh`` + ``env/`` (→
    the venv).

    The venv itself is linked (not just its bin/), so its interpreter still finds pyvenv.cfg.
    Use a path on storage the compute nodes share.
    """
    path = Path(path)
    venv = Path(venv).resolve()
    if not (venv / "bin" / "python").exists():
        raise T0Error(
            f"{venv} is not a virtual environment (no bin/python); pass the venv holding "
            "t0-pipeline."
        )
    path.mkdir(parents=True, exist_ok=True)
    link = path / "env"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(venv, target_is_directory=True)
    (path / "activate.sh").write_text(f'source "{venv}/bin/activate"\n', encoding="utf-8")
    return path


def server_size(profile: SiteProfile, size: str | None, name: str) -> str:
    """The allocation a model server job takes: ``size`` (a student's, or a role's
    ``serve.size``), else the profile's allocation with the most GPUs on one node."""
    if size is not None:
        if size not in profile.sizes:
            raise T0Error(
                f"the server for {name} asks for the {size} allocation, but site profile "
                f"{profile.name!r} has {', '.join(profile.sizes)}; set its serve.size to one of "
                "them, or add it under sizes:."
            )
        return size
    one_node = [(a.gpus_per_node, s) for s, a in profile.sizes.items() if a.nodes == 1]
    if not one_node:
        raise T0Error(
            f"site profile {profile.name!r} has no one-node allocation for the server of {name}; "
            "set its serve.size, or add a one-node size under sizes:."
        )
    return max(one_node, key=lambda pair: pair[0])[1]


def render_serve_sbatch(
    profile: SiteProfile,
    size: str,
    *,
    name: str,
    command: str,
    tp: int,
    log_dir: str,
    time_limit: str,
    venv: str | None = None,
    account: str | None = None,
    partition: str | None = None,
    qos: str | None = None,
) -> str:
    """The job script of a model server on one node with the GPUs ``size`` gets per node on this
    site."""
    import jinja2

    from t0_pipeline.servers.model_server import safe_name
    from t0_pipeline.servers.slurm import ENDPOINT_TAG

    job = job_spec(profile, size, account=account, partition=partition, qos=qos)
    source = (SLURM_DIR / "templates" / "serve.sbatch.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    prefix = f"apptainer exec --nv {profile.container} " if profile.container else ""
    return env.from_string(source).render(
        profile=profile,
        job=job,
        name=name,
        safe_name=safe_name(name),
        command=command,
        tp=tp,
        gpus=job.gpus_per_node,
        cpus=job.cpus_per_task,
        log_dir=log_dir,
        time_limit=time_limit,
        venv=venv,
        container_prefix=prefix,
        endpoint_tag=ENDPOINT_TAG,
    )
