"""The training memory plan: verdicts on the report's configurations justified from published
figures, the model states against DeepSpeed's own estimator, a real 2-rank ZeRO-3 run's peak memory
against its plan, and the chunked loss against the plain one on the real SmolLM2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from t0_pipeline.config import TrainConfig
from t0_pipeline.servers.model_shape import QWEN25, ModelShape, model_shape
from t0_pipeline.training.memory_plan import RunShape, fitting_settings, plan_memory

GB = 1e9
GIB = 2**30
A100_40 = 39.4  # GiB as CUDA reports a 40 GB A100 (42.3 GB)
H100 = 79.1
GH200 = 94.5
BLOCK = 32768


def qwen(size: str) -> ModelShape:
    return model_shape(f"Qwen/Qwen2.5-{size}-Instruct")


def site_plan(site: str, size: str, **config):
    from t0_pipeline.training.cluster import load_profile
    from t0_pipeline.training.plan import plan_for_site

    train = TrainConfig(**config)
    model = f"Qwen/Qwen2.5-{size}-Instruct"
    return plan_for_site(train, load_profile(site), size, model, Path("/no/sft/data"))


# --- verdicts on the report's configurations, each justified from published figures ------------
# Published figures used: Qwen2.5 config.json files (vocabulary 151,936 for 1.5B/3B and 152,064
# for 7B+; hidden sizes, layers, MLP widths), DeepSpeed's ZeRO-3 rule of 18 bytes per parameter
# over the GPUs plus 4 bytes per parameter of the largest layer, NVIDIA's memory sizes (A100 40 GB
# = 42.3e9 bytes usable as CUDA reports it, H100 80 GB, GH200 96 GB), the report's allocations
# (Baskerville 4×A100 per node, Isambard-AI 4×GH200), s1's out-of-memory reports for Qwen2.5-32B at
# block 32,768 on eight 80 GB GPUs, and open-r1's 32B recipe cut to 22,528 tokens on 16 × 8 H100.


def test_the_plain_loss_alone_cannot_fit_a_32k_sequence_on_a_40gb_a100():
    # fp32 logits for 32,768 tokens × 151,936 = 19.9 GB; the softmax backward holds its output and
    # the incoming gradient beside the logits' gradient: ≥ 2 × 19.9 = 39.8 GB before any weight
    assert 2 * 4 * BLOCK * 151936 / GB > 39.4 * GIB / GB * 0.94
    plan = site_plan("baskerville", "1.5B", loss="plain", deepspeed="zero3")
    assert not plan.configured.fits
    # chunked: 18 B × 1.54e9 / 4 GPUs = 6.9 GB of model states and 28 × 32,768 × 1,536 × 2 B =
    # 2.8 GB of layer checkpoints: far under 42 GB
    assert 18 * 1.54e9 / 4 / GB + 28 * BLOCK * 1536 * 2 / GB < 12
    chunked = site_plan("baskerville", "1.5B", loss="chunked", deepspeed="zero3")
    assert chunked.chosen.fits and chunked.chosen.run.offload == "none"
    auto = site_plan("baskerville", "1.5B")
    assert auto.chosen.fits and auto.chosen.run.loss == "chunked"


def test_7b_on_one_baskerville_node_needs_optimizer_offload():
    # model states 18 B × 7.62e9 / 4 = 34.3 GB + 4 B × 545M (the 152,064 × 3,584 embedding) = 2.2
    # GB; with 28 × 32,768 × 3,584 × 2 B = 6.6 GB of checkpoints that is 43 GB > 42.3 GB
    assert 18 * 7.62e9 / 4 / GB + 4 * 152064 * 3584 / GB + 28 * BLOCK * 3584 * 2 / GB > 42.3
    no_offload = site_plan("baskerville", "7B", loss="chunked", deepspeed="zero3")
    assert not no_offload.chosen.fits
    auto = site_plan("baskerville", "7B")
    assert auto.chosen.fits and auto.chosen.run.offload == "optimizer"
    assert "zero3_offload_optimizer" in auto.summary()


def test_32b_on_baskerville_cannot_fit_a_full_block_without_offload():
    # 18 B × 32.8e9 / 16 GPUs = 36.9 GB of states; 64 × 32,768 × 5,120 × 2 B = 21.5 GB checkpoints
    assert 18 * 32.8e9 / 16 / GB + 64 * BLOCK * 5120 * 2 / GB > 42.3
    plan = site_plan("baskerville", "32B", loss="chunked", deepspeed="zero3")
    assert not plan.chosen.fits
    reason = site_plan("baskerville", "32B").blocking_reason()
    auto = site_plan("baskerville", "32B").chosen
    assert auto.run.offload != "none" or not auto.fits
    if reason:  # one line, naming the fix and the command that explains it
        assert "\n" not in reason and "t0 plan --site baskerville --size 32B" in reason


def test_32b_on_isambard_ai_fits_with_optimizer_offload_only():
    # without offload: 18 B × 32.8e9 / 8 = 73.8 GB + 21.5 GB of checkpoints + one layer's gated-MLP
    # tensors (4 × 32,768 × 27,648 × 2 B = 7.2 GB) = 102.5 GB > 96 GB of HBM3
    assert 18 * 32.8e9 / 8 / GB + 64 * BLOCK * 5120 * 2 / GB + 4 * BLOCK * 27648 * 2 / GB > 96
    # optimizer offload keeps 2 B × 32.8e9 / 8 = 8.2 GB of bf16 weights on the GPU: ~40 GB in all
    auto = site_plan("isambard-ai", "32B")
    assert auto.chosen.fits and auto.chosen.run.offload == "optimizer"
    assert auto.chosen.cpu_gib_per_node < 460  # 16 B × 32.8e9 / 2 nodes = 262 GB of host memory


@pytest.mark.parametrize("size", ["1.5B", "3B"])
def test_small_students_fit_a_gh200_even_with_the_plain_loss(size):
    # 12 B × 32,768 × 151,936 = 59.7 GB of loss + 18 B × params / 4 (≤ 14 GB) + ≤ 5 GB of
    # checkpoints + one layer (≤ 3 GB) < 96 GB
    assert 12 * BLOCK * 151936 / GB + 18 * 3.1e9 / 4 / GB + 36 * BLOCK * 2048 * 2 / GB < 85
    auto = site_plan("isambard-ai", size)
    assert auto.chosen.fits and auto.chosen.run.loss == "plain"


def test_32b_at_32k_on_eight_80gb_gpus_runs_out_of_memory_as_s1_users_reported():
    # 18 B × 32.8e9 / 8 = 73.8 GB of model states + 21.5 GB of checkpoints > 85 GB of an H100
    run = RunShape(qwen("32B"), nodes=1, gpus_per_node=8, gpu_memory_gib=H100, seq=BLOCK)
    assert not plan_memory(replace(run, loss="chunked")).fits


def test_open_r1s_32b_block_of_22528_on_128_h100s_fits_where_32768_did_not():
    run = RunShape(qwen("32B"), nodes=16, gpus_per_node=8, gpu_memory_gib=H100, seq=BLOCK)
    assert not plan_memory(run).fits  # plain loss at 32,768: 60 GB of loss + 21.5 GB checkpoints
    assert plan_memory(replace(run, seq=22528)).fits
    assert fitting_settings(run).run.loss == "chunked"  # the chunked loss keeps the full block


def test_every_size_and_site_of_the_report_gets_a_plan_and_a_verdict():
    for site in ("baskerville", "isambard-ai"):
        for size in ("1.5B", "3B", "7B", "14B", "32B"):
            plan = site_plan(site, size)
            text = plan.report()
            assert "total" in text and ("fits" in text or "does not fit" in text)
            names = [name for name, _, _ in plan.configured.items]
            assert names[:4] == ["parameters", "gradients", "optimizer states", "gathered module"]
            assert "logits and loss" in names and "framework reserve" in names


# --- model states against DeepSpeed's estimator --------------------------------------------------


def _meta_model(size: str):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    hidden, layers, inter, heads, kv, vocab, tied = QWEN25[size]
    config = Qwen2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        tie_word_embeddings=tied,
    )
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("size", ["1.5B", "3B", "7B", "14B", "32B"])
def test_model_states_match_deepspeeds_estimator(size):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    model = _meta_model(size)
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    shape = qwen(size)
    assert shape.params() == total  # the config-only count is exact
    assert shape.largest_module_params() == largest
    for nodes, offload, cpu, params in [
        (1, "none", False, False),
        (4, "none", False, False),
        (2, "optimizer", True, False),
        (2, "all", True, True),
    ]:
        _, gpu_bytes, _ = estimate_zero3_model_states_mem_needs(
            total, largest, 4, nodes, cpu_offload=cpu, cpu_offload_params=params
        )
        ours = plan_memory(RunShape(shape, nodes, 4, offload=offload)).model_states_gib * GIB
        assert abs(ours - gpu_bytes) <= 0.05 * gpu_bytes, (size, nodes, offload, ours, gpu_bytes)


# --- a real 2-rank ZeRO-3 run on CPU against its plan -------------------------------------------

# Measured per rank: peak resident memory during training above the rank's resident memory before
# the model loaded (freed heap returned first), against the plan (fp32 on CPU, no framework
# reserve), for the plain and the chunked loss, and the chunked loss's saving against the planned
# one. Resident memory also holds what the plan does not count (gloo and DeepSpeed buffers,
# libraries loaded during the first step: ~0.1 GiB here). Tolerance: 35% either way.
TOLERANCE = 0.35


def _long_traces(n: int) -> list[dict]:
    from t0_pipeline_tests.test_train import trace

    words = "my face dropped on one side and my big toe is hot red and swollen".split()
    out = []
    for i in range(n):
        thinking = " ".join(words[(i + j) % len(words)] for j in range(900 + 60 * i))
        out.append(trace(i, "Stroke" if i % 2 else "Gout", "A&E", "face dropped", thinking))
    return out


@pytest.fixture(scope="module")
def wide_student(tmp_path_factory, smollm2_checkpoint):
    """A randomly initialised Qwen2 model with SmolLM2's real tokenizer, whose memory is mostly what
    the plan counts: a 49,152-token vocabulary (large embeddings and logits) on four narrow layers;
    examples of ~1,300–1,800 tokens."""
    import polars as pl
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    from t0_pipeline.config import SFTConfig
    from t0_pipeline.synthetic.sft import build_sft

    root = tmp_path_factory.mktemp("wide")
    tok = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    tok.save_pretrained(root / "base")
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "base")
    df, _ = build_sft(pl.DataFrame(_long_traces(6)), SFTConfig(tokenizer=str(root / "base")), tok)
    df.write_parquet(root / "sft.parquet")
    return root


def _two_ranks(root: Path, out: Path, loss: str) -> dict:
    import yaml

    config = out / "t0.yaml"
    out.mkdir(parents=True, exist_ok=True)
    train = {
        "model": str(root / "base"),
        "dataset": str(root / "sft.parquet"),
        "output_dir": str(out / "student"),
        "max_steps": 2,
        "eval_fraction": 0.0,
        "save_steps": 100,
        "block_size": 4096,
        "learning_rate": 1e-4,
        "warmup_ratio": 0.0,
        "gradient_checkpointing": True,
        "deepspeed": "zero3",
        "loss": loss,
        "loss_chunk_tokens": 128,
    }
    config.write_text(yaml.safe_dump({"train": train}))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "T0_DATA_DIR": str(out)}
    # glibc returns every block of 1 MiB or more to the system when it is freed (its adaptive
    # threshold would keep freed logits chunks in the heap), so resident memory follows live tensors
    env["MALLOC_MMAP_THRESHOLD_"] = str(2**20)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2"]
    cmd += ["--master-port=29613", "-m", "t0_pipeline", "train", "--config", str(config)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "student" / "metrics.json").read_text())


def _measured(metrics: dict) -> list[float]:
    return [p - b for p, b in zip(metrics["peak_memory_gb"], metrics["baseline_memory_gb"])]


def test_two_rank_zero3_peak_memory_per_rank_is_within_tolerance_of_the_plan(
    wide_student, tmp_path
):
    from t0_pipeline_tests.tracker_files import logged_scalars

    plain = _two_ranks(wide_student, tmp_path / "plain", "plain")
    chunked = _two_ranks(wide_student, tmp_path / "chunked", "chunked")
    # the default tracker: one TensorBoard run (rank 0's) under the run's folder, holding the
    # loss at every logged step (logging_steps 1) as metrics.json has it
    for metrics, loss in ((plain, "plain"), (chunked, "chunked")):
        runs = list((tmp_path / loss / "student" / "runs").iterdir())
        assert len(runs) == 1 and runs[0].name.startswith("t0-student-")
        logged = logged_scalars(runs[0])["train/loss"]
        assert sorted(logged) == [step for step, _ in metrics["train_loss"]] == [1, 2]
        for step, value in metrics["train_loss"]:
            assert logged[step] == pytest.approx(value, rel=1e-5)
    for metrics, loss in ((plain, "plain"), (chunked, "chunked")):
        plan = metrics["memory_plan"]
        assert metrics["world_size"] == 2 and metrics["deepspeed"] == "zero3.json"
        assert metrics["loss"] == loss and plan["loss"] == loss and plan["gpus"] == 2
        assert plan["seq"] > 1200  # the longest example, as the trainer tokenised it
    for metrics in (plain, chunked):
        predicted = metrics["memory_plan"]["total_gib"]
        for used in _measured(metrics):
            assert abs(used - predicted) <= TOLERANCE * predicted, (used, metrics["memory_plan"])
    predicted = plain["memory_plan"]["total_gib"]
    saving = predicted - chunked["memory_plan"]["total_gib"]
    for before, after in zip(_measured(plain), _measured(chunked)):
        saved = before - after
        assert abs(saved - saving) <= TOLERANCE * saving, (before, after, saving)


# --- the chunked loss against the plain one ------------------------------------------------------


@pytest.mark.parametrize("num_items", [None, 150])
def test_the_chunked_loss_gives_the_plain_loss_and_gradients_on_the_real_smollm2(
    smollm2_checkpoint, num_items
):
    import torch
    from transformers import AutoModelForCausalLM

    from t0_pipeline.training.loss import use_chunked_loss

    torch.manual_seed(0)
    ids = torch.randint(0, 49152, (2, 160))
    labels = ids.clone()
    labels[:, :60] = -100  # the prompt
    labels[1, 130:] = -100  # padding
    mask = torch.ones_like(ids)
    mask[1, 130:] = 0
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}

    def loss_and_grads(chunked: bool):
        model = AutoModelForCausalLM.from_pretrained(smollm2_checkpoint, dtype=torch.float32)
        model.train()
        if chunked:
            use_chunked_loss(model, chunk_tokens=48)  # 320 tokens: 7 chunks, the last partial
        out = model(input_ids=ids, attention_mask=mask, labels=labels, **extra)
        out.loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        return out.loss.item(), grads, model

    plain, plain_grads, _ = loss_and_grads(False)
    chunked, chunked_grads, model = loss_and_grads(True)
    assert plain > 1.0 and abs(chunked - plain) <= 1e-5 * plain
    assert plain_grads.keys() == chunked_grads.keys() and len(plain_grads) > 100
    for name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():  # without labels it still gives logits (generation)
        logits = model(input_ids=ids[:1, :8]).logits
    assert logits.shape == (1, 8, model.config.vocab_size)


# --- where users meet the plan: t0 plan, t0 sbatch, the student_checkpoint pre-check -------------


def test_t0_plan_itemises_one_run_and_lists_every_size_and_site(tmp_path):
    from typer.testing import CliRunner

    from t0_pipeline.cli import app

    runner = CliRunner()
    one = runner.invoke(
        app, ["plan", "--site", "baskerville", "--size", "7B", "--data-dir", str(tmp_path)]
    )
    assert one.exit_code == 0, one.output
    for line in ("optimizer states", "activations (checkpoints)", "logits and loss", "total"):
        assert line in one.stdout
    assert "Qwen/Qwen2.5-7B-Instruct (size 7B) on baskerville (39.4 GiB per GPU)" in one.stdout
    assert "does not fit" in one.stdout and "cheapest first" in one.stdout
    assert (
        "With the auto settings (train.loss: chunked, train.deepspeed: zero3_offload_optimizer)"
        in one.stdout
    )
    table = runner.invoke(app, ["plan", "--all", "--data-dir", str(tmp_path)])
    assert table.exit_code == 0, table.output
    lines = [line for line in table.stdout.splitlines() if " on " in line]
    assert len(lines) == 10 and all(": fits: " in x or ": does not fit: " in x for x in lines)
    assert sum(": does not fit: " in x for x in lines) == 1  # 32B on Baskerville at block 32,768
    # a shorter block is a setting like any other
    short = runner.invoke(
        app,
        [
            "plan",
            "--site",
            "baskerville",
            "--size",
            "32B",
            "--data-dir",
            str(tmp_path),
            "--set",
            "train.block_size=8192",
        ],
    )
    assert "block 8192" in short.stdout and "With the auto settings" in short.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "t0_pipeline.cli", "plan", "--site", "baskerville", "--size", "70B"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "T0_DATA_DIR": str(tmp_path)},
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "no base model for size '70B' in train.sizes" in bad.stderr


def test_the_plan_counts_the_examples_a_shorter_block_drops(tmp_path):
    import polars as pl

    from t0_pipeline.training.cluster import load_profile
    from t0_pipeline.training.plan import plan_for_site

    data = tmp_path / "sft.parquet"
    lengths = [2000, 9000, 20000, 31000, 32000, 40000]  # the last is over the block: never trained
    pl.DataFrame({"n_tokens": lengths, "messages": ["[]"] * 6}).write_parquet(data)
    planned = plan_for_site(
        TrainConfig(), load_profile("baskerville"), "32B", "Qwen/Qwen2.5-32B-Instruct", data
    )
    assert planned.configured.run.seq == 32000  # the longest example within the block
    report = planned.report()
    assert "the SFT data's longest example within the block: 32000 tokens" in report
    shorter = [line for line in report.splitlines() if "train.block_size:" in line]
    assert shorter and "drops 2 of 6 examples" in shorter[0] or "drops 3 of 6" in shorter[0]


def test_student_checkpoint_refuses_a_run_that_cannot_fit_before_submitting_it(tmp_path):
    import dagster as dg

    from t0_pipeline.defs.resources import PipelineSettings, TrainingCompute
    from t0_pipeline.defs.training import build_student_checkpoint

    config = tmp_path / "t0.yaml"
    config.write_text("train:\n  sizes: {32B: Qwen/Qwen2.5-32B-Instruct}\n  deepspeed: zero3\n")
    # no SSH host: had the job been submitted, the run would fail on the connection instead
    compute = TrainingCompute(mode="slurm", site="baskerville", account="proj")
    result = dg.materialize(
        [build_student_checkpoint(dg.StaticPartitionsDefinition(["32B"]))],
        partition_key="32B",
        resources={
            "settings": PipelineSettings(data_dir=str(tmp_path / "data"), config_file=str(config)),
            "training_compute": compute,
        },
        raise_on_error=False,
    )
    assert not result.success
    from t0_pipeline_tests.test_train import _failure_messages

    message = " | ".join(_failure_messages(result))
    assert "student 32B on baskerville: does not fit" in message
    assert "t0 plan --site baskerville --size 32B" in message and "ssh" not in message.lower()


def test_auto_settings_keep_the_plain_loss_on_cpu_and_liger_is_refused_there(tmp_path):
    from t0_pipeline.artifacts import T0Error
    from t0_pipeline.training.plan import choose_settings, resolve_deepspeed

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "qwen2",
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "intermediate_size": 128,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "vocab_size": 1000,
            }
        )
    )
    chosen = choose_settings(TrainConfig(model=str(folder)), 1, 512, cuda=False)
    assert chosen.loss == "plain" and chosen.deepspeed is None and chosen.plan is not None
    assert "no GPU memory to plan against" in chosen.said
    with pytest.raises(T0Error, match="runs on GPUs only; use train.loss: chunked"):
        choose_settings(TrainConfig(model=str(folder), loss="liger"), 1, 512, cuda=False)
    named = resolve_deepspeed(TrainConfig(deepspeed="zero3_offload_optimizer"), 2)
    assert named.name == "zero3_offload_optimizer.json"
    offload = json.loads(named.read_text())["zero_optimization"]
    assert offload["offload_optimizer"]["device"] == "cpu" and "offload_param" not in offload
