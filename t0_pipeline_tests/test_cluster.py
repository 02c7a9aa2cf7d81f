"""Site profiles and the sbatch scripts rendered from them (golden files), plus their errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from t0_pipeline.artifacts import T0Error
from t0_pipeline.cluster import load_profile, profile_names, render_sbatch

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("site, size", [("baskerville", "7B"), ("isambard-ai", "32B")])
def test_sbatch_matches_the_golden_file_and_is_valid_bash(site, size, tmp_path):
    text = render_sbatch(load_profile(site), size, config_file="/shared/t0/t0.yaml", data_dir="/shared/t0/data",
                         log_dir=f"/shared/t0/data/students/{size}/logs", model=f"Qwen/Qwen2.5-{size}-Instruct")
    assert text == (GOLDEN / f"{site}_{size}.sbatch").read_text()
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    for hyperparameter in ("learning", "epochs", "lr", "warmup", "block"):
        assert hyperparameter not in text.split("set -euo pipefail")[1]  # they live in the config file


def test_every_shipped_profile_covers_the_default_sizes():
    from t0_pipeline.config import TrainConfig

    assert profile_names() == ["baskerville", "isambard-ai"]
    for site in profile_names():
        profile = load_profile(site)
        assert set(TrainConfig().sizes) <= set(profile.sizes)
        for size in profile.sizes:
            text = render_sbatch(profile, size, config_file=None, data_dir="/d", log_dir="/d/logs")
            assert f"--partition {size}" in text and "--config" not in text


def test_a_container_wraps_the_launcher(tmp_path):
    profile = load_profile("isambard-ai").model_copy(update={"container": "/images/t0.sif"})
    text = render_sbatch(profile, "7B", config_file=None, data_dir="/d", log_dir="/d/logs")
    assert "srun --kill-on-bad-exit=1 apptainer exec --nv /images/t0.sif torchrun" in text


def test_profile_errors_are_one_clear_line(tmp_path):
    with pytest.raises(T0Error, match=r"unknown site profile 'nowhere'; known: baskerville, isambard-ai"):
        load_profile("nowhere")
    with pytest.raises(T0Error, match="has no allocation for size '70B'"):
        render_sbatch(load_profile("baskerville"), "70B", config_file=None, data_dir="/d", log_dir="/d")
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump({"name": "broken", "sizes": {"7B": {"nodes": 0, "gpus_per_node": 4, "hours": 1}}}))
    with pytest.raises(T0Error, match=r"field 'sizes.7B.nodes'"):
        load_profile("broken", tmp_path)
    (tmp_path / "greedy.yaml").write_text(yaml.safe_dump({"name": "greedy", "gpus_per_node": 4,
                                                          "sizes": {"7B": {"nodes": 1, "gpus_per_node": 8, "hours": 1}}}))
    with pytest.raises(T0Error, match="asks for 8 GPUs per node but nodes have 4"):
        render_sbatch(load_profile("greedy", tmp_path), "7B", config_file=None, data_dir="/d", log_dir="/d")
