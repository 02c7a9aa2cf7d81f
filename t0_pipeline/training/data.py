"""Training examples: each SFT chat rendered with the student's own chat template and tokenised,
the prompt (system + user, plus the assistant header) apart from the completion so the boundary is
exact; every prompt token's label is -100. Examples longer than ``block_size`` are dropped and
counted, never cut; a seeded share is held out for evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from t0_pipeline.artifacts import T0Error, read_parquet
from t0_pipeline.chat import generation_prompt, render_chat
from t0_pipeline.config import TrainConfig

IGNORE = -100


def tokenize_example(
    messages: list[dict[str, str]], tokenizer, block_size: int
) -> dict[str, list[int]] | None:
    """input_ids / attention_mask / labels for one chat; None when it does not fit ``block_size``
    whole."""
    prompt = generation_prompt(messages[:-1], tokenizer)
    full = render_chat(messages, tokenizer)
    if not full.startswith(prompt):
        raise T0Error(
            "the tokenizer's chat template does not render the prompt as a prefix of the full "
            "chat, so the assistant turn cannot be located; use the student model's own instruct "
            "tokenizer."
        )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    if len(prompt_ids) + len(completion_ids) > block_size or not completion_ids:
        return None  # cutting would drop the answer: the example is left out and counted
    ids = prompt_ids + completion_ids
    labels = [IGNORE] * len(prompt_ids) + completion_ids
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


def load_examples(
    dataset: Path, tokenizer, config: TrainConfig
) -> tuple[list[dict], list[dict], int]:
    """(train, held-out, skipped) tokenised examples; a seeded split."""
    import random

    if not Path(dataset).exists():
        raise T0Error(
            f"SFT dataset {dataset} not found; build it with `t0 sft` (or pass --dataset)."
        )
    rows = read_parquet(dataset, "SFT dataset", "t0 sft")
    if "messages" not in rows.columns:
        raise T0Error(
            f"{dataset} has no 'messages' column; it is not an SFT dataset made by `t0 sft`."
        )
    examples, skipped = [], 0
    for i, raw in enumerate(rows["messages"], start=1):
        try:
            messages = json.loads(raw)
        except json.JSONDecodeError:
            raise T0Error(
                f"{dataset} row {i}: field 'messages' is not valid JSON; rebuild the dataset with "
                "`t0 sft`."
            ) from None
        example = tokenize_example(messages, tokenizer, config.block)
        if example is None:
            skipped += 1
        else:
            examples.append(example)
    if not examples:
        raise T0Error(
            f"no trainable tokens in {dataset}: all {rows.height} examples are longer than "
            f"block_size={config.block} tokens (or have empty answers); raise "
            "train.block_size."
        )
    random.Random(config.seed).shuffle(examples)
    n_eval = int(round(len(examples) * config.eval_fraction)) if len(examples) > 1 else 0
    return examples[n_eval:], examples[:n_eval], skipped
