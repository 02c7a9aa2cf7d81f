"""Dagster resources: the pipeline's settings (which also hand out the embedder, Chroma and
retrievers), training and model servers.

Each resource only turns its fields into the stage modules' pydantic configs, so the
CLI and the assets run exactly the same code with the same settings.
"""

import contextlib
import os
import re
from typing import Any, Dict, Optional

import dagster as dg

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import (
    DataPaths,
    PipelineConfig,
    load_config,
    with_base_models,
    with_local_models,
)


def location_config() -> PipelineConfig:
    """The config the code location's shape comes from, read when it loads (``$T0_CONFIG`` and
    ``T0_…__…``): partitions (sizes, evaluated models), which summaries are the retrieval corpus,
    what each stage retrieves from, and which groups follow upstream changes on their own."""
    return load_config(os.environ.get("T0_CONFIG") or None)


class PipelineSettings(dg.ConfigurableResource):
    """Where artefacts live and the pipeline's settings: the config file (``$T0_CONFIG``),
    ``T0_…__…`` environment variables, then ``overrides`` from the launchpad, each setting only the
    fields it names.

    Every asset reads its settings here, the same ``PipelineConfig`` the CLI reads, so an index
    built in the UI and a ``t0 serve`` started from the same file use one embedding model and one
    Chroma store.
    """

    data_dir: str = os.environ.get("T0_DATA_DIR", "data")
    config_file: Optional[str] = os.environ.get("T0_CONFIG") or None
    # any subset of the config, e.g. {"source": {"kind": "pages", "location": "pages.jsonl"}}
    overrides: Dict[str, Any] = {}

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # the host the run's steps run on, which the run launcher's health check reads
        from t0_pipeline.defs.watch import tag_host

        tag_host(context.instance, context.run_id)

    def pipeline_config(self, tuned: bool = True) -> PipelineConfig:
        """The merged settings, with base_models names standing for their folders under the data
        root, and the fine-tuned embedder in use once retriever_model measured it better (unless
        ``tuned`` is False)."""
        cfg = load_config(self.config_file, overrides=self.overrides)
        return (
            with_local_models(cfg, self.paths()) if tuned else with_base_models(cfg, self.paths())
        )

    def paths(self) -> DataPaths:
        return DataPaths(self.data_dir)

    def embedder(self):
        """The configured sentence-transformers model (loaded once per process)."""
        from t0_pipeline.retrieval.embed import load_embedder

        return load_embedder(self.pipeline_config().embedding)

    def chroma_client(self):
        from t0_pipeline.retrieval.chroma_store import chroma_client

        return chroma_client(self.pipeline_config().chroma, self.paths())

    def retriever(self, index: str, cfg: Optional[PipelineConfig] = None):
        """A retriever over ``index`` with the configured embedding model, store and retrieval
        settings."""
        from t0_pipeline.retrieval.retrieve import Retriever

        cfg = cfg or self.pipeline_config()
        return Retriever(index, self.paths(), cfg.embedding, cfg.chroma, cfg.retrieval)


class TrainingCompute(dg.ConfigurableResource):
    """Where student training runs; ``python -m t0_pipeline train`` either way, reporting through
    Pipes.

    ``local``: a Dagster Pipes subprocess on this machine. ``slurm``: dagster-slurm submits, over
    SSH, the job script that ``t0 sbatch`` renders for the partition's size from the site profile
    (nodes × GPUs, torchrun on every node, DeepSpeed ZeRO-3, the profile's modules/container/setup).
    Rank 0 reports progress and the result; a failing rank's error comes back as the run's error.
    Clusters without accounting (no slurmdbd) never show finished jobs to squeue, so the SSH session
    exports ``SQUEUE_STATES=all`` first.
    """

    mode: str = "local"  # local | slurm
    site: Optional[str] = None  # slurm: a site profile (slurm/profiles, or profiles_dir)
    profiles_dir: Optional[str] = None  # a folder of your own site profiles
    # project charged (required on most sites)
    account: Optional[str] = os.environ.get("T0_SLURM_ACCOUNT") or None
    partition: Optional[str] = None  # Slurm partition; defaults to the site profile's
    qos: Optional[str] = None  # Slurm QoS; defaults to the site profile's
    # None = the config's train.deepspeed; or auto, zero3, zero3_offload, none
    deepspeed: Optional[str] = None
    ssh_host: Optional[str] = None
    ssh_port: int = 22
    ssh_user: Optional[str] = None
    ssh_key_path: Optional[str] = None  # a private key file; never the key itself
    # pre-deployed environment on shared storage (see `t0 slurm-env`)
    env_path: Optional[str] = None
    # where dagster-slurm stages job scripts and logs on the cluster
    remote_base: Optional[str] = None
    queue_wait_hours: int = 72  # how long to wait for a job to start before giving up watching it

    def run(
        self,
        context: dg.AssetExecutionContext,
        *,
        size: str,
        model: str,
        config_file: Optional[str],
        data_dir: str,
    ) -> dg.MaterializeResult:
        import sys

        if self.mode == "local":
            command = [
                sys.executable,
                "-m",
                "t0_pipeline",
                "train",
                "--partition",
                size,
                "--model",
                model,
                "--data-dir",
                data_dir,
                *(["--deepspeed", self.deepspeed] if self.deepspeed else []),
            ]
            if config_file:
                command += ["--config", config_file]
            return (
                dg.PipesSubprocessClient()
                .run(context=context, command=command)
                .get_materialize_result()
            )
        if self.mode != "slurm":
            raise T0Error(f"TrainingCompute.mode must be local or slurm, got {self.mode!r}.")
        missing = [
            n
            for n in ("site", "ssh_host", "ssh_user", "env_path", "remote_base")
            if not getattr(self, n)
        ]
        if missing:
            raise T0Error(
                f"TrainingCompute in slurm mode needs {', '.join(missing)}; set them on the "
                "resource."
            )
        return self._slurm(context, size, model, config_file, data_dir)

    def memory_plan(self, cfg, paths, size: str):
        """The plan of training ``size`` where this resource runs it: the site profile's allocation
        (Slurm), or this machine's GPU (local; None without one, or for a model whose config.json
        cannot be read here)."""
        from pathlib import Path

        from t0_pipeline.training.cluster import Allocation, SiteProfile, load_profile
        from t0_pipeline.training.gpus import local_gpu
        from t0_pipeline.training.plan import job_plan

        if self.mode == "slurm":
            profile = load_profile(
                self.site, Path(self.profiles_dir) if self.profiles_dir else None
            )
        else:
            here = local_gpu()
            if here is None:
                return None
            one = Allocation(nodes=1, gpus_per_node=1, hours=1)
            profile = SiteProfile(
                name="this machine", gpus_per_node=1, gpu_memory_gib=here[1], sizes={size: one}
            )
        return job_plan(cfg, paths, profile, size)[0]

    def job_script(self, *, size: str, model: str, config_file: Optional[str], data_dir: str):
        """(site profile, job shape, job script) for ``size``: the script is the one ``t0 sbatch``
        prints."""
        from pathlib import Path

        from t0_pipeline.config import DataPaths
        from t0_pipeline.training.cluster import job_spec, load_profile, render_sbatch
        from t0_pipeline.training.plan import job_plan

        profile = load_profile(self.site, Path(self.profiles_dir) if self.profiles_dir else None)
        overrides = {"account": self.account, "partition": self.partition, "qos": self.qos}
        cfg = load_config(config_file)
        _, lines = job_plan(cfg, DataPaths(data_dir), profile, size)
        script = render_sbatch(
            profile,
            size,
            config_file=config_file,
            data_dir=data_dir,
            model=model,
            log_dir=job_log_dir(data_dir, size),
            deepspeed=self.deepspeed or cfg.train.deepspeed,
            plan_lines=lines,
            **overrides,
        )
        return profile, job_spec(profile, size, **overrides), script

    def _slurm(
        self,
        context: dg.AssetExecutionContext,
        size: str,
        model: str,
        config_file: Optional[str],
        data_dir: str,
    ) -> dg.MaterializeResult:
        import tempfile
        from pathlib import Path

        from dagster_slurm.helpers.ssh_pool import SSHConnectionPool

        from t0_pipeline.defs.launcher import TrainingJobLauncher

        profile, job, script = self.job_script(
            size=size, model=model, config_file=config_file, data_dir=data_dir
        )
        log_dir = job_log_dir(data_dir, size)
        context.log.info(
            f"training {model} as {size} on {profile.name}: {job.nodes} node(s) × "
            f"{job.procs_per_node} rank(s) = {job.world_size}, {job.gpus_per_node} GPU(s) per "
            f"node, {job.time_limit}"
        )
        launcher = TrainingJobLauncher(script=script)
        compute, ssh = self._compute(job, launcher)
        # errors of an earlier run must not be read as this one's
        with SSHConnectionPool(ssh) as pool:
            pool.run(f"mkdir -p {log_dir} && rm -f {log_dir}/rank-*.error")
        with tempfile.TemporaryDirectory() as tmp:
            payload = Path(tmp) / f"train-{size}.sbatch"
            payload.write_text(script, encoding="utf-8")
            try:
                return compute.run(
                    context=context,
                    payload_path=str(payload),
                    launcher=launcher,
                    poll_timeout=(job.hours * 2 + self.queue_wait_hours) * 3600,
                ).get_materialize_result()
            except RuntimeError as exc:  # dagster-slurm reports rejected or failed jobs this way
                with SSHConnectionPool(ssh) as pool:
                    listing = pool.run(
                        f'for f in {log_dir}/rank-*.error; do [ -f "$f" ] && cat "$f" && echo; '
                        "done; true"
                    )
                raise T0Error(job_failure_message(size, str(exc), listing)) from None

    def _compute(self, job, launcher):
        """dagster-slurm's compute resource for ``job`` (the queue shaped as the script's #SBATCH
        lines ask, the command line winning), and its SSH connection."""
        from dagster_slurm import (
            ComputeResource,
            SlurmQueueConfig,
            SlurmResource,
            SSHConnectionResource,
        )

        queue = SlurmQueueConfig(
            partition=job.partition or "",
            num_nodes=job.nodes,
            time_limit=job.time_limit,
            gpus_per_node=job.gpus_per_node,
            cpus=job.cpus_per_task,
            mem=None if job.mem == "0" else job.mem,
            qos=job.qos,
            account=job.account,
        )
        ssh = SSHConnectionResource(
            host=self.ssh_host,
            port=self.ssh_port,
            user=self.ssh_user,  # type: ignore[arg-type]
            key_path=self.ssh_key_path,
            post_login_command="export SQUEUE_STATES=all",
        )
        compute = ComputeResource(
            mode="slurm",
            default_launcher=launcher,
            pre_deployed_env_path=self.env_path,
            slurm=SlurmResource(ssh=ssh, queue=queue, remote_base=self.remote_base),
        )
        return compute, ssh


def job_log_dir(data_dir: str, size: str) -> str:
    """Where a training job's output, script copy and rank errors go: the student's ``logs/``
    folder."""
    from t0_pipeline.config import DataPaths

    return str(DataPaths(data_dir).student_dir(size) / "logs")


def job_failure_message(size: str, error: str, rank_errors: str) -> str:
    """One clear error for a failed training job: the failing rank's error and last lines, else
    Slurm's reason."""
    from t0_pipeline.training.ranks import parse_failures

    failures = parse_failures(rank_errors)
    if failures:
        first = failures[0]
        tail = "\n".join(f"    {ln}" for ln in first.get("tail", [])[-12:])
        others = sorted({f.get("rank") for f in failures} - {first.get("rank")})
        more = (
            f" (then rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))})"
            if others
            else ""
        )
        return (
            f"the Slurm job for {size} failed on rank {first.get('rank')} "
            f"({first.get('host')}){more}: {first.get('error')}; the previous checkpoint is kept. "
            f"Last lines of that rank:\n{tail}"
        )
    lines = error.splitlines()
    rejected = next((ln.strip() for ln in lines if "error:" in ln), None)
    if rejected:
        # how the SSH layer labels the stream varies
        reason = re.sub(r"^(?:std(?:err|out):\s*)+", "", rejected)
        return (
            f"the Slurm job for {size} did not complete: {reason}; fix the site profile or the "
            "resource (partition, account, QoS), and the previous checkpoint is kept."
        )
    reason = lines[0][:200] if lines else "no detail"
    return (
        f"the Slurm job for {size} did not complete: {reason} No rank left a Python error (killed "
        "by a signal, out of memory, or out of time?): the job's output is in the run's logs; the "
        "previous checkpoint is kept."
    )


class ModelServer(dg.ConfigurableResource):
    """Starts the model servers evaluation needs (entries with a ``serve`` section); see
    :mod:`t0_pipeline.servers.model_server`.

    ``local``: a subprocess on this machine (its GPUs → tensor parallel size), running
    ``servers.command`` from the config (vLLM by default). ``slurm``: a one-node job rendered from
    the site profile, with the GPUs that profile gives the model's size per node (a role's server:
    its ``serve.size``, else the profile's widest one-node allocation); submitted with
    ``sbatch`` here, or over SSH on a login node when ``ssh_host`` is set. The server's log lines go
    to the run's log; it is stopped when the stage ends. Entries without ``serve`` are reached at
    their ``api_base`` as before.
    """

    mode: str = "local"  # local | slurm
    site: Optional[str] = None  # slurm: a site profile (slurm/profiles, or profiles_dir)
    profiles_dir: Optional[str] = None
    account: Optional[str] = os.environ.get("T0_SLURM_ACCOUNT") or None
    partition: Optional[str] = None
    qos: Optional[str] = None
    # exported as $T0_VENV in the job (profiles' setup lines activate it)
    venv: Optional[str] = None
    ssh_host: Optional[str] = None  # None = sbatch/squeue/scancel run on this machine
    ssh_port: int = 22
    ssh_user: Optional[str] = None
    ssh_key_path: Optional[str] = None
    queue_wait_hours: float = 24  # give up on a server job still queued after this long

    def factory(self, cfg: PipelineConfig, paths: DataPaths, size: Optional[str], log):
        """A function making the server for a plan: here, or as a Slurm job shaped for ``size``."""
        from t0_pipeline.servers import model_server as ms

        if self.mode == "local":
            return ms.local_servers(cfg.servers, paths, log)
        if self.mode != "slurm":
            raise T0Error(f"ModelServer.mode must be local or slurm, got {self.mode!r}.")
        if not self.site:
            raise T0Error(
                "ModelServer in slurm mode needs site (a site profile); set it on the resource."
            )
        return lambda plan: self._slurm_server(cfg, paths, size, plan, log)

    @contextlib.contextmanager
    def roles(self, cfg: PipelineConfig, paths: DataPaths, roles: list, log):
        """``cfg`` with each of ``roles`` that has a ``serve`` section pointed at a server started
        for the block (see :func:`t0_pipeline.servers.model_server.roles_served`)."""
        from t0_pipeline.servers.model_server import roles_served

        with roles_served(cfg.llm, roles, paths, self.factory(cfg, paths, None, log)) as llm:
            yield cfg.model_copy(update={"llm": llm})

    def _slurm_server(self, cfg: PipelineConfig, paths: DataPaths, size: Optional[str], plan, log):
        from pathlib import Path

        from t0_pipeline.servers import slurm as slurm
        from t0_pipeline.training.cluster import (
            job_spec,
            load_profile,
            render_serve_sbatch,
            server_size,
        )

        profile = load_profile(self.site, Path(self.profiles_dir) if self.profiles_dir else None)
        size = server_size(profile, plan.size or size, plan.name)
        overrides = {"account": self.account, "partition": self.partition, "qos": self.qos}
        gpus = job_spec(profile, size, **overrides).gpus_per_node
        tp, why = plan.tensor_parallel(max(1, gpus))
        if log:
            log(f"server job for {plan.name}: the {size} allocation, tensor parallel {tp} ({why})")
        log_dir = str(paths.server_logs(cfg.servers).resolve())
        script = render_serve_sbatch(
            profile,
            size,
            name=plan.name,
            command=slurm.slurm_command(cfg.servers, plan, tp),
            tp=tp,
            log_dir=log_dir,
            time_limit=cfg.servers.time_limit,
            venv=self.venv,
            **overrides,
        )
        shell = slurm.Shell(self.ssh_host, self.ssh_user, self.ssh_port, self.ssh_key_path)
        return slurm.SlurmServer(
            cfg.servers,
            plan,
            script,
            log_dir,
            shell,
            log,
            queue_wait_s=self.queue_wait_hours * 3600,
        )
