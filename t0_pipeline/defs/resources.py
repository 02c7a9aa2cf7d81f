"""Dagster resources: the pipeline's settings, the embedding model and the Chroma store.

Each resource only turns its fields into the stage modules' pydantic configs, so the
CLI and the assets run exactly the same code with the same settings.
"""


import os
import re
from typing import Optional

import dagster as dg

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import ChromaConfig, DataPaths, EmbeddingConfig, PipelineConfig, load_config


class PipelineSettings(dg.ConfigurableResource):
    """Where artefacts live, an optional config file, and the corpus source."""

    data_dir: str = os.environ.get("T0_DATA_DIR", "data")
    config_file: Optional[str] = os.environ.get("T0_CONFIG") or None
    source_kind: Optional[str] = None  # overrides the config file: sample | site | mirror | pages
    source_location: Optional[str] = None  # URL, mirror directory or pages file

    def pipeline_config(self) -> PipelineConfig:
        cfg = load_config(self.config_file)
        if self.source_kind:
            cfg.source.kind = self.source_kind  # type: ignore[assignment]
        if self.source_location:
            cfg.source.location = self.source_location
        return cfg

    def paths(self) -> DataPaths:
        return DataPaths(self.data_dir)


class EmbeddingModel(dg.ConfigurableResource):
    """A sentence-transformers model (default: the bundled all-MiniLM-L6-v2)."""

    model: Optional[str] = None
    device: str = "cpu"
    batch_size: int = 64

    def config(self) -> EmbeddingConfig:
        return EmbeddingConfig(model=self.model, device=self.device, batch_size=self.batch_size)

    def load(self):
        from t0_pipeline.embed import load_embedder

        return load_embedder(self.config())


class ChromaStore(dg.ConfigurableResource):
    """Embedded Chroma under the data dir by default; a Chroma server when host is set."""

    path: Optional[str] = None
    host: Optional[str] = None
    port: int = 8000
    distance: str = "l2"

    def config(self) -> ChromaConfig:
        return ChromaConfig(path=self.path, host=self.host, port=self.port, distance=self.distance)  # type: ignore[arg-type]

    def client(self, paths: DataPaths):
        from t0_pipeline.index import chroma_client

        return chroma_client(self.config(), paths)


class TrainingCompute(dg.ConfigurableResource):
    """Where student training runs; the same payload (t0_pipeline/pipes_train.py) either way.

    ``local``: a Dagster Pipes subprocess on this machine. ``slurm``: dagster-slurm submits it
    over SSH with sbatch; nodes, GPUs, hours and memory come from the site profile's entry
    for the partition (student size). Clusters without accounting (no slurmdbd) never show
    finished jobs to squeue, so the SSH session exports ``SQUEUE_STATES=all`` first.
    """

    mode: str = "local"  # local | slurm
    site: Optional[str] = None  # slurm: profile in slurm/profiles (allocation per size)
    profiles_dir: Optional[str] = None  # where site profiles live; default slurm/profiles
    ssh_host: Optional[str] = None
    ssh_port: int = 22
    ssh_user: Optional[str] = None
    ssh_key_path: Optional[str] = None  # a private key file; never the key itself
    env_path: Optional[str] = None  # pre-deployed environment on shared storage (see `t0 slurm-env`)
    remote_base: Optional[str] = None  # where dagster-slurm stages payloads and logs on the cluster
    partition: Optional[str] = None  # Slurm partition; defaults to the site profile's

    def run(self, context: dg.AssetExecutionContext, extras: dict) -> dg.MaterializeResult:
        import sys
        from pathlib import Path

        payload = Path(__file__).resolve().parents[1] / "pipes_train.py"
        if self.mode == "local":
            return dg.PipesSubprocessClient().run(context=context, command=[sys.executable, str(payload)],
                                                  extras=extras).get_materialize_result()
        if self.mode != "slurm":
            raise T0Error(f"TrainingCompute.mode must be local or slurm, got {self.mode!r}.")
        missing = [n for n in ("site", "ssh_host", "ssh_user", "env_path", "remote_base") if not getattr(self, n)]
        if missing:
            raise T0Error(f"TrainingCompute in slurm mode needs {', '.join(missing)}; set them on the resource.")
        return self._slurm(context, extras, str(payload))

    def _slurm(self, context: dg.AssetExecutionContext, extras: dict, payload: str) -> dg.MaterializeResult:
        from pathlib import Path

        from dagster_slurm import BashLauncher, ComputeResource, SlurmQueueConfig, SlurmResource, SSHConnectionResource

        from t0_pipeline.cluster import load_profile

        profile = load_profile(self.site, Path(self.profiles_dir) if self.profiles_dir else None)  # type: ignore[arg-type]
        size = context.partition_key if context.has_partition_key else "default"
        if size not in profile.sizes:
            raise T0Error(f"site profile {profile.name!r} has no allocation for size {size!r}; add it under sizes:.")
        alloc = profile.sizes[size]
        queue = SlurmQueueConfig(
            partition=self.partition or profile.partition or "", num_nodes=alloc.nodes,
            time_limit=f"{alloc.hours:02d}:00:00", gpus_per_node=alloc.gpus_per_node,
            cpus=max(1, alloc.gpus_per_node) * profile.cpus_per_gpu,
            mem=str(alloc.mem) if alloc.mem else None, qos=profile.qos, account=profile.account)
        ssh = SSHConnectionResource(host=self.ssh_host, port=self.ssh_port, user=self.ssh_user,  # type: ignore[arg-type]
                                    key_path=self.ssh_key_path, post_login_command="export SQUEUE_STATES=all")
        compute = ComputeResource(mode="slurm", default_launcher=BashLauncher(), pre_deployed_env_path=self.env_path,
                                  slurm=SlurmResource(ssh=ssh, queue=queue, remote_base=self.remote_base))
        try:
            return compute.run(context=context, payload_path=payload, extras=extras).get_materialize_result()
        except RuntimeError as exc:  # dagster-slurm reports rejected or failed jobs this way
            lines = str(exc).splitlines()
            reason = next((ln.strip() for ln in lines if "error:" in ln), lines[0][:160] if lines else "no detail")
            reason = re.sub(r"^(?:std(?:err|out):\s*)+", "", reason)  # how the SSH layer labels the stream varies
            raise T0Error(f"the Slurm job for {size} did not complete: {reason}; the job's output is in the run's "
                          "logs, and the previous checkpoint is kept.") from None
