"""Fine-tune a student on the SFT dataset (s1-style): loss on the assistant turn only.

Input: ``<data>/synthetic/sft/train.parquet`` (``messages`` as JSON) and a base model (name
or local path). Output under the output directory: ``checkpoints/run-<digest>/`` (for resuming
after preemption; one folder per training settings, so a run with other settings starts afresh:
:mod:`t0_pipeline.training.runs`), ``final/`` (a consolidated Hugging Face model + tokenizer +
``README.md`` model card that loads with plain ``from_pretrained``, renamed into place when
complete), ``metrics.json`` (losses, world size, throughput, memory, parameters held per rank) and
``logs/rank-<N>.error`` for a rank that failed.

Examples come from :mod:`t0_pipeline.training.data` (loss on the completion only, examples longer
than ``block_size`` left out and counted, never cut). A held-out split is evaluated every
``eval_steps`` (the reference implementation evaluated on its training set). What ranks share
and record is in :mod:`t0_pipeline.training.ranks`.

Before the model loads, the run's memory plan (:mod:`t0_pipeline.training.plan`) is made for its
longest example on this node's GPU and logged; ``train.loss: auto`` takes the chunked loss
(:mod:`t0_pipeline.training.loss`; Liger Kernel's fused one where installed) and ``train.deepspeed:
auto`` optimizer offload only when the plan needs them. ``metrics.json`` records tokens/s per GPU
and MFU against the GPU's dense bf16 peak (:mod:`t0_pipeline.training.gpus`).

Run on one process or under torchrun: several processes fine-tuning all weights use DeepSpeed
ZeRO-3 by default (``train.deepspeed: auto``), with ``TrainingArguments`` built before the model
so ZeRO-3 shards it while loading. On CPU ranks DeepSpeed uses gloo (``DS_ACCELERATOR=cpu``).
When ``$T0_STOP_FILE`` appears (the Slurm job script creates it before the time limit), every
rank saves a checkpoint at the next step and stops; the requeued job resumes from it.
Needs no Dagster: a Slurm node runs ``python -m t0_pipeline train --config t0.yaml``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, TrainConfig
from t0_pipeline.servers.base_models import public_name
from t0_pipeline.trackers import log_settings, tracking
from t0_pipeline.trackers import run_name as tracker_run_name
from t0_pipeline.training.data import ListDataset, load_examples, pad_batch
from t0_pipeline.training.loss import use_chunked_loss
from t0_pipeline.training.model_card import CardContext, read_dataset_info
from t0_pipeline.training.plan import choose_settings, join_deepspeed
from t0_pipeline.training.ranks import (
    close_process_group,
    gather_per_rank,
    gathered_digest,
    memory_now_gb,
    parameter_counts,
    rank,
    record_failure,
    reset_peak_memory,
    stop_file_callback,
    world_size,
)
from t0_pipeline.training.result import TrainResult, read_state, throughput
from t0_pipeline.training.runs import last_complete_checkpoint, record_run, run_dir

log = logging.getLogger(__name__)


def _cannot_load(config: TrainConfig, exc: Exception) -> T0Error:
    return T0Error(
        f"could not load model {config.model!r} ({exc.__class__.__name__}); pass an existing local "
        "path or a name available offline with train.model."
    )


def _load_tokenizer(config: TrainConfig):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(config.model)
    except (OSError, ValueError) as exc:
        raise _cannot_load(config, exc) from None
    if not getattr(tokenizer, "chat_template", None):
        raise T0Error(f"tokenizer of {config.model!r} has no chat template; use an instruct model.")
    return tokenizer


def _load_model(config: TrainConfig, bf16: bool):
    """Called after TrainingArguments exist: with ZeRO-3 active, from_pretrained shards while
    loading."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            config.model, dtype=torch.bfloat16 if bf16 else torch.float32
        )
    except (OSError, ValueError) as exc:
        raise _cannot_load(config, exc) from None
    if config.lora.enabled:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=config.lora.r,
                lora_alpha=config.lora.alpha,
                lora_dropout=config.lora.dropout,
                task_type="CAUSAL_LM",
                target_modules=config.lora.target_modules,
            ),
        )
        if config.gradient_checkpointing:
            # checkpointed frozen embeddings need grads to flow to adapters
            model.enable_input_require_grads()
    return model


def train(
    config: TrainConfig,
    dataset: Path,
    output_dir: Path,
    callbacks: list | None = None,
    card: CardContext | None = None,
    run_name: str | None = None,
) -> TrainResult:
    """Train (resuming from the newest checkpoint in ``output_dir`` if any) and save ``final/``
    with its card (``card``: what the card says beyond training; ``run_name``: the trackers')."""
    output_dir = Path(output_dir)
    logs = output_dir / "logs"
    (logs / f"rank-{rank()}.error").unlink(missing_ok=True)
    card = card or CardContext(base_model=public_name(config.model) or config.model)
    name = run_name or tracker_run_name(card.size)
    try:
        with tracking(config.report_to, output_dir, name, "train.report_to") as report_to:
            result = _train(config, dataset, output_dir, callbacks or [], card, report_to, name)
    except BaseException as exc:
        if world_size() > 1 and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            record_failure(logs, exc)
        raise
    close_process_group()
    return result


def _train(
    config: TrainConfig,
    dataset: Path,
    output_dir: Path,
    callbacks: list,
    card: CardContext,
    report_to: list[str],
    name: str,
) -> TrainResult:
    import torch
    from transformers import Trainer

    cuda = torch.cuda.is_available()
    bf16 = config.bf16 == "on" or (
        config.bf16 == "auto" and cuda and torch.cuda.is_bf16_supported()
    )
    processes = world_size()
    tokenizer = _load_tokenizer(config)
    train_rows, eval_rows, skipped = load_examples(dataset, tokenizer, config)
    rows = train_rows + eval_rows
    chosen = choose_settings(config, processes, max(len(r["input_ids"]) for r in rows), cuda)
    if rank() == 0:
        log.info("%s", chosen.said)
    ds_config = chosen.deepspeed
    join_deepspeed(ds_config, processes, cuda)
    # a folder per training settings: a run resumes only checkpoints trained the same way
    checkpoints, settings = run_dir(config, dataset, output_dir)
    # TrainingArguments first: with a ZeRO-3 config they switch on sharded loading for
    # from_pretrained below
    args = _training_arguments(config, checkpoints, bf16, cuda, bool(eval_rows), ds_config)
    args.report_to, args.run_name = [t for t in report_to if t != "none"], name
    if chosen.loss == "liger":
        args.use_liger_kernel = True
    baseline = memory_now_gb(cuda)
    model = _load_model(config, bf16)
    if chosen.loss == "chunked":
        use_chunked_loss(model, config.loss_chunk_tokens)
    # the trackers log these as the run's parameters; taken off before anything is saved
    untrack = log_settings(model, {**card.tracked(), "train": config.model_dump(mode="json")})
    stop = stop_file_callback(os.environ.get("T0_STOP_FILE"))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ListDataset(train_rows),
        eval_dataset=ListDataset(eval_rows) if eval_rows else None,
        data_collator=pad_batch(_pad_id(tokenizer)),
        callbacks=[stop, *callbacks],
    )
    last = last_complete_checkpoint(checkpoints)
    if last:
        log.info("resuming from %s", last)
    if trainer.is_world_process_zero():
        record_run(checkpoints, settings)
    held = gather_per_rank(parameter_counts(model))
    loaded = memory_now_gb(cuda)
    reset_peak_memory(cuda)
    started = time.time()
    trainer.train(resume_from_checkpoint=last)
    seconds = time.time() - started
    untrack()
    result = TrainResult(
        final_dir=output_dir / "final",
        global_step=trainer.state.global_step,
        resumed_from=last,
        train_examples=len(train_rows),
        eval_examples=len(eval_rows),
        skipped_examples=skipped,
        world_size=processes,
        device="cuda" if cuda else "cpu",
        deepspeed=ds_config.name if ds_config else None,
        train_seconds=round(seconds, 3),
        params_per_rank=[h[0] for h in held],
        params_total=held[0][1],
        preempted=stop.stopped,
        loss=chosen.loss,
        memory_plan=chosen.plan.as_dict() if chosen.plan else {},
        baseline_memory_gb=gather_per_rank(baseline),
        loaded_memory_gb=gather_per_rank(loaded),
    )
    read_state(result, trainer.state, seconds, cuda)
    throughput(result, config.model, rows)
    if stop.stopped:
        message = "stopped at step %d with a checkpoint in %s; a re-run resumes from it"
        log.warning(message, result.global_step, checkpoints)
        return result
    zero3 = ds_config is not None and trainer.is_deepspeed_enabled
    if not config.lora.enabled:
        result.weights_digest = gathered_digest(model, zero3, trainer.is_world_process_zero())
    data = read_dataset_info(dataset)
    if data and data.get("sha256") != settings["dataset_sha256"]:
        data = None  # dataset.json describes another file
    _save_final(config, trainer, model, tokenizer, output_dir, result, card, data)
    return result


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    return (pad if pad is not None else tokenizer.eos_token_id) or 0


def _training_arguments(
    config: TrainConfig,
    checkpoints: Path,
    bf16: bool,
    cuda: bool,
    evaluate: bool,
    ds_config: Path | None,
):
    from transformers import TrainingArguments

    checkpointing = config.gradient_checkpointing
    return TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        weight_decay=config.weight_decay,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        bf16=bf16,
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        seed=config.seed,
        report_to=["none"],
        remove_unused_columns=False,
        deepspeed=str(ds_config) if ds_config else None,
        use_cpu=not cuda,
        disable_tqdm=False,
        include_num_input_tokens_seen=True,
        # evaluation reports the held-out loss only: no vocabulary-wide logits kept per example
        prediction_loss_only=True,
    )


def _save_final(
    config: TrainConfig, trainer, model, tokenizer, output_dir: Path, result, ctx, data
):
    """Every rank takes part in saving (ZeRO-3 gathers the 16-bit weights into one checkpoint);
    rank 0 adds the tokenizer, model card, generation settings and loss curve, and swaps ``final/``
    in whole."""
    from t0_pipeline.training.model_card import loss_plot, model_card, write_generation_config
    from t0_pipeline.weights import weights_digest

    staging = output_dir / ".final.tmp"
    trainer.save_model(str(staging))
    if not trainer.is_world_process_zero():
        return
    if config.lora.enabled:
        model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    write_generation_config(staging, ctx, tokenizer)
    plot = loss_plot(result, output_dir / "loss.png", f"t0-{ctx.size or 'student'}: loss by step")
    if plot is not None:
        shutil.copy2(plot, staging / "loss.png")
    text = model_card(ctx, config, result, data, weights_digest(staging))
    (staging / "README.md").write_text(text, encoding="utf-8")
    old = output_dir / ".final.old"
    if result.final_dir.exists():
        result.final_dir.rename(old)
    staging.rename(result.final_dir)
    shutil.rmtree(old, ignore_errors=True)
    metrics = result.metrics()
    metrics["config"] = config.model_dump(mode="json")
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")


def run_train(
    paths: DataPaths,
    config: TrainConfig,
    partition: str = "default",
    callbacks: list | None = None,
    card: CardContext | None = None,
    run_name: str | None = None,
) -> TrainResult:
    dataset = config.dataset or paths.sft_dir / "train.parquet"
    output = config.output_dir or paths.student_dir(partition)
    return train(config, dataset, output, callbacks, card, run_name)
