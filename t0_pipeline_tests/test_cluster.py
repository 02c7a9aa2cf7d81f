"""Site profiles and the sbatch scripts rendered from them (golden files), plus their errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from t0_pipeline.artifacts import T0Error
from t0_pipeline.training.cluster import job_spec, load_profile, profile_names, render_sbatch

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("site, size", [("baskerville", "7B"), ("isambard-ai", "32B")])
def test_sbatch_matches_the_golden_file_and_is_valid_bash(site, size, tmp_path):
    text = render_sbatch(
        load_profile(site),
        size,
        config_file="/shared/t0/t0.yaml",
        data_dir="/shared/t0/data",
        log_dir=f"/shared/t0/data/students/{size}/logs",
        model=f"Qwen/Qwen2.5-{size}-Instruct",
        account="proj123",
    )
    assert text == (GOLDEN / f"{site}_{size}.sbatch").read_text()
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    for hyperparameter in ("learning", "epochs", "lr", "warmup", "block"):
        # they live in the config file
        assert hyperparameter not in text.split("set -euo pipefail")[1]


def test_every_shipped_profile_covers_the_default_sizes():
    from t0_pipeline.config import TrainConfig

    assert profile_names() == ["baskerville", "isambard-ai"]
    for site in profile_names():
        profile = load_profile(site)
        assert set(TrainConfig().sizes) <= set(profile.sizes)
        for size in profile.sizes:
            text = render_sbatch(
                profile, size, config_file=None, data_dir="/d", log_dir="/d/logs", account="p"
            )
            job = job_spec(profile, size, account="p")
            assert f"--partition {size}" in text and "--config" not in text
            assert job.cpus_per_task <= profile.cpus_per_node  # a node can run it
            assert (
                f"--nproc-per-node={job.gpus_per_node}" in text
                and f"--gres=gpu:{job.gpus_per_node}" in text
            )
            # ZeRO-3 whenever more than one GPU trains all weights
            assert "--deepspeed auto" in text


def test_a_container_wraps_the_launcher(tmp_path):
    profile = load_profile("isambard-ai").model_copy(update={"container": "/images/t0.sif"})
    text = render_sbatch(
        profile, "7B", config_file=None, data_dir="/d", log_dir="/d/logs", account="p"
    )
    assert "srun --kill-on-bad-exit=1 apptainer exec --nv /images/t0.sif torchrun" in text


def test_profile_errors_are_one_clear_line(tmp_path):
    with pytest.raises(
        T0Error, match=r"unknown site profile 'nowhere'; known: baskerville, isambard-ai"
    ):
        load_profile("nowhere")
    with pytest.raises(T0Error, match="has no allocation for size '70B'"):
        render_sbatch(
            load_profile("baskerville"),
            "70B",
            config_file=None,
            data_dir="/d",
            log_dir="/d",
            account="p",
        )
    with pytest.raises(
        T0Error, match="charges every job to a project but no account is set; pass --account"
    ):
        render_sbatch(
            load_profile("baskerville"), "7B", config_file=None, data_dir="/d", log_dir="/d"
        )
    (tmp_path / "broken.yaml").write_text(
        yaml.safe_dump(
            {"name": "broken", "sizes": {"7B": {"nodes": 0, "gpus_per_node": 4, "hours": 1}}}
        )
    )
    with pytest.raises(T0Error, match=r"field 'sizes.7B.nodes'"):
        load_profile("broken", tmp_path)
    (tmp_path / "greedy.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "greedy",
                "gpus_per_node": 4,
                "sizes": {"7B": {"nodes": 1, "gpus_per_node": 8, "hours": 1}},
            }
        )
    )
    with pytest.raises(T0Error, match="asks for 8 GPUs per node but nodes have 4"):
        render_sbatch(
            load_profile("greedy", tmp_path), "7B", config_file=None, data_dir="/d", log_dir="/d"
        )
    (tmp_path / "crowded.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "crowded",
                "gpus_per_node": 4,
                "cpus_per_node": 72,
                "cpus_per_rank": 36,
                "sizes": {"7B": {"nodes": 1, "gpus_per_node": 4, "hours": 1}},
            }
        )
    )
    with pytest.raises(T0Error, match=r"needs 4 ranks × 36 cores = 144 per node but nodes have 72"):
        job_spec(load_profile("crowded", tmp_path), "7B")


def test_dagster_submits_the_script_t0_sbatch_prints(tmp_path):
    """One way to build a job, two ways to submit it: TrainingCompute's script, the launcher's
    payload, the CLI's."""
    from typer.testing import CliRunner

    from t0_pipeline.cli import app
    from t0_pipeline.defs.launcher import TrainingJobLauncher
    from t0_pipeline.defs.resources import TrainingCompute

    config = tmp_path / "t0.yaml"
    config.write_text("train:\n  sizes: {7B: my-org/my-7b}\n")
    data = tmp_path / "data"
    compute = TrainingCompute(mode="slurm", site="baskerville", account="proj123", qos="bham")
    _, job, script = compute.job_script(
        size="7B", model="my-org/my-7b", config_file=str(config), data_dir=str(data)
    )
    printed = CliRunner().invoke(
        app,
        [
            "sbatch",
            "--site",
            "baskerville",
            "--size",
            "7B",
            "--account",
            "proj123",
            "--qos",
            "bham",
            "--config",
            str(config),
            "--data-dir",
            str(data),
        ],
    )
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == script and job.world_size == 4
    assert "# memory plan: none (cannot read config.json of 'my-org/my-7b'" in script
    plan = TrainingJobLauncher(script=script).prepare_execution(
        payload_path="/remote/job/train-7B.sbatch",
        python_executable="/shared/env/bin/python",
        working_dir="/remote/job",
        pipes_context={"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msgs"},
    )
    assert "\n".join(plan.payload) == script  # submitted unchanged
    env = plan.auxiliary_scripts["t0-job.env"]
    assert "DAGSTER_PIPES_CONTEXT=ctx" in env and "T0_VENV=/shared/env" in env
    assert "source ./t0-job.env" in script  # ...which the script reads, so every rank sees it
