"""Student training on CPU with a tiny random-initialised Qwen2 model built from a config."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import polars as pl
import pytest

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import SFTConfig, TrainConfig
from t0_pipeline.synthetic.sft import build_sft
from t0_pipeline.training.data import IGNORE, tokenize_example
from t0_pipeline.training.train import train
from t0_pipeline_tests.conftest import build_tiny_tokenizer

WORDS = (
    "system user assistant think answer Stroke Gout Migraine A&E Self-care Urgent Primary Care ( "
    ") , . : [ ] 1 2 Call 999 Lie down Rest face dropped toe hot red Face droop is FAST Big toe "
    "About me age 70 score -0.500 -0.900 Documents You are a clinical triage assistant"
)


def trace(i: int, condition: str, severity: str, query: str, thinking: str) -> dict:
    return {
        "id": f"t{i}",
        "query": query,
        "demographics": '{"age": 70}',
        "retrieved_titles": ["Stroke", "Gout"],
        "retrieved_texts": ["Call 999 .", "Rest ."],
        "scores": [-0.5, -0.9],
        "retrieved_slugs": ["stroke", "gout"],
        "thinking": thinking,
        "answer": f"( {condition} , {severity} )",
        "kept": True,
        "model": "m",
        "prompt_hash": "p",
    }


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A 2-layer Qwen2 model + tokenizer saved to a folder, and an SFT dataset made by the real sft
    stage."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    root = tmp_path_factory.mktemp("student")
    tok = build_tiny_tokenizer(root / "base", WORDS)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "base")
    traces = [
        trace(i, "Stroke", "A&E", "face dropped", "Face droop is FAST .")
        if i % 2
        else trace(i, "Gout", "Urgent Primary Care", "Big toe hot red", "Big toe is hot .")
        for i in range(12)
    ]
    df, _ = build_sft(pl.DataFrame(traces), SFTConfig(tokenizer="tiny"), tok)
    df.write_parquet(root / "sft.parquet")
    return root, tok


def small(**kw) -> TrainConfig:
    base = dict(
        epochs=1,
        max_steps=8,
        learning_rate=3e-3,
        warmup_ratio=0.0,
        eval_fraction=0.25,
        eval_steps=4,
        save_steps=4,
        block_size=512,
        gradient_checkpointing=False,
        logging_steps=1,
    )
    return TrainConfig(**{**base, **kw})


def test_only_the_assistant_turn_is_learned(student):
    root, tok = student
    messages = json.loads(pl.read_parquet(root / "sft.parquet")["messages"][0])
    example = tokenize_example(messages, tok, block_size=512)
    learned = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE]
    assert learned == [label for label in example["labels"] if label != IGNORE]
    text = tok.decode(learned)
    assert text == tok.decode(
        tok(messages[-1]["content"] + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
    )
    assert text.startswith("<|im_start|> think") and "answer" in text
    masked = tok.decode(
        [t for t, label in zip(example["input_ids"], example["labels"]) if label == IGNORE]
    )
    assert (
        "<|im_start|> system" in masked
        and "<|im_start|> user About" in masked
        and "Big toe hot red" in masked
    )
    assert masked.endswith("<|im_start|> assistant") and "think" not in masked
    assert example["labels"][: len(example["labels"]) - len(learned)] == [IGNORE] * (
        len(example["labels"]) - len(learned)
    )


def test_training_lowers_the_loss_changes_weights_and_saves_a_loadable_model(student, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    root, _ = student
    before = AutoModelForCausalLM.from_pretrained(root / "base").state_dict()
    result = train(
        small(model=str(root / "base"), gradient_checkpointing=True),
        root / "sft.parquet",
        tmp_path / "out",
    )
    losses = [loss for _, loss in result.train_loss]
    assert result.global_step == 8 and result.train_examples == 9 and result.eval_examples == 3
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # it learned
    # held-out split evaluated every eval_steps
    assert [step for step, _ in result.eval_loss] == [
        4,
        8,
    ]
    after = AutoModelForCausalLM.from_pretrained(result.final_dir).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (result.final_dir / "tokenizer_config.json").exists()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["global_step"] == 8 and len(metrics["eval_loss"]) == 2


def test_final_holds_a_model_card_generation_settings_the_loss_curve_and_tracker_files(
    student, tmp_path
):
    from transformers import GenerationConfig

    from t0_pipeline.cards import read_front_matter
    from t0_pipeline.weights import weights_digest
    from t0_pipeline_tests.tracker_files import logged_scalars

    root, tok = student
    result = train(small(model=str(root / "base")), root / "sft.parquet", tmp_path / "out")
    card = (result.final_dir / "README.md").read_text()
    head = read_front_matter(card)
    # named by the folder's name, never by a path of this machine
    assert head["base_model"] == "base" and head["library_name"] == "transformers"
    assert str(tmp_path) not in card and str(root) not in card
    assert f"`{weights_digest(result.final_dir)}`" in card
    assert "Not evaluated yet" in card and "| steps | 8" in card
    # the budget it is asked with travels with it; generation ends at the turn end
    generation = GenerationConfig.from_pretrained(result.final_dir)
    budget = generation.t0_budget_forcing
    assert budget["thinking_budget"] == 1024 and budget["think_end"] == "<|im_start|>answer"
    assert tok.convert_tokens_to_ids("<|im_end|>") in generation.eos_token_id
    assert generation.max_new_tokens > 1024 + 256
    # loss.png beside metrics.json (and in final/ for the card): a real PNG
    for plot in (tmp_path / "out" / "loss.png", result.final_dir / "loss.png"):
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the default tracker: TensorBoard files under the run's folder, the loss at every step
    runs = list((tmp_path / "out" / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("t0-student-")
    scalars = logged_scalars(runs[0])
    assert sorted(scalars["train/loss"]) == list(range(1, 9))
    assert sorted(scalars["eval/loss"]) == [4, 8]
    # the run's parameters are logged there; the saved config holds none of them
    assert "t0.train.learning_rate" in scalars["texts"]
    assert "t0." not in (result.final_dir / "config.json").read_text()


def test_a_named_tracker_that_is_not_installed_is_one_error_before_anything_loads(
    student, tmp_path
):
    import importlib.util

    from t0_pipeline.trackers import TRACKERS

    root, _ = student
    missing = next(
        n for n in ("wandb", "mlflow", "trackio", "swanlab") if not importlib.util.find_spec(n)
    )
    with pytest.raises(T0Error) as caught:
        train(small(model=str(root / "base"), report_to=missing), root / "sft.parquet", tmp_path)
    said = str(caught.value)
    assert f"train.report_to names {missing}" in said and TRACKERS[missing][1] in said
    assert "\n" not in said and not (tmp_path / "checkpoints").exists()
    with pytest.raises(ValueError, match="unknown tracker.*tensorbord"):
        TrainConfig(report_to="tensorbord")
    assert TrainConfig(report_to="none").report_to == []


def stop_at(step: int, stop_file: Path):
    """A callback that asks for a stop (the Slurm script's stop file) once ``step`` is done."""
    from transformers import TrainerCallback

    class Preempt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= step:
                stop_file.touch()

    return Preempt()


def test_a_preempted_run_resumes_from_its_last_checkpoint(student, tmp_path, monkeypatch):
    root, _ = student
    stop_file = tmp_path / "stop"
    monkeypatch.setenv("T0_STOP_FILE", str(stop_file))
    config = small(model=str(root / "base"), max_steps=8)
    # asked to stop after step 3: checkpoints at the next step
    first = train(config, root / "sft.parquet", tmp_path / "out", [stop_at(3, stop_file)])
    assert first.preempted and first.global_step == 4 and first.resumed_from is None
    stop_file.unlink()
    second = train(config, root / "sft.parquet", tmp_path / "out")  # the requeued job
    assert second.resumed_from.endswith("checkpoint-4") and second.global_step == 8
    # the log history came back with the checkpoint
    assert min(step for step, _ in second.train_loss) == 1


KILLED_MID_SAVE = """
import os, signal, sys
from pathlib import Path
from transformers import Trainer
from t0_pipeline.config import TrainConfig
from t0_pipeline.training.train import train

plain = Trainer._save_rng_state

def killed(self, output_dir):  # weights and optimizer written, the trainer state not yet
    if self.state.global_step == 8:
        os.kill(os.getpid(), signal.SIGKILL)
    return plain(self, output_dir)

Trainer._save_rng_state = killed
config = TrainConfig.model_validate_json(sys.argv[1])
train(config, Path(sys.argv[2]), Path(sys.argv[3]))
"""


def test_a_run_killed_while_writing_a_checkpoint_resumes_from_the_last_whole_one(
    student, tmp_path, caplog
):
    import subprocess
    import sys

    root, _ = student
    config = small(model=str(root / "base"), max_steps=12, save_steps=4, save_total_limit=3)
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_SAVE, config.model_dump_json(), str(root / "sft.parquet")]
        + [str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    (run,) = (out / "checkpoints").iterdir()
    half = run / "checkpoint-8"
    assert half.is_dir() and not (half / "trainer_state.json").exists()
    assert not (out / "final").exists()
    with caplog.at_level("WARNING", logger="t0_pipeline.training.runs"):
        again = train(config, root / "sft.parquet", out)  # the requeued job
    assert again.resumed_from == str(run / "checkpoint-4") and again.global_step == 12
    assert any("checkpoint-8 is incomplete" in r.getMessage() for r in caplog.records)
    assert (out / "final" / "model.safetensors").exists()


def test_a_finished_run_trained_again_with_other_settings_starts_afresh(student, tmp_path):
    """`t0 train --set train.learning_rate=…` on a finished run: the old checkpoints were trained
    another way, so the new settings train from the base in their own folder, and final/ and
    metrics.json describe weights trained with them (not the old ones, relabelled)."""
    import torch
    from transformers import AutoModelForCausalLM

    root, _ = student
    out = tmp_path / "out"
    first = train(small(model=str(root / "base")), root / "sft.parquet", out)
    weights = AutoModelForCausalLM.from_pretrained(first.final_dir).state_dict()
    same = train(small(model=str(root / "base")), root / "sft.parquet", out)
    assert same.resumed_from and same.resumed_from.endswith(f"checkpoint-{first.global_step}")

    faster = train(small(model=str(root / "base"), learning_rate=0.05), root / "sft.parquet", out)
    assert faster.resumed_from is None and faster.global_step == first.global_step
    retrained = AutoModelForCausalLM.from_pretrained(faster.final_dir).state_dict()
    assert any(not torch.equal(weights[k], retrained[k]) for k in weights)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["learning_rate"] == 0.05 and metrics["resumed_from"] is None
    runs = sorted((out / "checkpoints").glob("run-*"))
    assert len(runs) == 2  # the first run's checkpoints are kept, beside the new ones
    recorded = {json.loads((r / "run.json").read_text())["learning_rate"] for r in runs}
    assert recorded == {small().learning_rate, 0.05}


def test_lora_trains_adapters_and_leaves_the_base_weights_unchanged(student, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root, _ = student
    base_before = {
        k: v.clone()
        for k, v in AutoModelForCausalLM.from_pretrained(root / "base").state_dict().items()
    }
    cfg = small(
        model=str(root / "base"),
        max_steps=4,
        eval_fraction=0.0,
        lora={"enabled": True, "r": 4, "alpha": 8},
    )
    result = train(cfg, root / "sft.parquet", tmp_path / "out")
    assert (result.final_dir / "adapter_config.json").exists() and result.global_step == 4
    assert result.deepspeed is None  # auto never picks ZeRO-3 for adapters
    tuned = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(root / "base"), result.final_dir
    )
    state = tuned.state_dict()
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    # adapters start at zero: these were trained
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)
    for key, value in state.items():
        if "lora_" in key:
            continue
        original = key.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(value, base_before[original]), key  # every base weight as it was
    reloaded = AutoModelForCausalLM.from_pretrained(root / "base").state_dict()
    # and the base checkpoint untouched
    assert all(torch.equal(reloaded[k], v) for k, v in base_before.items())


def test_warm_up_is_a_ratio_of_the_steps(student, tmp_path):
    root, _ = student
    result = train(
        small(
            model=str(root / "base"),
            max_steps=8,
            warmup_ratio=0.5,
            learning_rate=1e-3,
            eval_fraction=0.0,
            save_steps=100,
        ),
        root / "sft.parquet",
        tmp_path / "out",
    )
    rates = [lr for _, lr in sorted(result.learning_rates)]
    assert rates[0] < rates[1] < rates[2] < rates[3]  # rises over the first half (4 of 8 steps)
    assert max(rates) == pytest.approx(1e-3) and rates[-1] < max(rates)  # then the cosine decay


def test_overlong_examples_are_dropped_never_cut(student):
    root, tok = student
    messages = json.loads(pl.read_parquet(root / "sft.parquet")["messages"][0])
    whole = tokenize_example(messages, tok, block_size=512)
    n = len(whole["input_ids"])
    assert tokenize_example(messages, tok, block_size=n)["input_ids"] == whole["input_ids"]
    # one token short: left out, not truncated
    assert tokenize_example(messages, tok, block_size=n - 1) is None


def test_deepspeed_auto_picks_zero3_for_several_processes_training_all_weights(tmp_path):
    from t0_pipeline.training.plan import resolve_deepspeed

    assert resolve_deepspeed(TrainConfig(), 1) is None
    assert resolve_deepspeed(TrainConfig(), 2).name == "zero3.json"
    assert resolve_deepspeed(TrainConfig(lora={"enabled": True}), 8) is None
    assert resolve_deepspeed(TrainConfig(deepspeed="none"), 8) is None
    assert resolve_deepspeed(TrainConfig(deepspeed="zero3_offload"), 1).name == "zero3_offload.json"
    with pytest.raises(
        T0Error, match="DeepSpeed config zero4 not found; use one of zero3, zero3_offload"
    ):
        resolve_deepspeed(TrainConfig(deepspeed="zero4"), 2)


def test_bad_inputs_are_one_clear_error_and_keep_the_previous_model(student, tmp_path):
    root, _ = student
    with pytest.raises(T0Error, match="could not load model"):
        train(small(model=str(tmp_path / "nope")), root / "sft.parquet", tmp_path / "out")
    with pytest.raises(T0Error, match=r"no trainable tokens .* longer than block_size=8"):
        train(small(model=str(root / "base"), block_size=8), root / "sft.parquet", tmp_path / "out")
    with pytest.raises(T0Error, match="SFT dataset .* not found"):
        train(small(model=str(root / "base")), tmp_path / "missing.parquet", tmp_path / "out")
    with pytest.raises(T0Error, match="DeepSpeed config"):
        train(
            small(model=str(root / "base"), deepspeed=str(tmp_path / "ds.json")),
            root / "sft.parquet",
            tmp_path / "out",
        )
    assert not (tmp_path / "out" / "final").exists()


def test_export_hands_on_a_folder_that_loads_alone_and_generates_with_its_chat_template(
    student, tmp_path
):
    import shutil
    import subprocess
    import sys

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from typer.testing import CliRunner

    from t0_pipeline.cards import read_front_matter
    from t0_pipeline.cli import app

    root, _ = student
    data, config = job_workspace(tmp_path, root)
    common = ["--data-dir", str(data), "--config", str(config)]
    trained = CliRunner().invoke(app, ["train", *common, "--partition", "tiny"])
    assert trained.exit_code == 0, trained.output
    handed = tmp_path / "handed" / "t0-tiny"
    done = CliRunner().invoke(app, ["export", *common, "--size", "tiny", "--to", str(handed)])
    assert done.exit_code == 0, done.output
    assert "no evaluation yet" in done.stdout and str(handed) in done.stdout
    names = {p.name for p in handed.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "generation_config.json"} <= names
    assert "loss.png" in names and "t0-weights-digest.json" not in names
    card = (handed / "README.md").read_text()
    assert read_front_matter(card)["base_model"] == "base" and "# t0-tiny (nhs-triage)" in card
    assert str(tmp_path) not in card
    # a second export into a folder that is not empty, or of a size never trained: one line each
    cases = {
        "not an empty folder": ["--size", "tiny", "--to", str(handed)],
        "no size 'huge'": ["--size", "huge", "--to", str(tmp_path / "x")],
        # exported, then the push fails: the folder stays
        "cannot reach the hub at http://127.0.0.1:9": [
            *("--size", "tiny", "--to", str(tmp_path / "pushed")),
            *("--push", "me/t0-tiny", "--hub-url", "http://127.0.0.1:9"),
        ],
    }
    for said, args in cases.items():
        failed = subprocess.run(
            [sys.executable, "-m", "t0_pipeline.cli", "export", *common, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1
        assert said in failed.stderr
    assert (handed / "README.md").read_text() == card
    assert (tmp_path / "pushed" / "README.md").read_text() == card
    shutil.rmtree(data / "students")  # the folder alone
    tokenizer = AutoTokenizer.from_pretrained(handed)
    model = AutoModelForCausalLM.from_pretrained(handed)
    messages = [{"role": "system", "content": "Documents"}, {"role": "user", "content": "Gout"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    inputs = tokenizer(prompt + "<|im_start|>think\n", return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(**inputs, do_sample=False)  # its generation_config: the budget, the end
    new = out[0][inputs["input_ids"].shape[1] :].tolist()
    assert 0 < len(new) <= model.generation_config.max_new_tokens


SMALL_JOB = {
    "max_steps": 6,
    "learning_rate": 3e-3,
    "warmup_ratio": 0.0,
    "eval_fraction": 0.25,
    "eval_steps": 3,
    "save_steps": 3,
    "block_size": 512,
    "gradient_checkpointing": False,
}


def job_workspace(tmp_path, root, **train):
    """A data dir holding the SFT dataset, and a config training the tiny model for 6 steps as size
    "tiny"."""
    import shutil

    import yaml

    data = tmp_path / "data"
    (data / "synthetic" / "sft").mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "sft.parquet", data / "synthetic" / "sft" / "train.parquet")
    config = tmp_path / "t0.yaml"
    config.write_text(
        yaml.safe_dump({"train": {"sizes": {"tiny": str(root / "base")}, **SMALL_JOB, **train}})
    )
    return data, config


def cpu_profile(tmp_path, procs: int = 1, setup: list[str] | None = None, **fields):
    """A site-profile folder with one CPU-only profile, "ci-cpu", offering size "tiny" as ``procs``
    ranks."""
    import yaml

    profiles = tmp_path / "profiles"
    profiles.mkdir(exist_ok=True)
    (profiles / "ci-cpu.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "ci-cpu",
                "gpus_per_node": 0,
                "cpus_per_node": 2,
                "cpus_per_rank": 1,
                "setup": [*(setup or []), 'source "$T0_VENV/bin/activate"'],
                "sizes": {
                    "tiny": {
                        "nodes": 1,
                        "gpus_per_node": 0,
                        "procs_per_node": procs,
                        "hours": 1,
                        "mem": "4G",
                    }
                },
                **fields,
            }
        )
    )
    return profiles


def materialization(result):
    return result.get_asset_materialization_events()[
        0
    ].step_materialization_data.materialization.metadata


def test_student_checkpoint_partition_trains_through_dagster_pipes(student, tmp_path):

    import dagster as dg

    from t0_pipeline.defs.resources import PipelineSettings, TrainingCompute
    from t0_pipeline.defs.training import build_student_checkpoint

    root, _ = student
    data, config = job_workspace(tmp_path, root)
    asset = build_student_checkpoint(dg.StaticPartitionsDefinition(["tiny"]))
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [asset],
        partition_key="tiny",
        instance=instance,
        resources={
            "settings": PipelineSettings(data_dir=str(data), config_file=str(config)),
            "training_compute": TrainingCompute(mode="local"),
        },
    )
    assert result.success
    meta = materialization(result)
    # partition key in the path
    assert meta["checkpoint"].value == str(data / "students" / "tiny" / "final")
    assert meta["global_step"].value == 6 and meta["base_model"].value == str(root / "base")
    assert meta["final_train_loss"].value < meta["first_train_loss"].value
    assert (
        meta["world_size"].value == 1
        and meta["deepspeed"].value == "none"
        and meta["tokens_per_second"].value > 0
    )
    assert len(json.loads(meta["eval_losses"].value)) == 2
    resolved = meta["resolved_config"].value
    resolved = json.loads(resolved) if isinstance(resolved, str) else resolved
    assert resolved["max_steps"] == 6 and resolved["model"] == str(root / "base")
    assert (data / "students" / "tiny" / "final" / "model.safetensors").exists()
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    # the trainer's progress reached the run's log
    assert any(m.startswith("step 6/6: loss") for m in logged)
    # the loss curve shown in the UI (an embedded PNG) and linked; the card; the tracker's run,
    # named after the size and this Dagster run
    student = data / "students" / "tiny"
    assert meta["loss_png"].value == str(student / "loss.png")
    shown = meta["loss_plot"].value
    assert shown.startswith("![loss by step](data:image/png;base64,")
    png = base64.b64decode(shown.split("base64,", 1)[1].rstrip(")"))
    assert png == (student / "loss.png").read_bytes()
    assert meta["model_card"].value == (student / "final" / "README.md").read_text()
    assert [p.name for p in (student / "runs").iterdir()] == [f"t0-tiny-{result.run_id[:8]}"]


def _slurm_up() -> bool:
    import shutil
    import subprocess

    return (
        shutil.which("sbatch") is not None
        and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
    )


def _wait_for_job(job: str, until, timeout: float = 300) -> str:
    import subprocess
    import time

    state, deadline = "PENDING", time.time() + timeout
    # no accounting database here: scontrol remembers finished jobs, squeue does not
    while time.time() < deadline:
        out = subprocess.run(
            ["scontrol", "show", "job", job, "-o"], capture_output=True, text=True
        ).stdout
        state = next((f.split("=", 1)[1] for f in out.split() if f.startswith("JobState=")), state)
        if until(state):
            return state
        time.sleep(0.5)
    return state


FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


@pytest.mark.slow
def test_a_job_stopped_before_its_time_limit_checkpoints_requeues_and_resumes(student, tmp_path):
    """The rendered script under a real Slurm cluster: Slurm's pre-timeout signal → checkpoint →
    requeue → resume."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    from t0_pipeline.training.cluster import load_profile, render_sbatch

    if not _slurm_up():
        if os.environ.get("CI"):
            pytest.fail(
                "CI should have started a Slurm cluster (.ci/slurm-up.sh) but sinfo does not answer"
            )
        pytest.skip("no Slurm cluster here; start one with `sudo bash .ci/slurm-up.sh`")
    root, _ = student
    data, config = job_workspace(
        tmp_path, root, max_steps=3000, save_steps=10000, eval_fraction=0.0, logging_steps=100
    )
    profiles = cpu_profile(tmp_path, setup=[f"export T0_VENV={Path(sys.prefix)}"])
    logs = data / "students" / "tiny" / "logs"
    logs.mkdir(parents=True)
    script = tmp_path / "train-tiny.sbatch"
    script.write_text(
        render_sbatch(
            load_profile("ci-cpu", profiles),
            "tiny",
            config_file=str(config),
            data_dir=str(data),
            log_dir=str(logs),
            model=str(root / "base"),
        )
    )
    job = (
        subprocess.run(
            ["sbatch", "--parsable", str(script)],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        )
        .stdout.strip()
        .split(";")[0]
    )
    log = logs / f"t0-train-tiny-{job}.out"
    deadline = time.time() + 180
    while time.time() < deadline and "/3000 [" not in (
        log.read_bytes().decode(errors="replace") if log.exists() else ""
    ):
        time.sleep(0.5)  # wait until it is training
    # what Slurm does STOP_LEAD_S before the time limit (#SBATCH --signal=B:USR1@…), done now
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True)
    # requeued, the job waits until its old credential expires (AuthInfo=cred_expire in
    # .ci/slurm-up.sh), then resumes
    state = _wait_for_job(job, lambda s: s in FINAL_STATES, timeout=400)
    text = log.read_bytes().decode(errors="replace")
    assert state == "COMPLETED", text[-3000:]
    metrics = json.loads((data / "students" / "tiny" / "metrics.json").read_text())
    # the requeued run resumed
    assert metrics["resumed_from"] and "checkpoint-" in metrics["resumed_from"]
    assert (
        0 < int(metrics["resumed_from"].rsplit("-", 1)[1]) < 3000 and metrics["global_step"] == 3000
    )
    # both attempts, one log
    assert f"requeueing job {job} to resume" in text and text.count("/3000 [") >= 2
    assert AutoModelForCausalLM.from_pretrained(data / "students" / "tiny" / "final") is not None


FAULT = """import os
if os.environ.get("RANK") == "1" and os.environ.get("T0_TEST_FAIL_AT_STEP"):
    import transformers

    at, step = int(os.environ["T0_TEST_FAIL_AT_STEP"]), transformers.Trainer.training_step

    def training_step(self, *args, **kwargs):
        if self.state.global_step >= at:
            raise RuntimeError(f"injected fault on rank 1 at step {self.state.global_step}")
        return step(self, *args, **kwargs)

    transformers.Trainer.training_step = training_step
"""


@pytest.mark.slow
def test_student_checkpoint_trains_on_two_ranks_with_zero3_through_dagster_slurm(student, tmp_path):
    """student_checkpoint → dagster-slurm → SSH → sbatch → srun → torchrun → 2 CPU ranks, DeepSpeed
    ZeRO-3 (gloo)."""
    import os
    import sys
    from pathlib import Path

    import dagster as dg
    import torch
    from typer.testing import CliRunner

    from t0_pipeline.cli import app
    from t0_pipeline.defs.resources import PipelineSettings, TrainingCompute
    from t0_pipeline.defs.training import build_student_checkpoint
    from t0_pipeline.training.cluster import prepare_env_dir
    from t0_pipeline.training.ranks import tensor_digest

    key = Path(os.environ.get("T0_CI_SSH_KEY", "/root/.ssh/t0_ci"))
    if not (_slurm_up() and key.exists()):
        if os.environ.get("CI"):
            pytest.fail("CI should have started Slurm and sshd with a key (.ci/slurm-up.sh)")
        pytest.skip("no Slurm cluster reachable over SSH here; run `sudo bash .ci/slurm-up.sh`")
    from transformers import AutoModelForCausalLM

    root, _ = student
    data, config = job_workspace(tmp_path, root, max_steps=8, save_steps=2, eval_steps=4)
    env = prepare_env_dir(tmp_path / "deployed", Path(sys.prefix))
    remote = tmp_path / "remote"
    where = dict(
        mode="slurm",
        site="ci-cpu",
        profiles_dir=str(tmp_path / "profiles"),
        ssh_host="localhost",
        ssh_user="root",
        ssh_key_path=str(key),
        env_path=str(env),
        remote_base=str(remote),
    )
    compute = TrainingCompute(**where, partition="debug")

    def materialize():
        return dg.materialize(
            [build_student_checkpoint(dg.StaticPartitionsDefinition(["tiny"]))],
            partition_key="tiny",
            resources={
                "settings": PipelineSettings(data_dir=str(data), config_file=str(config)),
                "training_compute": compute,
            },
            raise_on_error=False,
        )

    # 1. rank 1 fails at step 4: the run fails with that rank's error; the checkpoints already saved
    # stay
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(FAULT)
    cpu_profile(
        tmp_path, procs=2, setup=[f"export PYTHONPATH={inject}", "export T0_TEST_FAIL_AT_STEP=4"]
    )
    failed = materialize()
    assert not failed.success
    messages = _failure_messages(failed)
    assert any(
        "the Slurm job for tiny failed on rank 1" in m
        and "injected fault on rank 1 at step 4" in m
        and "Last lines of that rank" in m
        for m in messages
    ), messages
    assert not (data / "students" / "tiny" / "final").exists()
    saved = sorted(
        (data / "students" / "tiny" / "checkpoints").glob("run-*/checkpoint-*"),
        key=lambda p: int(p.name[11:]),
    )
    assert saved and saved[0].name == "checkpoint-2"

    # 2. the job submitted again: both ranks, parameters sharded, resumed from the last checkpoint,
    # loss falls
    cpu_profile(tmp_path, procs=2)
    result = materialize()
    assert result.success, _failure_messages(result)
    meta = materialization(result)
    assert int(meta["slurm_job_id"].value) > 0 and meta["world_size"].value == 2
    assert meta["deepspeed"].value == "zero3.json" and meta["params_sharded"].value is True
    per_rank, total = json.loads(meta["params_per_rank"].value), meta["params_total"].value
    # each rank holds only its ZeRO-3 shard
    assert len(per_rank) == 2 and all(0 < n < total for n in per_rank)
    assert len(json.loads(meta["peak_memory_gb_per_rank"].value)) == 2
    # the memory plan made before submitting (CPU ranks: no GPU to plan against), and as run
    assert "per rank (no GPU memory to plan against)" in meta["memory_plan_verdict"].value
    assert json.loads(meta["memory_plan_as_run"].value)["gpus"] == 2
    assert meta["loss"].value == "plain" and meta["tokens_per_second_per_gpu"].value > 0
    assert meta["resumed_from"].value == str(saved[-1]) and meta["global_step"].value == 8
    assert meta["final_train_loss"].value < meta["first_train_loss"].value
    final = data / "students" / "tiny" / "final"
    # plain from_pretrained: consolidated weights
    loaded = AutoModelForCausalLM.from_pretrained(final)
    digest = json.loads((data / "students" / "tiny" / "metrics.json").read_text())["weights_digest"]
    params = dict(loaded.named_parameters())
    assert digest and all(tensor_digest(params[name]) == value for name, value in digest.items())
    base = AutoModelForCausalLM.from_pretrained(root / "base").state_dict()
    assert any(not torch.equal(base[k], v) for k, v in loaded.state_dict().items())

    # 3. `t0 sbatch` prints exactly the script Slurm ran for Dagster (each job keeps a copy beside
    # its output)
    ran = (
        data / "students" / "tiny" / "logs" / f"t0-train-tiny-{meta['slurm_job_id'].value}.sbatch"
    ).read_text()
    printed = CliRunner().invoke(
        app,
        [
            "sbatch",
            "--site",
            "ci-cpu",
            "--size",
            "tiny",
            "--profiles-dir",
            str(tmp_path / "profiles"),
            "--partition",
            "debug",
            "--config",
            str(data / "students" / "tiny" / "logs" / "pipeline.config.json"),  # as resolved
            "--data-dir",
            str(data),
        ],
    )
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == ran

    # 4. a cluster that rejects the job: one clear error, and the checkpoint just made stays
    cpu_profile(tmp_path, procs=2, partition="no-such-partition")
    compute = TrainingCompute(**where)  # the profile's partition, not an override
    rejected = materialize()
    assert not rejected.success
    assert any(
        "the Slurm job for tiny did not complete: sbatch: error: invalid partition" in m
        for m in _failure_messages(rejected)
    )
    assert (final / "model.safetensors").exists()


def _failure_messages(result) -> list[str]:
    messages = []
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        err = event.event_specific_data.error
        while err is not None:  # dagster wraps the T0Error: walk the cause chain
            messages.append(err.message)
            err = err.cause
    return messages


def test_a_backfill_of_a_new_size_trains_serves_and_evaluates_it_with_no_hand_step(
    student, built, tmp_path
):
    """One line in train.sizes → student_checkpoint[tiny] trains (Pipes) → the evaluation sensor
    asks for accuracy_report[t0-tiny] and its base → each is served by the model-server resource
    (the loopback server as the vLLM command), evaluated and stopped → accuracy_comparison gains the
    rows."""
    import shutil

    import dagster as dg
    import yaml

    from t0_pipeline.config import load_config
    from t0_pipeline.defs.evaluation import accuracy_comparison, build_accuracy_report
    from t0_pipeline.defs.resources import ModelServer, PipelineSettings, TrainingCompute
    from t0_pipeline.defs.training import build_student_checkpoint
    from t0_pipeline_tests.conftest import write_jsonl
    from t0_pipeline_tests.test_accuracy import QUERIES
    from t0_pipeline_tests.test_model_server import stand_in

    root, _ = student
    _, built_paths = built
    data = tmp_path / "data"
    shutil.copytree(
        built_paths.root,
        data,
        ignore=shutil.ignore_patterns("students", "eval", "llm_cache.sqlite"),
    )
    (data / "synthetic" / "sft").mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "sft.parquet", data / "synthetic" / "sft" / "train.parquet")
    config = tmp_path / "t0.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                # the new size: one line (the five default sizes are dropped here to keep the test
                # small)
                "train": {
                    "sizes": {
                        "tiny": str(root / "base"),
                        **dict.fromkeys(["1.5B", "3B", "7B", "14B", "32B"]),
                    },
                    **SMALL_JOB,
                },
                "llm": {"cache_path": str(tmp_path / "cache.sqlite"), "max_attempts": 1},
                "servers": {
                    "command": stand_in(
                        "--thinking",
                        "The face droops . Wait",
                        "--answer",
                        "( Stroke , A&E )",
                        "--tool",
                        "submit_condition_recommendation",
                        '{"condition": "Stroke", "severity": "A&E"}',
                    ),
                    "startup_timeout_s": 60,
                },
                "evaluation": {
                    "models": {"retrieval-baseline": None, "gpt-4o": None},
                    "queries": str(write_jsonl(tmp_path / "q.jsonl", QUERIES[:2])),
                    "runs": 1,
                    "ks": [0, 5],
                },
            }
        )
    )
    cfg = load_config(config)
    # the size's base (named from its model) and student
    assert set(cfg.evaluation.models) == {
        "base",
        "t0-tiny",
    }
    checkpoint = build_student_checkpoint(dg.StaticPartitionsDefinition(["tiny"]))
    report = build_accuracy_report(
        dg.StaticPartitionsDefinition(list(cfg.evaluation.models)), checkpoint, cfg
    )
    assets = [checkpoint, report, accuracy_comparison]
    resources = {
        "settings": PipelineSettings(data_dir=str(data), config_file=str(config)),
        "training_compute": TrainingCompute(mode="local"),
        "model_server": ModelServer(mode="local"),
    }
    defs = dg.Definitions(assets=assets, resources=resources)
    instance = dg.DagsterInstance.ephemeral()

    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert before.total_requested == 0  # nothing trained yet: nothing to evaluate
    trained = dg.materialize(
        [checkpoint], partition_key="tiny", instance=instance, resources=resources
    )
    assert trained.success
    asked = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert asked.get_requested_partitions(dg.AssetKey("accuracy_report")) == {"t0-tiny", "base"}
    runs = {}
    for partition in sorted(asked.get_requested_partitions(dg.AssetKey("accuracy_report"))):
        runs[partition] = dg.materialize(
            assets,
            selection=[report],
            partition_key=partition,
            instance=instance,
            resources=resources,
        )
        logged = [e.user_message for e in instance.all_logs(runs[partition].run_id)]
        assert any("healthy at http://127.0.0.1:" in m for m in logged) and any(
            "stopped" in m for m in logged
        )
    meta = materialization(runs["t0-tiny"])
    # what it measured
    assert meta["served_checkpoint"].value == str((data / "students" / "tiny" / "final").resolve())
    # the stand-in always answers Stroke: 1 of 2 queries
    assert meta["condition_accuracy_k0"].value == "0.50 ± 0.00"
    # through the submit tool
    assert materialization(runs["base"])["condition_accuracy_k0"].value == "0.50 ± 0.00"
    assert asked.get_requested_partitions(dg.AssetKey("accuracy_comparison")) == set()
    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=asked.cursor)
    # the table follows the new reports
    assert again.get_num_requested(dg.AssetKey("accuracy_comparison")) == 1
    table = materialization(
        dg.materialize(
            assets, selection=[accuracy_comparison], instance=instance, resources=resources
        )
    )["table"].value
    assert "| t0-tiny | fine-tuned | tiny |" in table and "| base | base | tiny |" in table
