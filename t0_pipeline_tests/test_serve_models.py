"""`t0 serve` starts the models its profiles need and stops them, a student size is one setting,
role servers run as Slurm jobs, and the tensor parallel size fits the model's attention heads.

The model servers here are the project's loopback stand-in for ``vllm serve`` (same command line,
/health, /v1/models); processes, signals, Slurm and SSH are real. The real student behind the real
CPU server, in a real browser, is in ``test_whole_chain``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, PipelineConfig, RoleConfig, load_config
from t0_pipeline.servers.plan import ServerPlan, tensor_parallel_size
from t0_pipeline_tests.serving import free_port
from t0_pipeline_tests.test_model_server import checkpoint, servers, stand_in

DEMO = Path(__file__).resolve().parents[1] / "t0_pipeline" / "demo.yaml"

# (attention heads, key-value heads) of Qwen2.5-1.5B, -7B, -14B/32B and -72B
QWEN_HEADS = {12: 2, 28: 4, 40: 8, 64: 8}


@pytest.mark.parametrize(
    "gpus, expected",
    [
        (8, {12: 6, 28: 4, 40: 8, 64: 8}),
        (4, {12: 4, 28: 4, 40: 4, 64: 4}),
        (3, {12: 2, 28: 2, 40: 2, 64: 2}),
        (1, {12: 1, 28: 1, 40: 1, 64: 1}),
    ],
)
def test_the_tensor_parallel_size_is_the_most_gpus_the_attention_heads_allow(gpus, expected):
    chosen = {heads: tensor_parallel_size(gpus, heads, kv) for heads, kv in QWEN_HEADS.items()}
    assert chosen == expected
    for heads, tp in chosen.items():  # what vLLM checks
        kv = QWEN_HEADS[heads]
        assert heads % tp == 0 and (kv % tp == 0 or tp % kv == 0)


def test_the_tensor_parallel_size_is_read_from_the_checkpoint_and_can_be_set(tmp_path):
    folder = checkpoint(tmp_path)
    (folder / "config.json").write_text(
        json.dumps({"num_attention_heads": 28, "num_key_value_heads": 4})
    )
    plan = ServerPlan(name="qwen2.5-7b", checkpoint=str(folder))
    tp, why = plan.tensor_parallel(8)
    assert tp == 4 and "28 attention heads" in why
    command = plan.command(servers(), "127.0.0.1", "8000", tp)
    assert command[command.index("--tensor-parallel-size") + 1] == "4"
    assert ServerPlan(name="m", checkpoint=str(folder), tensor_parallel_size=8).tensor_parallel(
        8
    ) == (8, "set by serve.tensor_parallel_size")
    # a model whose config cannot be read here (a name not in the local cache): every GPU, said so
    tp, why = ServerPlan(name="m", checkpoint="org/not-cached-here").tensor_parallel(8)
    assert tp == 8 and "not readable" in why


def test_a_student_size_is_one_setting_its_base_is_the_agent():
    cfg = load_config(None)  # the default profile serves the 7B student
    profile = cfg.serve.profiles["t0"]
    reasoner, agent = cfg.llm.roles[profile.reasoner], cfg.llm.roles[profile.agent]
    assert (profile.reasoner, reasoner.student, reasoner.model) == ("t0-7b", "7B", "openai/t0-7b")
    assert reasoner.serve is not None and reasoner.serve.checkpoint is None  # its final/
    assert agent.serve.checkpoint == "Qwen/Qwen2.5-7B-Instruct" and profile.agent_tools
    assert "--enable-auto-tool-choice" in agent.serve.args  # as evaluation serves the base
    # sampled as the serving roles, not as evaluation
    assert agent.temperature == cfg.llm.roles["agent"].temperature and agent.seed is None
    assert profile.budget.thinking_budget == cfg.evaluation.models["t0-7b"].budget.thinking_budget

    other = load_config(None, overrides={"serve": {"profiles": {"t0": {"student": "1.5B"}}}})
    profile = other.serve.profiles["t0"]
    assert (profile.agent, profile.reasoner) == ("qwen2.5-1.5b", "t0-1.5b")
    # a role already running somewhere is named, and used as configured
    named = load_config(
        None, overrides={"serve": {"profiles": {"t0": {"agent": "agent", "reasoner": "reasoner"}}}}
    )
    assert named.serve.profiles["t0"].agent == "agent" and named.llm.roles["agent"].serve is None
    # no student: the plain roles
    plain = PipelineConfig.model_validate({"serve": {"profiles": {"t0": {"student": None}}}})
    assert (plain.serve.profiles["t0"].agent, plain.serve.profiles["t0"].reasoner) == (
        "agent",
        "reasoner",
    )
    # the demo's base answers in text on the CPU server: its agent uses the text protocol
    demo = load_config(DEMO).serve.profiles["t0"]
    assert (demo.agent, demo.reasoner, demo.agent_tools) == ("smollm2-135m", "t0-135m", False)


def test_any_role_can_name_a_student(tmp_path):
    from t0_pipeline.servers.plan import plan_for

    paths = DataPaths(tmp_path)
    final = paths.student_dir("1.5B") / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    role = RoleConfig(model="openai/t0-1.5b", student="1.5B", serve={})
    plan = plan_for("teacher", role, paths)
    assert plan.checkpoint == str(final.resolve()) and plan.size == "1.5B"


def serve_config(tmp_path: Path, **student_serve) -> tuple[Path, Path]:
    """A config whose profile's student (size "tiny") and base are served by the stand-in."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"num_attention_heads": 9}))
    data = tmp_path / "data"
    final = DataPaths(data).student_dir("tiny") / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    cfg = {
        "servers": {"command": stand_in(), "port": 0, "startup_timeout_s": 60},
        "train": {"sizes": {"tiny": str(base)}},
        "evaluation": {"models": {"t0-tiny": {"serve": student_serve}}},
        "serve": {"profiles": {"t0": {"student": None}}},
    }
    path = tmp_path / "t0.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, data


def stand_ins(tmp_path: Path) -> list[int]:
    """The stand-in servers started for this test (their command lines name its folder)."""
    out = subprocess.run(["pgrep", "-f", f"fake_llm {tmp_path}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def start_serve(config: Path, data: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "T0_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    env.pop("T0_CONFIG", None)
    command = [sys.executable, "-m", "t0_pipeline.cli", "serve", "--config", str(config)]
    return subprocess.Popen(
        [*command, "--port", str(port), "--insecure-local", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.timeout(300)
def test_t0_serve_starts_the_student_and_its_base_and_stops_them_on_sigterm(tmp_path):
    config, data = serve_config(tmp_path)
    port = free_port()
    proc = start_serve(config, data, port, "--student", "tiny")
    try:
        models: dict = {}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["models"]
                break
            except (httpx.HTTPError, ValueError, KeyError):
                time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()
        # both roles answered from servers t0 serve started for them (no index here: degraded)
        assert set(models) == {"base", "t0-tiny"} and all(m["reachable"] for m in models.values())
        assert len(stand_ins(tmp_path)) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    # its base (the agent, with the tool-call flags) then the student from final/, each stopped
    base = tmp_path / "base"  # served under its name, as vLLM names a model by its path
    assert f"starting a model server for {base}:" in out and "--enable-auto-tool-choice" in out
    assert f"for t0-tiny: {sys.executable} -m t0_pipeline_tests.fake_llm {data}" in out.replace(
        str(data.resolve()), str(data)
    )
    assert "model server for t0-tiny stopped" in out and f"model server for {base} stopped" in out
    assert "tensor parallel 1" in out
    assert not stand_ins(tmp_path)


@pytest.mark.timeout(300)
def test_a_model_that_fails_to_start_stops_the_others_in_one_line(tmp_path):
    config, data = serve_config(
        tmp_path, args=["--fail", "torch.OutOfMemoryError: CUDA out of memory"]
    )
    proc = start_serve(config, data, free_port(), "--student", "tiny")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 2  # the CLI's exit status for a one-line error
    error = next(line for line in out.splitlines() if line.startswith("error:"))
    assert "the model server for t0-tiny" in error and "ran out of GPU memory" in error
    assert f"model server for {tmp_path / 'base'} stopped" in out and "Traceback" not in out
    assert not stand_ins(tmp_path)
    # a size nobody trained: one line, nothing started
    proc = start_serve(config, data, free_port(), "--student", "70B")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "serves the 70B student, but train.sizes has no 70B" in out
    assert "starting a model server" not in out
    # the service's own port taken: one line, before any model server starts
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        proc = start_serve(config, data, held.getsockname()[1], "--student", "tiny")
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "is already in use; pass --port" in out
    assert "starting a model server" not in out
    proc = start_serve(config, data, free_port(), "--servers", "slurm")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--servers slurm needs --site" in out


def test_a_role_server_takes_the_sites_widest_one_node_allocation_or_its_own():
    from t0_pipeline.training.cluster import load_profile, server_size

    baskerville = load_profile("baskerville")
    assert server_size(baskerville, None, "teacher") == "1.5B"  # 4 GPUs on one node
    assert server_size(baskerville, "7B", "t0-7b") == "7B"
    with pytest.raises(T0Error, match="asks for the 70B allocation, but site profile"):
        server_size(baskerville, "70B", "teacher")


def test_a_role_server_runs_as_a_slurm_job_for_its_stage(tmp_path):
    """A teacher with a serve section, through ModelServer(mode=slurm): sbatch over SSH, health,
    a call, scancel; no size needed (the site's widest one-node allocation)."""
    from t0_pipeline.defs.resources import ModelServer
    from t0_pipeline_tests.test_model_server import slurm_over_ssh

    where = slurm_over_ssh(tmp_path)
    cfg = PipelineConfig(servers=servers("--reply", "a teacher on the cluster"))
    cfg.servers.startup_timeout_s = 120
    cfg.llm.roles["teacher"] = RoleConfig(
        model="openai/teacher-model", serve={"checkpoint": str(checkpoint(tmp_path))}
    )
    logged: list[str] = []
    resource = ModelServer(**where, partition="debug")
    paths = DataPaths(tmp_path / "data")
    with resource.roles(cfg, paths, ["teacher"], logged.append) as served:
        teacher = served.llm.roles["teacher"]
        reply = httpx.post(
            teacher.api_base + "/chat/completions",
            json={"model": "teacher-model", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        ).json()
        assert reply["choices"][0]["message"]["content"] == "a teacher on the cluster"
    job = next(m.split()[3] for m in logged if m.startswith("submitted server job"))
    assert any("the tiny allocation" in m for m in logged)
    assert any(f"server job {job} for teacher-model cancelled" in m for m in logged)


@pytest.mark.parametrize("tools", [True, False], ids=["tool calling", "SEARCH line"])
def test_an_agent_made_to_search_searches_every_message(built, retriever, tmp_path, tools):
    """``always_search`` (the demo's 135M agent): a tool-calling agent is asked with
    tool_choice "required"; a message it answers anyway (a greeting, here) is searched in the
    person's own words and answered over the documents; without it, a greeting is answered
    directly."""
    from t0_pipeline.config import ServeProfile
    from t0_pipeline_tests.test_serve import agent_requests, served

    profile = ServeProfile(student=None, agent_tools=tools, always_search=True)
    with served(built, retriever, tmp_path, profiles={"t0": profile}) as (server, _, client):
        tid = client.post("/api/threads", json={}).json()["id"]
        reply = client.post(f"/api/threads/{tid}/messages", json={"content": "hello"}).json()
        asked = agent_requests(server)[-1]
    message = reply["message"]
    assert message["search_query"] == "hello" and message["content"] == "Answer to: hello"
    assert len(message["sources"]) == 5
    assert asked.get("tool_choice") == ("required" if tools else None)

    plain = ServeProfile(student=None, agent_tools=tools)
    with served(built, retriever, tmp_path / "plain", profiles={"t0": plain}) as (_, _, client):
        tid = client.post("/api/threads", json={}).json()["id"]
        reply = client.post(f"/api/threads/{tid}/messages", json={"content": "hello"}).json()
    assert reply["message"]["content"] == "Hello! How can I help you today?"
