"""Model servers the pipeline starts itself: a vLLM (or any OpenAI-compatible) server for one model.

An evaluation entry with a ``serve`` section names what to serve (a local checkpoint, a Hugging Face
name, or a trained student's ``final/``; see :mod:`t0_pipeline.servers.plan`). :func:`serving`
starts the server, on this machine (:class:`LocalServer`, a subprocess) or as a Slurm job through a
site profile (:class:`~t0_pipeline.servers.slurm.SlurmServer`, the size's GPUs per node → tensor
parallel size), follows its log, waits until its health endpoint answers and it lists the model,
yields its ``api_base``, and stops it whatever happens. A server that fails to start ends in one
error naming why (out of memory, a checkpoint that cannot be loaded, a port already taken, a job
Slurm rejected, no health within the timeout) with the log's telling line and path.

The command is ``servers.command`` from the config (vLLM's by default), so CI runs the same code
with the project's loopback server as the command.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, LLMConfig, ModelServerConfig, RoleConfig
from t0_pipeline.servers.plan import ServerPlan, plan_for
from t0_pipeline.weights import weights_digest

R = TypeVar("R", bound=RoleConfig)

# what a server's log says when it cannot start, and what to do about it (first match wins)
FAILURES: list[tuple[str, str]] = [
    (
        r"out of memory|OutOfMemoryError|No available memory for the cache blocks|not enough (GPU "
        r")?memory",
        "ran out of GPU memory; lower max_model_len, raise tensor_parallel_size or use larger GPUs",
    ),
    (
        r"address already in use|Errno 98",
        "could not bind its port, which another process holds; set servers.port to a free port (0 "
        "= any free port)",
    ),
    (
        r"config\.json|not a valid model identifier|Repository Not Found|does not appear to have a "
        r"file|Unrecognized model|HeaderTooLarge|Error while deserializing|is not a checkpoint",
        "could not load the checkpoint; check the path or name and that the folder holds "
        "config.json, weights and tokenizer",
    ),
]


def failure_reason(lines: list[str]) -> tuple[str, str] | None:
    """(what went wrong, the log line that says so) from a server's log, or None when nothing
    matches."""
    for pattern, reason in FAILURES:
        for line in reversed(lines):
            if re.search(pattern, line, re.I):
                return reason, line.strip()[:240]
    return None


def start_error(plan: ServerPlan, what: str, lines: list[str], log_path: str) -> T0Error:
    """One error for a server that did not come up: the known cause if its log shows one, else its
    last line."""
    found = failure_reason(lines)
    last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "")
    detail = (
        f"it {found[0]} (log: {found[1]!r})"
        if found
        else (f"its last log line: {last[:240]!r}" if last else "it wrote nothing")
    )
    return T0Error(
        f"the model server for {plan.name} ({plan.checkpoint}) {what}: {detail}; full log: "
        f"{log_path}"
    )


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            raise T0Error(
                f"port {port} on {host} is already in use (another server, or one left from an "
                "earlier run?); stop it, or set servers.port to a free port (0 = any free port)."
            ) from None


def visible_gpus() -> int:
    """GPUs this process may use (CUDA_VISIBLE_DEVICES, else what torch sees); 1 when none (a CPU
    server)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return max(1, len([d for d in visible.split(",") if d.strip()]))
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except Exception:
        return 1


def healthy(api_root: str, health_path: str) -> bool:
    import httpx

    try:
        return httpx.get(api_root + health_path, timeout=5.0).status_code == 200
    except httpx.HTTPError:
        return False


def served_models(api_base: str) -> list[str]:
    import httpx

    try:
        return [
            m.get("id")
            for m in httpx.get(api_base + "/models", timeout=10.0).json().get("data", [])
        ]
    except (httpx.HTTPError, ValueError, AttributeError):
        return []


class _Server:
    """The shared start loop: follow the log, watch the process or job, poll health until it
    answers."""

    log_path: str

    def __init__(
        self, servers: ModelServerConfig, plan: ServerPlan, log: Callable[[str], None] | None = None
    ):
        self.servers, self.plan = servers, plan
        self.log = log or (lambda message: None)
        self.lines: list[str] = []  # every log line read so far
        self.api_base: str | None = None

    # implemented per kind
    def _launch(self) -> None: ...
    # why the server is gone (e.g. "exited with code 1"), or None while it runs
    def _dead(
        self,
    ) -> str | None: ...
    def _running(self) -> bool:
        return True  # started (a Slurm job may still be queued)

    def _new_lines(self) -> list[str]: ...
    def _endpoint(self) -> str | None: ...
    def stop(self) -> None: ...

    def _follow(self) -> None:
        for line in self._new_lines():
            self.lines.append(line)
            self.log(f"[{self.plan.name} server] {line}")

    def start(self) -> str:
        self._launch()
        started, deadline, wait = time.monotonic(), None, 0.25
        try:
            while True:
                self._follow()
                dead = self._dead()
                if dead:
                    self._follow()
                    raise start_error(
                        self.plan,
                        f"stopped before it was healthy ({dead})",
                        self.lines,
                        self.log_path,
                    )
                if deadline is None and self._running():
                    deadline = time.monotonic() + self.servers.startup_timeout_s
                endpoint = self._endpoint() if deadline is not None else None
                if endpoint and healthy(endpoint.removesuffix("/v1"), self.servers.health_path):
                    models = served_models(endpoint)
                    if self.plan.name not in models:
                        raise T0Error(
                            f"the model server at {endpoint} is healthy but serves "
                            f"{models or 'no models'}, not {self.plan.name!r}; its command must "
                            f"pass {{name}} as the served model name."
                        )
                    self.api_base = endpoint
                    self._follow()  # what it printed between the last read and answering
                    self.log(
                        f"model server for {self.plan.name} healthy at {endpoint} after "
                        f"{time.monotonic() - started:.1f} s"
                    )
                    return endpoint
                if deadline is not None and time.monotonic() > deadline:
                    raise start_error(
                        self.plan,
                        f"was not healthy after {self.servers.startup_timeout_s:g} s "
                        "(servers.startup_timeout_s)",
                        self.lines,
                        self.log_path,
                    )
                time.sleep(wait)
                wait = min(wait * 1.5, 2.0)
        except BaseException:
            self.stop()
            raise


class LocalServer(_Server):
    """A server process on this machine, in its own process group; its output goes to a log file."""

    def __init__(
        self,
        servers: ModelServerConfig,
        plan: ServerPlan,
        log_dir: Path,
        log: Callable[[str], None] | None = None,
    ):
        super().__init__(servers, plan, log)
        self.host = servers.host
        self.port = servers.port or free_port(self.host)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = str(
            log_dir / f"{safe_name(plan.name)}-{time.strftime('%Y%m%d-%H%M%S')}-{self.port}.log"
        )
        self.proc: subprocess.Popen | None = None
        self._offset = 0
        self._partial = ""

    def _launch(self) -> None:
        check_port_free(self.host, self.port)
        tp, why = self.plan.tensor_parallel(visible_gpus())
        cmd = self.plan.command(self.servers, self.host, str(self.port), tp)
        self.log(
            f"starting a model server for {self.plan.name}: {shlex.join(cmd)} (tensor parallel "
            f"{tp}: {why}; log: {self.log_path})"
        )
        with open(self.log_path, "ab") as out:
            try:
                self.proc = subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except FileNotFoundError:
                raise T0Error(
                    f"cannot start a model server for {self.plan.name}: {cmd[0]!r} is not "
                    "installed here. vLLM runs on GPU machines (pip install vllm); or run servers "
                    "on Slurm (ModelServer mode=slurm), or use a server already running (t0 "
                    "evaluate --api-base URL, or the entry's api_base without a serve section)."
                ) from None

    def _dead(self) -> str | None:
        code = self.proc.poll() if self.proc else None
        return None if code is None else f"exited with code {code}"

    def _new_lines(self) -> list[str]:
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        text = self._partial + chunk.decode("utf-8", "replace")
        *lines, self._partial = text.split("\n")
        return lines

    def _endpoint(self) -> str | None:
        return f"http://{self.host}:{self.port}/v1"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            # it was healthy, then went away under the stage: say so where the run's log shows it
            if self.api_base:
                self._follow()
                self.log(
                    f"model server for {self.plan.name} exited during the run (code "
                    f"{self.proc.returncode}); its last line: "
                    f"{next((ln for ln in reversed(self.lines) if ln.strip()), '')[:240]!r}; full "
                    f"log: {self.log_path}"
                )
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.servers.stop_timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.log(f"model server for {self.plan.name} stopped")


def safe_name(name: str) -> str:
    """A served name as a file and job name (``Qwen/Qwen2.5-7B-Instruct`` →
    ``Qwen_Qwen2.5-7B-Instruct``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


@contextlib.contextmanager
def serving(server: _Server) -> Iterator[str]:
    """Start ``server``, yield its api_base once healthy, stop it afterwards (errors included)."""
    api_base = server.start()
    try:
        yield api_base
    finally:
        server.stop()


@contextlib.contextmanager
def endpoint_for(
    name: str, entry: R, paths: DataPaths, make_server: Callable[[ServerPlan], _Server]
) -> Iterator[tuple[R, str | None]]:
    """(the entry as the stage should call it, the checkpoint served or None), for a role or an
    evaluation entry.

    An entry without a ``serve`` section is reached where it says. Otherwise a server is started for
    it with ``make_server`` and stopped when the block ends; the entry then points at it, and a
    served local checkpoint's own tokenizer renders budget-forced prompts unless the entry names
    one.
    """
    backend = getattr(entry, "backend", "chat")
    if entry.serve is None or backend in ("retrieval", "transformers"):
        yield entry, None
        return
    plan = plan_for(name, entry, paths)
    weights = weights_digest(plan.checkpoint)  # before the start: a missing folder costs nothing
    with serving(make_server(plan)) as api_base:
        update: dict = {"api_base": api_base, "api_key_env": None}
        if weights:
            update["weights"] = weights
        if (
            getattr(entry, "tokenizer", "") is None
            and backend == "completions"
            and Path(plan.checkpoint).is_dir()
        ):
            update["tokenizer"] = plan.checkpoint
        yield entry.model_copy(update=update), plan.checkpoint


@contextlib.contextmanager
def roles_served(
    llm: LLMConfig,
    roles: list[str],
    paths: DataPaths,
    make_server: Callable[[ServerPlan], _Server],
) -> Iterator[LLMConfig]:
    """The model settings (``llm``) with each of ``roles`` that has a ``serve`` section pointed at a
    server started for the block (one server per distinct model: two roles on one checkpoint share
    it); ``llm`` itself is left as it was."""
    llm = llm.model_copy(update={"roles": dict(llm.roles)})
    with contextlib.ExitStack() as stack:
        started: dict[tuple, RoleConfig] = {}
        for role in roles:
            entry = llm.roles.get(role)
            if entry is None or entry.serve is None:
                continue
            key = (entry.served_name, entry.serve.model_dump_json())
            if key not in started:
                started[key], _ = stack.enter_context(endpoint_for(role, entry, paths, make_server))
            served = started[key]
            update = {"api_base": served.api_base, "api_key_env": None}
            llm.roles[role] = entry.model_copy(
                update={**update, "weights": served.weights or entry.weights}
            )
        yield llm


def local_servers(
    servers: ModelServerConfig, paths: DataPaths, log: Callable[[str], None] | None = None
) -> Callable[[ServerPlan], _Server]:
    """Servers as subprocesses on this machine (its GPUs)."""
    return lambda plan: LocalServer(servers, plan, paths.server_logs(servers), log)
