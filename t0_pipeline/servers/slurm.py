"""Model servers as Slurm jobs: a one-node job rendered from the site profile prints its endpoint,
then serves; :class:`SlurmServer` submits it (here, or over SSH on a login node through
:class:`Shell`), follows its state and log, and cancels it. The rest of the life cycle (health,
failure reasons, stopping whatever happens) is
:class:`~t0_pipeline.servers.model_server._Server`'s."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import ModelServerConfig
from t0_pipeline.servers.model_server import _Server, safe_name
from t0_pipeline.servers.plan import ServerPlan

# a Slurm server job prints this line, then its URL, before starting the server
ENDPOINT_TAG = "t0-server-endpoint"
# stands for the job's port in a Slurm command line (the shell fills it in)
PORT_VAR = "T0SERVERPORT"
ALIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED"}


class Shell:
    """Runs a command on the cluster: here, or over SSH on a login node (OpenSSH, key
    authentication)."""

    def __init__(
        self,
        ssh_host: str | None = None,
        ssh_user: str | None = None,
        ssh_port: int = 22,
        ssh_key_path: str | None = None,
    ):
        self.prefix: list[str] = []
        if ssh_host:
            self.prefix = [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=20",
                "-p",
                str(ssh_port),
            ]
            if ssh_key_path:
                self.prefix += ["-i", ssh_key_path]
            self.prefix.append(f"{ssh_user}@{ssh_host}" if ssh_user else ssh_host)

    def run(self, command: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        argv = [*self.prefix, command] if self.prefix else ["bash", "-c", command]
        try:
            return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            raise T0Error(
                f"the cluster did not answer within 120 s ({command.split()[0]}); check the SSH "
                "settings."
            ) from None


class SlurmServer(_Server):
    """A server as a one-node Slurm job rendered from the site profile; it prints its endpoint, then
    serves."""

    def __init__(
        self,
        servers: ModelServerConfig,
        plan: ServerPlan,
        script: str,
        log_dir: str,
        shell: Shell,
        log: Callable[[str], None] | None = None,
        queue_wait_s: float = 72 * 3600,
    ):
        super().__init__(servers, plan, log)
        self.script, self.log_dir, self.shell = script, log_dir, shell
        self.queue_wait_s = queue_wait_s
        self.job: str | None = None
        self.log_path = f"{log_dir}/(not submitted)"
        self._seen = 0
        self._state = "PENDING"
        self._submitted = 0.0

    def _launch(self) -> None:
        self.shell.run(f"mkdir -p {shlex.quote(self.log_dir)}")
        done = self.shell.run("sbatch --parsable", stdin=self.script)
        if done.returncode != 0:
            reason = next(
                (ln for ln in done.stderr.splitlines() if "error" in ln.lower()),
                done.stderr.strip()[:200],
            )
            raise T0Error(
                f"Slurm rejected the server job for {self.plan.name}: {reason.strip()}; fix the "
                "site profile or the ModelServer resource (partition, account, QoS, GPUs)."
            )
        self.job = done.stdout.strip().split(";")[0]
        self.log_path = f"{self.log_dir}/t0-serve-{safe_name(self.plan.name)}-{self.job}.out"
        self._submitted = time.monotonic()
        self.log(f"submitted server job {self.job} for {self.plan.name} (log: {self.log_path})")

    def _poll_state(self) -> str:
        out = self.shell.run(f"SQUEUE_STATES=all squeue -h -j {self.job} -o %T").stdout.strip()
        state = out.split()[0] if out else "GONE"
        if state != self._state:
            self.log(f"server job {self.job}: {state}")
            self._state = state
        return state

    def _dead(self) -> str | None:
        state = self._poll_state()
        if state in ALIVE_STATES:
            if state == "PENDING" and time.monotonic() - self._submitted > self.queue_wait_s:
                return f"still queued after {self.queue_wait_s / 3600:g} h"
            return None
        return f"job {self.job} {state.lower()}"

    def _running(self) -> bool:
        return self._state == "RUNNING"

    def _new_lines(self) -> list[str]:
        done = self.shell.run(f"tail -n +{self._seen + 1} {shlex.quote(self.log_path)} 2>/dev/null")
        lines = done.stdout.splitlines() if done.returncode == 0 else []
        self._seen += len(lines)
        return lines

    def _endpoint(self) -> str | None:
        return next((ln.split()[1] for ln in self.lines if ln.startswith(ENDPOINT_TAG + " ")), None)

    def stop(self) -> None:
        if self.job and self._state in ALIVE_STATES:
            self._follow()
            self.shell.run(f"scancel {self.job}")
            self.log(f"server job {self.job} for {self.plan.name} cancelled")
            self._state = "CANCELLED"


def slurm_command(servers: ModelServerConfig, plan: ServerPlan, tp: int) -> str:
    """The server's command line inside a job: every interface of the node, the job's port from the
    shell."""
    return shlex.join(plan.command(servers, "0.0.0.0", PORT_VAR, tp)).replace(PORT_VAR, '"$PORT"')
