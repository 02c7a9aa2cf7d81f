"""Fine-tune a student on the SFT dataset (s1-style): loss on the assistant turn only.

Input: ``<data>/synthetic/sft/train.parquet`` (``messages`` as JSON) and a base model (name
or local path). Output under the output directory: ``checkpoints/`` (for resuming after
preemption), ``final/`` (the Hugging Face model + tokenizer + ``README.md`` model card,
renamed into place only when complete) and ``metrics.json`` (train and held-out losses).

Each example is rendered with the student's own chat template; the prompt (system + user,
plus the assistant header) is tokenised separately from the completion so the boundary is
exact, and every prompt token's label is -100. A held-out split is evaluated every
``eval_steps`` (the reference implementation evaluated on its training set). DeepSpeed
ZeRO-3 is a config file away (``slurm/deepspeed/zero3.json``), LoRA an option for small GPUs.
Needs no Dagster: a Slurm node runs ``python -m t0_pipeline.train --config t0.yaml``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, TrainConfig

log = logging.getLogger(__name__)
IGNORE = -100


def tokenize_example(messages: list[dict[str, str]], tokenizer, block_size: int) -> dict[str, list[int]] | None:
    """input_ids / attention_mask / labels for one chat; None when the prompt leaves no room to learn."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise T0Error("the tokenizer's chat template does not render the prompt as a prefix of the full chat, so the "
                      "assistant turn cannot be located; use the student model's own instruct tokenizer.")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    if len(prompt_ids) >= block_size or not completion_ids:
        return None
    ids = (prompt_ids + completion_ids)[:block_size]
    labels = ([IGNORE] * len(prompt_ids) + completion_ids)[:block_size]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


class ListDataset:
    """A torch-style dataset over tokenised examples."""

    def __init__(self, rows: list[dict[str, list[int]]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


def pad_batch(pad_id: int):
    import torch

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        width = max(len(b["input_ids"]) for b in batch)
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for b in batch:
            gap = width - len(b["input_ids"])
            out["input_ids"].append(b["input_ids"] + [pad_id] * gap)
            out["attention_mask"].append(b["attention_mask"] + [0] * gap)
            out["labels"].append(b["labels"] + [IGNORE] * gap)
        return {k: torch.tensor(v) for k, v in out.items()}

    return collate


def load_examples(dataset: Path, tokenizer, config: TrainConfig) -> tuple[list[dict], list[dict], int]:
    """(train, held-out, skipped) tokenised examples; a seeded split."""
    import random

    import polars as pl

    if not Path(dataset).exists():
        raise T0Error(f"SFT dataset {dataset} not found; build it with `t0 sft` (or pass --dataset).")
    rows = pl.read_parquet(dataset)
    if "messages" not in rows.columns:
        raise T0Error(f"{dataset} has no 'messages' column; it is not an SFT dataset made by `t0 sft`.")
    examples, skipped = [], 0
    for i, raw in enumerate(rows["messages"], start=1):
        try:
            messages = json.loads(raw)
        except json.JSONDecodeError:
            raise T0Error(f"{dataset} row {i}: field 'messages' is not valid JSON; rebuild the dataset with `t0 sft`.") from None
        example = tokenize_example(messages, tokenizer, config.block_size)
        if example is None:
            skipped += 1
        else:
            examples.append(example)
    if not examples:
        raise T0Error(f"no trainable tokens in {dataset}: all {rows.height} examples have prompts of at least "
                      f"block_size={config.block_size} tokens (or empty answers); raise train.block_size.")
    random.Random(config.seed).shuffle(examples)
    n_eval = int(round(len(examples) * config.eval_fraction)) if len(examples) > 1 else 0
    return examples[n_eval:], examples[:n_eval], skipped


@dataclass
class TrainResult:
    final_dir: Path
    train_loss: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    eval_loss: list[tuple[int, float]] = field(default_factory=list)
    global_step: int = 0
    resumed_from: str | None = None
    train_examples: int = 0
    eval_examples: int = 0
    skipped_examples: int = 0


def _load_model_and_tokenizer(config: TrainConfig, bf16: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(config.model)
        model = AutoModelForCausalLM.from_pretrained(config.model, dtype=torch.bfloat16 if bf16 else torch.float32)
    except (OSError, ValueError) as exc:
        raise T0Error(f"could not load model {config.model!r} ({exc.__class__.__name__}); pass an existing local path "
                      "or a name available offline with train.model.") from None
    if not getattr(tokenizer, "chat_template", None):
        raise T0Error(f"tokenizer of {config.model!r} has no chat template; use an instruct model.")
    if config.lora.enabled:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha,
                                                 lora_dropout=config.lora.dropout, task_type="CAUSAL_LM",
                                                 target_modules=config.lora.target_modules))
        if config.gradient_checkpointing:
            model.enable_input_require_grads()  # checkpointed frozen embeddings need grads to flow to adapters
    return model, tokenizer


def model_card(config: TrainConfig, result: TrainResult) -> str:
    last_eval = result.eval_loss[-1][1] if result.eval_loss else None
    return "\n".join([
        f"# Student model fine-tuned from {config.model}", "",
        "Supervised fine-tuning (s1-style) on teacher reasoning traces over retrieved documents, made by t0-pipeline.",
        "Loss on the assistant turn (thinking + answer) only.", "",
        f"- training examples: {result.train_examples}, held-out: {result.eval_examples}, "
        f"skipped (prompt ≥ block size): {result.skipped_examples}",
        f"- steps: {result.global_step}; final train loss: {result.train_loss[-1][1] if result.train_loss else 'n/a'}; "
        f"final held-out loss: {last_eval if last_eval is not None else 'n/a'}",
        f"- epochs {config.epochs}, lr {config.learning_rate} {config.lr_scheduler} (warmup {config.warmup_ratio:.0%}), "
        f"batch {config.per_device_batch_size}×{config.gradient_accumulation_steps} per device, block {config.block_size}, "
        f"weight decay {config.weight_decay}, betas {config.adam_beta1}/{config.adam_beta2}, "
        f"gradient checkpointing {config.gradient_checkpointing}, LoRA {config.lora.enabled}, "
        f"DeepSpeed {config.deepspeed or 'off'}",
        "", "Not medical advice: a research artefact for retrieval-augmented reasoning.", "",
    ])


def train(config: TrainConfig, dataset: Path, output_dir: Path) -> TrainResult:
    """Train (resuming from the newest checkpoint in ``output_dir`` if any) and save ``final/``."""
    import torch
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    cuda = torch.cuda.is_available()
    bf16 = config.bf16 == "on" or (config.bf16 == "auto" and cuda and torch.cuda.is_bf16_supported())
    if config.deepspeed is not None and not Path(config.deepspeed).is_file():
        raise T0Error(f"DeepSpeed config {config.deepspeed} not found; use slurm/deepspeed/zero3.json or unset train.deepspeed.")
    model, tokenizer = _load_model_and_tokenizer(config, bf16)
    train_rows, eval_rows, skipped = load_examples(dataset, tokenizer, config)
    output_dir = Path(output_dir)
    checkpoints = output_dir / "checkpoints"
    args = TrainingArguments(
        output_dir=str(checkpoints), num_train_epochs=config.epochs, max_steps=config.max_steps,
        learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_ratio,
        per_device_train_batch_size=config.per_device_batch_size, per_device_eval_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, weight_decay=config.weight_decay,
        adam_beta1=config.adam_beta1, adam_beta2=config.adam_beta2, bf16=bf16,
        gradient_checkpointing=config.gradient_checkpointing,
        eval_strategy="steps" if eval_rows else "no", eval_steps=config.eval_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps, seed=config.seed, report_to=[], remove_unused_columns=False,
        deepspeed=str(config.deepspeed) if config.deepspeed else None, use_cpu=not cuda, disable_tqdm=False,
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainer = Trainer(model=model, args=args, train_dataset=ListDataset(train_rows),
                      eval_dataset=ListDataset(eval_rows) if eval_rows else None, data_collator=pad_batch(pad_id or 0))
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last:
        log.info("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)

    result = TrainResult(final_dir=output_dir / "final", global_step=trainer.state.global_step, resumed_from=last,
                         train_examples=len(train_rows), eval_examples=len(eval_rows), skipped_examples=skipped)
    for entry in trainer.state.log_history:
        if "loss" in entry and not math.isnan(entry["loss"]):
            result.train_loss.append((entry["step"], float(entry["loss"])))
        if "eval_loss" in entry:
            result.eval_loss.append((entry["step"], float(entry["eval_loss"])))
    # every rank takes part in saving (ZeRO-3 gathers the shards); rank 0 swaps it into place
    staging = output_dir / ".final.tmp"
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        if config.lora.enabled:
            model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        (staging / "README.md").write_text(model_card(config, result), encoding="utf-8")
        old = output_dir / ".final.old"
        if result.final_dir.exists():
            result.final_dir.rename(old)
        staging.rename(result.final_dir)
        shutil.rmtree(old, ignore_errors=True)
        (output_dir / "metrics.json").write_text(json.dumps({
            "train_loss": result.train_loss, "eval_loss": result.eval_loss, "global_step": result.global_step,
            "resumed_from": result.resumed_from, "train_examples": result.train_examples,
            "eval_examples": result.eval_examples, "skipped_examples": skipped,
            "config": config.model_dump(mode="json")}, indent=2), encoding="utf-8")
    return result


def run_train(paths: DataPaths, config: TrainConfig, partition: str = "default") -> TrainResult:
    dataset = config.dataset or paths.sft_dir / "train.parquet"
    output = config.output_dir or paths.student_dir(partition)
    return train(config, dataset, output)


if __name__ == "__main__":
    from t0_pipeline.cli import run_stage

    run_stage("train")
