"""dagster-slurm launcher for student training: submits the job script that ``t0 sbatch`` prints.

dagster-slurm's own ``BashLauncher`` runs its payload once, as one process. Training needs the job
shaped by the site profile (``srun`` → one ``torchrun`` per node → one rank per GPU, DeepSpeed
ZeRO-3, the profile's modules, container and setup lines), so this launcher hands dagster-slurm the
script rendered by :func:`t0_pipeline.training.cluster.render_sbatch`, unchanged. What Dagster adds
(the Pipes context and the pre-deployed environment as ``$T0_VENV``) goes into ``t0-job.env`` beside
it in the job's working directory, which the script sources; ``srun`` and ``torchrun`` pass it on to
every rank, and rank 0 opens the Pipes session."""

from pathlib import Path
from typing import Any, Dict, Optional

from dagster_slurm.config.runtime import RuntimeVariant
from dagster_slurm.launchers.base import ComputeLauncher, ExecutionPlan

from t0_pipeline.training.cluster import JOB_ENV_FILE, job_env_file


class TrainingJobLauncher(ComputeLauncher):
    """Runs a rendered training job script; the payload dagster-slurm uploads is that script, kept
    for reference."""

    script: str

    def prepare_execution(
        self,
        payload_path: str,
        python_executable: str,
        working_dir: str,
        pipes_context: Dict[str, str],
        extra_env: Optional[Dict[str, str]] = None,
        allocation_context: Optional[Dict[str, Any]] = None,
        activation_script: Optional[str] = None,
    ) -> ExecutionPlan:
        venv = str(Path(python_executable).parent.parent) if python_executable else None
        env = {**pipes_context, **(extra_env or {})}
        return ExecutionPlan(
            kind=RuntimeVariant.SHELL,
            payload=self.script.split("\n"),
            environment=env,
            resources={},
            auxiliary_scripts={JOB_ENV_FILE: job_env_file(env, venv)},
        )
