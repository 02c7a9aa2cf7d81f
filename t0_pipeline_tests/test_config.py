"""Configuration layers: defaults ← file ← T0_…__… environment ← run config, each setting only what
it names."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import PipelineConfig, RoleConfig, load_config

README = Path(__file__).resolve().parents[1] / "README.md"


def write(tmp_path, text: str, name: str = "t0.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_file_naming_one_field_of_one_role_changes_that_field_only(tmp_path):
    default = PipelineConfig()
    cfg = load_config(
        write(tmp_path, "llm:\n  roles:\n    agent:\n      api_base: http://gpu-node:8000/v1\n"),
        environ={},
    )
    assert set(cfg.llm.roles) == set(default.llm.roles)  # the other roles are still there
    agent = cfg.llm.roles["agent"]
    assert agent.api_base == "http://gpu-node:8000/v1"
    assert agent.model_dump(exclude={"api_base"}) == default.llm.roles["agent"].model_dump(
        exclude={"api_base"}
    )
    assert agent.model != RoleConfig().model  # the agent's own default model, not the class default
    assert cfg.llm.roles["teacher"] == default.llm.roles["teacher"]


def test_file_then_environment_then_run_config_each_override_only_their_fields(tmp_path):
    path = write(
        tmp_path,
        "llm:\n  roles:\n    teacher: {max_tokens: 100, temperature: 0.1}\nqueries: {n_eval: 10}\n",
    )
    env = {
        "T0_LLM__ROLES__TEACHER__MAX_TOKENS": "200",
        "T0_QUERIES__DISPOSITIONS": '["A&E", "Self-care"]',
        "T0_DATA_DIR": "elsewhere",
        "T0_LLM_API_KEY": "sk-not-a-setting",
    }
    cfg = load_config(
        path, environ=env, overrides={"llm": {"roles": {"teacher": {"temperature": 0.3}}}}
    )
    teacher = cfg.llm.roles["teacher"]
    # env, run config, default
    assert (teacher.max_tokens, teacher.temperature, teacher.timeout_s) == (
        200,
        0.3,
        600.0,
    )
    # lists replace whole
    assert cfg.queries.n_eval == 10 and cfg.queries.dispositions == [
        "A&E",
        "Self-care",
    ]
    assert cfg.queries.n_train == 2000


def test_evaluation_entries_merge_into_the_size_entries_and_null_removes_a_default(tmp_path):
    path = write(
        tmp_path,
        "evaluation:\n  models:\n    t0-7b: {api_base: http://node:9000/v1}\n    gpt-4o: null\n"
        "    mine: {model: openai/mine}\n",
    )
    cfg = load_config(path, environ={})
    student = cfg.evaluation.models["t0-7b"]
    assert student.api_base == "http://node:9000/v1"
    assert (student.backend, student.student, student.base, student.budget is not None) == (
        "completions",
        "7B",
        "qwen2.5-7b",
        True,
    )
    # an address given and no serve section: it is already running there
    assert student.serve is None
    # the untouched sizes are still served by the pipeline
    assert cfg.evaluation.models["t0-3b"].serve is not None
    assert "gpt-4o" not in cfg.evaluation.models and "retrieval-baseline" in cfg.evaluation.models
    # a new name starts from the class defaults
    assert cfg.evaluation.models["mine"].backend == "chat"
    assert list(cfg.evaluation.models)[:3] == ["retrieval-baseline", "qwen2.5-1.5b", "t0-1.5b"]


def test_mistakes_name_their_layer_and_the_setting(tmp_path):
    with pytest.raises(
        T0Error,
        match=r"environment variable T0_LLM__ROLES__TEACHER__MAX_TOKENS: field "
        r"'llm.roles.teacher.max_tokens'",
    ):
        load_config(None, environ={"T0_LLM__ROLES__TEACHER__MAX_TOKENS": "lots"})
    with pytest.raises(
        T0Error, match=r"T0_CHUNK__SISE: unknown setting 'chunk.sise'; did you mean 'chunk.size'\?"
    ):
        load_config(None, environ={"T0_CHUNK__SISE": "3"})
    with pytest.raises(
        T0Error, match=r"config file .*t0.yaml: unknown setting 'llm.roles.agent.temprature'"
    ):
        load_config(write(tmp_path, "llm:\n  roles:\n    agent: {temprature: 0.1}\n"), environ={})
    with pytest.raises(T0Error, match=r"run config overrides: field 'chunk.overlap'"):
        load_config(None, environ={}, overrides={"chunk": {"overlap": -1}})
    with pytest.raises(T0Error, match=r"must hold a mapping of sections"):
        load_config(write(tmp_path, "- just\n- a list\n", "list.yaml"), environ={})


def readme_configs() -> list[str]:
    return [
        block
        for block in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
        if "t0.yaml" in block
    ]


def test_the_readmes_example_config_loads_and_t0_serve_starts_with_it(tmp_path, built):
    _, paths = built
    examples = readme_configs()
    assert examples
    for text in examples:
        cfg = load_config(write(tmp_path, text), environ={})
        data = yaml.safe_load(text)
        for role, fields in data.get("llm", {}).get("roles", {}).items():
            assert cfg.llm.roles[role].model_dump(include=set(fields)) == fields
        # what `t0 serve` needs is still configured
        assert {"agent", "reasoner"} <= set(cfg.llm.roles)
    from t0_pipeline_tests.serving import free_port

    port = free_port()
    command = [sys.executable, "-m", "t0_pipeline.cli", "serve", "--data-dir", str(paths.root)]
    command += ["--config", str(tmp_path / "t0.yaml"), "--port", str(port), "--insecure-local"]
    # the default profile serves the 7B student, which nobody trained here: one line, what to do
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert (
        done.returncode == 2 and "materialise student_checkpoint[7B]" in done.stdout + done.stderr
    )
    # the roles the README's config points at running servers
    running = [
        "--set",
        "serve.profiles.t0.agent=agent",
        "--set",
        "serve.profiles.t0.reasoner=reasoner",
    ]
    proc = subprocess.Popen(
        command + running, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline, answered = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answered = httpx.get(f"http://127.0.0.1:{port}/api/config", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert answered is not None and answered.status_code == 200, (
            proc.stdout.read() if proc.poll() is not None else ""
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_null_drops_a_default_size_and_its_evaluation_entries_but_sets_none_elsewhere(tmp_path):
    path = write(
        tmp_path,
        "train:\n  sizes: {0.5B: Qwen/Qwen2.5-0.5B-Instruct, 32B: null}\nllm:\n  roles:\n    "
        "agent: {api_base: null}\n",
    )
    cfg = load_config(path, environ={})
    assert list(cfg.train.sizes) == ["1.5B", "3B", "7B", "14B", "0.5B"]
    assert "t0-32b" not in cfg.evaluation.models and "qwen2.5-0.5b" in cfg.evaluation.models
    assert (
        cfg.llm.roles["agent"].api_base is None
        and cfg.llm.roles["agent"].model == PipelineConfig().llm.roles["agent"].model
    )


def test_training_takes_the_block_the_sft_data_was_built_for_unless_it_sets_its_own():
    """One block setting: sft.block_size decides what the SFT data keeps, and training follows it;
    train.block_size only where a user wants training to differ."""
    from t0_pipeline.config import load_config
    from t0_pipeline.config.models import DEFAULT_BLOCK_SIZE, TrainConfig

    assert load_config().train.block_size == load_config().sft.block_size == DEFAULT_BLOCK_SIZE
    assert load_config(overrides={"sft": {"block_size": 4096}}).train.block_size == 4096
    both = load_config(overrides={"sft": {"block_size": 4096}, "train": {"block_size": 2048}})
    assert (both.sft.block_size, both.train.block_size) == (4096, 2048)
    assert TrainConfig().block == DEFAULT_BLOCK_SIZE and TrainConfig(block_size=512).block == 512


def test_the_team_environment_file_sets_the_shared_engines_and_the_dagster_instance_reads_it():
    """deploy/t0.env.example (what every service of a team deployment reads) resolves to a
    PostgreSQL conversation store and a Chroma server, and names every variable
    deploy/dagster.yaml takes from the environment."""
    deploy = README.parent / "deploy"
    environ = dict(
        line.split("=", 1)
        for line in (deploy / "t0.env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    cfg = load_config(None, environ=environ)
    assert cfg.serve.database_url.startswith("postgresql://")
    assert (cfg.chroma.host, cfg.chroma.port) == ("127.0.0.1", 8001)
    # workers reach shared model servers: none starts a model of its own
    from t0_pipeline.serve.models import profile_roles

    roles = profile_roles(cfg)
    assert roles == ["agent", "reasoner"] and all(cfg.llm.roles[r].serve is None for r in roles)
    assert cfg.serve.profiles["t0"].student == "7B"  # still asked as the 7B student was trained
    wanted = set(re.findall(r"\{env: (\w+)\}", (deploy / "dagster.yaml").read_text()))
    assert wanted and wanted <= set(environ), wanted - set(environ)
