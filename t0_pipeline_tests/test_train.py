"""Student training on CPU with a tiny random-initialised Qwen2 model built from a config."""

from __future__ import annotations

import json

import polars as pl
import pytest

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import SFTConfig, TrainConfig
from t0_pipeline.sft import build_sft
from t0_pipeline.train import IGNORE, tokenize_example, train
from t0_pipeline_tests.conftest import build_tiny_tokenizer

WORDS = ("system user assistant think answer Stroke Gout Migraine A&E Self-care Urgent Primary Care ( ) , . : [ ] 1 2 "
         "Call 999 Lie down Rest face dropped toe hot red Face droop is FAST Big toe About me age 70 score -0.500 -0.900 "
         "Documents You are a clinical triage assistant")


def trace(i: int, condition: str, severity: str, query: str, thinking: str) -> dict:
    return {"id": f"t{i}", "query": query, "demographics": '{"age": 70}', "retrieved_titles": ["Stroke", "Gout"],
            "retrieved_texts": ["Call 999 .", "Rest ."], "scores": [-0.5, -0.9], "retrieved_slugs": ["stroke", "gout"],
            "thinking": thinking, "answer": f"( {condition} , {severity} )", "kept": True, "model": "m", "prompt_hash": "p"}


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A 2-layer Qwen2 model + tokenizer saved to a folder, and an SFT dataset made by the real sft stage."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    root = tmp_path_factory.mktemp("student")
    tok = build_tiny_tokenizer(root / "base", WORDS)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "base")
    traces = [trace(i, "Stroke", "A&E", "face dropped", "Face droop is FAST .") if i % 2 else
              trace(i, "Gout", "Urgent Primary Care", "Big toe hot red", "Big toe is hot .") for i in range(12)]
    df, _ = build_sft(pl.DataFrame(traces), SFTConfig(tokenizer="tiny"), tok)
    df.write_parquet(root / "sft.parquet")
    return root, tok


def small(**kw) -> TrainConfig:
    base = dict(epochs=1, max_steps=8, learning_rate=3e-3, warmup_ratio=0.0, eval_fraction=0.25, eval_steps=4,
                save_steps=4, block_size=512, gradient_checkpointing=False, logging_steps=1)
    return TrainConfig(**{**base, **kw})


def test_only_the_assistant_turn_is_learned(student):
    root, tok = student
    messages = json.loads(pl.read_parquet(root / "sft.parquet")["messages"][0])
    example = tokenize_example(messages, tok, block_size=512)
    learned = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE]
    assert learned == [label for label in example["labels"] if label != IGNORE]
    text = tok.decode(learned)
    assert text == tok.decode(tok(messages[-1]["content"] + "<|im_end|>\n", add_special_tokens=False)["input_ids"])
    assert text.startswith("<|im_start|> think") and "answer" in text
    masked = tok.decode([t for t, label in zip(example["input_ids"], example["labels"]) if label == IGNORE])
    assert "<|im_start|> system" in masked and "<|im_start|> user About" in masked and "Big toe hot red" in masked
    assert masked.endswith("<|im_start|> assistant") and "think" not in masked
    assert example["labels"][: len(example["labels"]) - len(learned)] == [IGNORE] * (len(example["labels"]) - len(learned))


def test_training_lowers_the_loss_changes_weights_and_saves_a_loadable_model(student, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    root, _ = student
    before = AutoModelForCausalLM.from_pretrained(root / "base").state_dict()
    result = train(small(model=str(root / "base"), gradient_checkpointing=True), root / "sft.parquet", tmp_path / "out")
    losses = [loss for _, loss in result.train_loss]
    assert result.global_step == 8 and result.train_examples == 9 and result.eval_examples == 3
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # it learned
    assert [step for step, _ in result.eval_loss] == [4, 8]  # held-out split evaluated every eval_steps
    after = AutoModelForCausalLM.from_pretrained(result.final_dir).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (result.final_dir / "README.md").read_text().startswith("# Student model fine-tuned from")
    assert (result.final_dir / "tokenizer_config.json").exists()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["global_step"] == 8 and len(metrics["eval_loss"]) == 2


def test_a_preempted_run_resumes_from_its_last_checkpoint(student, tmp_path):
    root, _ = student
    first = train(small(model=str(root / "base"), max_steps=4), root / "sft.parquet", tmp_path / "out")
    assert first.global_step == 4 and first.resumed_from is None
    second = train(small(model=str(root / "base"), max_steps=8), root / "sft.parquet", tmp_path / "out")
    assert second.resumed_from.endswith("checkpoint-4") and second.global_step == 8
    assert min(step for step, _ in second.train_loss) == 1  # the log history came back with the checkpoint


def test_lora_trains_adapters_only(student, tmp_path):
    root, _ = student
    cfg = small(model=str(root / "base"), max_steps=2, eval_fraction=0.0, lora={"enabled": True, "r": 4, "alpha": 8})
    result = train(cfg, root / "sft.parquet", tmp_path / "out")
    assert (result.final_dir / "adapter_config.json").exists() and result.global_step == 2


def test_bad_inputs_are_one_clear_error_and_keep_the_previous_model(student, tmp_path):
    root, _ = student
    with pytest.raises(T0Error, match="could not load model"):
        train(small(model=str(tmp_path / "nope")), root / "sft.parquet", tmp_path / "out")
    with pytest.raises(T0Error, match=r"no trainable tokens .* block_size=8"):
        train(small(model=str(root / "base"), block_size=8), root / "sft.parquet", tmp_path / "out")
    with pytest.raises(T0Error, match="SFT dataset .* not found"):
        train(small(model=str(root / "base")), tmp_path / "missing.parquet", tmp_path / "out")
    with pytest.raises(T0Error, match="DeepSpeed config"):
        train(small(model=str(root / "base"), deepspeed=tmp_path / "ds.json"), root / "sft.parquet", tmp_path / "out")
    assert not (tmp_path / "out" / "final").exists()


SMALL_JOB = {"max_steps": 6, "learning_rate": 3e-3, "warmup_ratio": 0.0, "eval_fraction": 0.25, "eval_steps": 3,
             "save_steps": 3, "block_size": 512, "gradient_checkpointing": False}


def job_workspace(tmp_path, root):
    """A data dir holding the SFT dataset, and a config training the tiny model for 6 steps as size "tiny"."""
    import shutil

    import yaml

    data = tmp_path / "data"
    (data / "synthetic" / "sft").mkdir(parents=True)
    shutil.copy(root / "sft.parquet", data / "synthetic" / "sft" / "train.parquet")
    config = tmp_path / "t0.yaml"
    config.write_text(yaml.safe_dump({"train": {"sizes": {"tiny": str(root / "base")}, **SMALL_JOB}}))
    return data, config


def cpu_profile(tmp_path, **fields):
    """A site-profile folder with one CPU-only profile, "ci-cpu", offering size "tiny"."""
    import yaml

    profiles = tmp_path / "profiles"
    profiles.mkdir(exist_ok=True)
    (profiles / "ci-cpu.yaml").write_text(yaml.safe_dump({
        "name": "ci-cpu", "gpus_per_node": 0, "cpus_per_gpu": 1,
        "sizes": {"tiny": {"nodes": 1, "gpus_per_node": 0, "hours": 1, "mem": "2G"}}, **fields}))
    return profiles


def test_student_checkpoint_partition_trains_through_dagster_pipes(student, tmp_path):

    import dagster as dg

    from t0_pipeline.defs.resources import PipelineSettings, TrainingCompute
    from t0_pipeline.defs.training import build_student_checkpoint

    root, _ = student
    data, config = job_workspace(tmp_path, root)
    asset = build_student_checkpoint(dg.StaticPartitionsDefinition(["tiny"]))
    result = dg.materialize([asset], partition_key="tiny", resources={
        "settings": PipelineSettings(data_dir=str(data), config_file=str(config)),
        "training_compute": TrainingCompute(mode="local")})
    assert result.success
    meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert meta["checkpoint"].value == str(data / "students" / "tiny" / "final")  # partition key in the path
    assert meta["global_step"].value == 6 and meta["base_model"].value == str(root / "base")
    assert meta["final_train_loss"].value < meta["first_train_loss"].value
    assert len(json.loads(meta["eval_losses"].value)) == 2
    resolved = meta["resolved_config"].value
    resolved = json.loads(resolved) if isinstance(resolved, str) else resolved
    assert resolved["max_steps"] == 6 and resolved["model"] == str(root / "base")
    assert (data / "students" / "tiny" / "final" / "model.safetensors").exists()


def _slurm_up() -> bool:
    import shutil
    import subprocess

    return shutil.which("sbatch") is not None and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_the_rendered_job_trains_a_student_under_a_real_slurm_cluster(student, tmp_path):
    """.ci/run starts a one-node Slurm cluster (.ci/slurm-up.sh); the job script comes from a site profile."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    import t0_pipeline
    from t0_pipeline.cluster import load_profile, render_sbatch

    if not _slurm_up():
        if os.environ.get("CI"):
            pytest.fail("CI should have started a Slurm cluster (.ci/slurm-up.sh) but sinfo does not answer")
        pytest.skip("no Slurm cluster here; start one with `sudo bash .ci/slurm-up.sh`")
    root, _ = student
    data, config = job_workspace(tmp_path, root)
    profiles = cpu_profile(tmp_path, setup=[f'export PATH="{Path(sys.executable).parent}:$PATH"'])
    logs = data / "students" / "tiny" / "logs"
    logs.mkdir(parents=True)
    script = tmp_path / "train-tiny.sbatch"
    script.write_text(render_sbatch(load_profile("ci-cpu", profiles), "tiny", config_file=str(config), data_dir=str(data),
                                    log_dir=str(logs), model=str(root / "base"), deepspeed=None))
    repo = Path(t0_pipeline.__file__).resolve().parents[1]
    job = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=True,
                         cwd=repo).stdout.strip().split(";")[0]
    state, deadline = "PENDING", time.time() + 300
    while time.time() < deadline:  # no accounting database here: scontrol remembers finished jobs, squeue does not
        out = subprocess.run(["scontrol", "show", "job", job, "-o"], capture_output=True, text=True).stdout
        state = next((f.split("=", 1)[1] for f in out.split() if f.startswith("JobState=")), state)
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            break
        time.sleep(1)
    log = logs / f"t0-train-tiny-{job}.out"
    assert state == "COMPLETED", log.read_text()[-3000:] if log.exists() else state
    metrics = json.loads((data / "students" / "tiny" / "metrics.json").read_text())
    assert metrics["global_step"] == 6
    losses = [loss for _, loss in metrics["train_loss"]]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2
    assert AutoModelForCausalLM.from_pretrained(data / "students" / "tiny" / "final") is not None


@pytest.mark.slow
def test_student_checkpoint_partition_trains_through_dagster_slurm_over_ssh(student, tmp_path):
    """student_checkpoint → dagster-slurm → SSH → sbatch on the one-node cluster that .ci/run starts."""
    import os
    import sys
    from pathlib import Path

    import dagster as dg
    import torch
    from transformers import AutoModelForCausalLM

    from t0_pipeline.cluster import prepare_env_dir
    from t0_pipeline.defs.resources import PipelineSettings, TrainingCompute
    from t0_pipeline.defs.training import build_student_checkpoint

    key = Path(os.environ.get("T0_CI_SSH_KEY", "/root/.ssh/t0_ci"))
    if not (_slurm_up() and key.exists()):
        if os.environ.get("CI"):
            pytest.fail("CI should have started Slurm and sshd with a key (.ci/slurm-up.sh)")
        pytest.skip("no Slurm cluster reachable over SSH here; run `sudo bash .ci/slurm-up.sh`")
    root, _ = student
    data, config = job_workspace(tmp_path, root)
    profiles = cpu_profile(tmp_path, partition="debug")
    env = prepare_env_dir(tmp_path / "deployed", Path(sys.prefix))
    compute = TrainingCompute(mode="slurm", site="ci-cpu", profiles_dir=str(profiles), ssh_host="localhost",
                              ssh_user="root", ssh_key_path=str(key), env_path=str(env),
                              remote_base=str(tmp_path / "remote"))
    before = AutoModelForCausalLM.from_pretrained(root / "base").state_dict()
    result = dg.materialize([build_student_checkpoint(dg.StaticPartitionsDefinition(["tiny"]))], partition_key="tiny",
                            resources={"settings": PipelineSettings(data_dir=str(data), config_file=str(config)),
                                       "training_compute": compute})
    assert result.success
    meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert int(meta["slurm_job_id"].value) > 0  # it ran under Slurm
    assert meta["global_step"].value == 6 and meta["final_train_loss"].value < meta["first_train_loss"].value
    final = AutoModelForCausalLM.from_pretrained(data / "students" / "tiny" / "final").state_dict()
    assert any(not torch.equal(before[k], final[k]) for k in before)

    # a cluster that rejects the job: one clear error, and the checkpoint just made stays
    cpu_profile(tmp_path, partition="no-such-partition")
    rejected = dg.materialize([build_student_checkpoint(dg.StaticPartitionsDefinition(["tiny"]))], partition_key="tiny",
                              resources={"settings": PipelineSettings(data_dir=str(data), config_file=str(config)),
                                         "training_compute": compute}, raise_on_error=False)
    assert not rejected.success
    failure = next(e for e in rejected.all_events if e.event_type_value == "STEP_FAILURE")
    messages, err = [], failure.event_specific_data.error
    while err is not None:  # dagster wraps the T0Error: walk the cause chain
        messages.append(err.message)
        err = err.cause
    assert any("the Slurm job for tiny did not complete: sbatch: error: invalid partition" in m for m in messages)
    assert (data / "students" / "tiny" / "final" / "model.safetensors").exists()
