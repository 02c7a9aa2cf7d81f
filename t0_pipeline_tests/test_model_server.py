"""The model-server lifecycle: start, health wait, calls, stop; and each way a start fails, with one
clear error.

vLLM needs a GPU, so the server command is the project's loopback server (``fake_llm``) started as a
subprocess exactly as ``vllm serve`` would be (same placeholders, same /health, /v1/models and
completions protocol). Process groups, ports, logs, Slurm jobs and SSH are real.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, EvalModelConfig, LaunchConfig, ModelServerConfig
from t0_pipeline.servers.model_server import (
    LocalServer,
    ServerPlan,
    endpoint_for,
    local_servers,
    plan_for,
    serving,
)


def stand_in(*extra: str) -> list[str]:
    """vLLM's command line with the loopback server in its place."""
    return [
        sys.executable,
        "-m",
        "t0_pipeline_tests.fake_llm",
        "{checkpoint}",
        "--served-model-name",
        "{name}",
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--tensor-parallel-size",
        "{tp}",
        *extra,
    ]


def checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text("{}")
    return folder


def servers(*extra: str, **fields) -> ModelServerConfig:
    return ModelServerConfig(command=stand_in(*extra), **{"port": 0, **fields})


def test_a_server_is_started_waited_on_called_and_stopped(tmp_path):
    logged: list[str] = []
    plan = ServerPlan(name="t0-tiny", checkpoint=str(checkpoint(tmp_path)), max_model_len=4096)
    server = LocalServer(
        servers("--reply", "hello there", "--startup-delay", "1.5"),
        plan,
        tmp_path / "logs",
        logged.append,
    )
    started = time.monotonic()
    with serving(server) as api_base:
        assert time.monotonic() - started >= 1.5  # waited for health, not just for the port
        reply = httpx.post(
            api_base + "/chat/completions",
            json={"model": "t0-tiny", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        ).json()
        assert reply["choices"][0]["message"]["content"] == "hello there"
        pid = server.proc.pid
    assert server.proc.poll() is not None  # stopped when the block ended
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group is gone
    # log lines forwarded
    assert any("stand-in server: loading" in m and m.startswith("[t0-tiny server]") for m in logged)
    assert any("healthy at" in m for m in logged) and any("stopped" in m for m in logged)
    assert "--max-model-len 4096" in next(m for m in logged if m.startswith("starting"))
    # SIGTERM: a clean shutdown, log kept
    assert "shutting down" in Path(server.log_path).read_text()


def test_a_server_that_dies_during_the_run_is_reported_in_the_runs_log(tmp_path):
    import signal

    logged: list[str] = []
    server = LocalServer(
        servers(), ServerPlan(name="m", checkpoint="org/model"), tmp_path / "logs", logged.append
    )
    with serving(server):
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
    assert any("exited during the run (code -9)" in m and server.log_path in m for m in logged)


def test_a_server_that_dies_at_start_is_one_error_naming_why(tmp_path):
    oom = servers(
        "--fail", "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    plan = ServerPlan(name="big", checkpoint=str(checkpoint(tmp_path)))
    started = time.monotonic()
    with pytest.raises(T0Error) as err:
        LocalServer(oom, plan, tmp_path / "logs").start()
    message = str(err.value)
    assert time.monotonic() - started < 20 and "\n" not in message
    assert (
        "stopped before it was healthy (exited with code 1)" in message
        and "ran out of GPU memory" in message
    )
    assert "CUDA out of memory" in message and str(tmp_path / "logs") in message

    empty = tmp_path / "empty"
    empty.mkdir()  # a checkpoint folder without config.json
    with pytest.raises(T0Error, match="could not load the checkpoint.*config.json"):
        LocalServer(
            servers(), ServerPlan(name="bad", checkpoint=str(empty)), tmp_path / "logs"
        ).start()


def test_a_server_never_healthy_times_out_and_is_stopped(tmp_path):
    logged: list[str] = []
    server = LocalServer(
        servers("--unhealthy", startup_timeout_s=3),
        ServerPlan(name="stuck", checkpoint="org/model"),
        tmp_path / "logs",
        logged.append,
    )
    with pytest.raises(T0Error, match=r"was not healthy after 3 s \(servers.startup_timeout_s\)"):
        server.start()
    assert server.proc.poll() is not None  # not left running


def test_a_port_already_taken_is_refused_before_starting(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        server = LocalServer(
            servers(port=port), ServerPlan(name="m", checkpoint="org/model"), tmp_path / "logs"
        )
        with pytest.raises(T0Error, match=f"port {port} on 127.0.0.1 is already in use"):
            server.start()
        assert server.proc is None  # nothing was started


def test_a_missing_server_program_and_a_missing_student_say_what_to_do(tmp_path):
    absent = ModelServerConfig(command=["vllm-is-not-installed", "serve", "{checkpoint}"], port=0)
    with pytest.raises(
        T0Error, match="'vllm-is-not-installed' is not installed here.*pip install vllm"
    ):
        LocalServer(absent, ServerPlan(name="m", checkpoint="org/model"), tmp_path / "logs").start()
    entry = EvalModelConfig(
        model="openai/t0-7b", backend="completions", student="7B", serve=LaunchConfig()
    )
    with pytest.raises(
        T0Error, match=r"holds no trained checkpoint; materialise student_checkpoint\[7B\]"
    ):
        plan_for("t0-7b", entry, DataPaths(tmp_path))
    served_elsewhere = EvalModelConfig(model="openai/x", api_base="http://example.invalid/v1")
    with endpoint_for(
        "x", served_elsewhere, DataPaths(tmp_path), local_servers(absent, DataPaths(tmp_path))
    ) as (e, ck):
        # a running endpoint is used as configured
        assert e.api_base == "http://example.invalid/v1" and ck is None


def test_a_served_student_is_reached_with_its_own_tokenizer_and_the_server_stops(tmp_path):
    paths = DataPaths(tmp_path / "data")
    final = paths.student_dir("1.5B") / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    entry = EvalModelConfig(
        model="openai/t0-1.5b", backend="completions", student="1.5B", serve=LaunchConfig()
    )
    with endpoint_for("t0-1.5b", entry, paths, local_servers(servers(), paths)) as (
        served,
        served_from,
    ):
        assert served_from == str(final.resolve()) and served.tokenizer == served_from
        assert httpx.get(served.api_base + "/models").json()["data"][0]["id"] == "t0-1.5b"
        port = int(served.api_base.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free again
    # the log stays under <data>/servers
    assert list((tmp_path / "data" / "servers").glob("t0-1.5b-*.log"))


def test_the_slurm_server_script_asks_for_the_sizes_gpus_and_passes_them_as_tensor_parallel_size():
    from t0_pipeline.servers.slurm import slurm_command
    from t0_pipeline.training.cluster import load_profile, render_serve_sbatch

    plan = ServerPlan(
        name="qwen2.5-7b", checkpoint="Qwen/Qwen2.5-7B-Instruct", args=["--enable-prefix-caching"]
    )
    script = render_serve_sbatch(
        load_profile("baskerville"),
        "7B",
        name=plan.name,
        tp=4,
        log_dir="/shared/logs",
        command=slurm_command(ModelServerConfig(), plan, 4),
        time_limit="02:00:00",
        account="proj",
    )
    assert (
        "#SBATCH --gres=gpu:4" in script
        and "#SBATCH --nodes=1" in script
        and "#SBATCH --account=proj" in script
    )
    assert "module load CUDA/12.1.1" in script and "#SBATCH --time=02:00:00" in script
    assert (
        "exec vllm serve Qwen/Qwen2.5-7B-Instruct --served-model-name qwen2.5-7b --host 0.0.0.0 "
        '--port "$PORT" '
        "--tensor-parallel-size 4 --enable-prefix-caching"
    ) in script
    assert "#SBATCH --output=/shared/logs/t0-serve-qwen2.5-7b-%j.out" in script


def test_the_slurm_server_script_takes_the_next_port_when_its_job_s_port_is_held():
    """The job-id port lies in Linux's ephemeral range: another process's socket may hold it (a CI
    run's job 94 failed on 40094 so). The script serves, and says it serves, on the next free one;
    without python3 on the node it keeps the job-id port."""
    from t0_pipeline.training.cluster import load_profile, render_serve_sbatch

    script = render_serve_sbatch(
        load_profile("baskerville"),
        "7B",
        name="m",
        tp=1,
        log_dir="/tmp",
        command='echo "serving on $PORT"',
        time_limit="00:10:00",
        account="proj",
    )
    # from the port on: the site's modules and virtual environment are not on this machine
    ports = "set -euo pipefail\n" + script[script.index("PORT=$((") :]
    held, holder = _held_job_port()
    with holder:
        env = {**os.environ, "SLURM_JOB_ID": str(held - 40000)}
        done = subprocess.run(["bash", "-c", ports], env=env, capture_output=True, text=True)
        bare = subprocess.run(
            ["/bin/bash", "-c", ports],
            env={"SLURM_JOB_ID": str(held - 40000), "PATH": "/nonexistent"},
            capture_output=True,
            text=True,
        )
    assert done.returncode == 0, done.stderr
    endpoint, served = done.stdout.splitlines()[-2:]
    assert endpoint.endswith(f":{held + 1}/v1") and served == f"serving on {held + 1}"
    assert bare.stdout.splitlines()[0].endswith(f":{held}/v1")  # no python3: the job's port


def _held_job_port() -> tuple[int, socket.socket]:
    """A port a job id maps to (40000-59999), held by a listening socket; the next one is free."""
    for port in random.Random().sample(range(40000, 59999), 200):
        holder, probe = socket.socket(), socket.socket()
        try:
            holder.bind(("0.0.0.0", port))
            probe.bind(("0.0.0.0", port + 1))
        except OSError:
            holder.close()
            continue
        finally:
            probe.close()
        holder.listen()
        return port, holder
    raise AssertionError("no free pair of ports in 40000-59999")


def _slurm_over_ssh() -> Path | None:
    import shutil

    key = Path(os.environ.get("T0_CI_SSH_KEY", "/root/.ssh/t0_ci"))
    up = (
        shutil.which("sbatch")
        and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
    )
    if up and key.exists():
        return key
    if os.environ.get("CI"):
        pytest.fail("CI should have started Slurm and sshd with a key (.ci/slurm-up.sh)")
    pytest.skip("no Slurm cluster reachable over SSH here; run `sudo bash .ci/slurm-up.sh`")


def slurm_over_ssh(tmp_path: Path) -> dict:
    """ModelServer settings for the CI cluster: the CPU-only "ci-cpu" profile, over SSH to
    localhost (skips, or fails in CI, when the cluster is not up)."""
    from t0_pipeline_tests.test_train import cpu_profile

    return dict(
        mode="slurm",
        site="ci-cpu",
        profiles_dir=str(cpu_profile(tmp_path)),
        venv=sys.prefix,
        ssh_host="localhost",
        ssh_user="root",
        ssh_key_path=str(_slurm_over_ssh()),
    )


def test_a_server_runs_as_a_slurm_job_over_ssh_and_is_cancelled_after(tmp_path):
    """ModelServer(mode=slurm) → SSH → sbatch → the server on the node → health → a call →
    scancel."""
    from t0_pipeline.config import PipelineConfig
    from t0_pipeline.defs.resources import ModelServer

    cfg = PipelineConfig(servers=servers("--reply", "from the cluster", startup_timeout_s=120))
    paths = DataPaths(tmp_path / "data")
    where = slurm_over_ssh(tmp_path)
    logged: list[str] = []
    make = ModelServer(**where, partition="debug").factory(cfg, paths, "tiny", logged.append)
    server = make(ServerPlan(name="t0-tiny", checkpoint=str(checkpoint(tmp_path))))
    with serving(server) as api_base:
        assert ":4" in api_base  # the port the job derived from its id (40000 + id % 20000)
        reply = httpx.post(
            api_base + "/chat/completions",
            json={"model": "t0-tiny", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        ).json()
        assert reply["choices"][0]["message"]["content"] == "from the cluster"
    job = server.job
    assert any(f"submitted server job {job}" in m for m in logged) and any(
        "stand-in server: loading" in m for m in logged
    )
    state = ""
    for _ in range(60):  # cancelled: Slurm ends the job within moments
        out = subprocess.run(
            ["scontrol", "show", "job", job, "-o"], capture_output=True, text=True
        ).stdout
        state = next((f.split("=", 1)[1] for f in out.split() if f.startswith("JobState=")), "")
        if state not in ("RUNNING", "COMPLETING"):
            break
        time.sleep(0.5)
    assert state == "CANCELLED"

    rejected = ModelServer(**where, partition="no-such-partition").factory(cfg, paths, "tiny", None)
    with pytest.raises(
        T0Error, match="Slurm rejected the server job for t0-tiny: .*(?i:invalid partition)"
    ):
        rejected(ServerPlan(name="t0-tiny", checkpoint=str(checkpoint(tmp_path)))).start()
