"""SFT dataset: kept teacher traces → chat examples rendered with the student's chat template.

Input: ``traces.parquet``. Output: ``<data>/synthetic/sft/train.parquet`` (id, messages as
JSON, text, n_tokens; the trainer loads it directly), ``dataset.json`` (what made it: counts per
filter, teacher, prompt hashes, tokenizer, licence, the Parquet file's digest) and ``README.md``
(the dataset card made from it, :mod:`t0_pipeline.cards`).

Each example: a system turn holding the instructions and the retrieved documents (the
evaluation prompt, ``prompts/triage.txt``, at k > 0: students are evaluated on the format
they learn), a user turn with the demographics and the query, and an
assistant turn = thinking + answer wrapped in configurable markers (Qwen/s1 style
``<|im_start|>think`` … ``<|im_start|>answer`` by default; ``<think>…</think>`` is one
setting away). Nothing is masked here; the trainer masks everything but the assistant turn.
Examples longer than the block size are dropped or truncated, as configured, and counted.

Run it: ``t0 sft --data-dir DIR [--tokenizer PATH]``.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import polars as pl

from t0_pipeline.artifacts import (
    T0Error,
    atomic_path,
    file_digest,
    read_parquet,
    write_config_sidecar,
    write_json,
)
from t0_pipeline.cards import Provenance, dataset_card, dataset_info
from t0_pipeline.chat import ChatFormat, count_tokens, load_tokenizer, render_chat
from t0_pipeline.config import DataPaths, SFTConfig
from t0_pipeline.servers.base_models import public_name
from t0_pipeline.task import prompt as triage_prompt


def messages_for(
    trace: dict[str, Any], chat_format: ChatFormat, sections: dict[str, str]
) -> list[dict[str, str]]:
    """The evaluation prompt at k > 0 (``prompts/triage.txt``) over the documents the teacher
    saw, and the teacher's thinking and answer in the chat format budget forcing will ask the
    student for."""
    context = triage_prompt.with_documents(
        sections, trace["retrieved_titles"], trace["scores"], trace["retrieved_texts"]
    )
    return [
        *triage_prompt.messages(sections, context, trace["demographics"], trace["query"]),
        {"role": "assistant", "content": chat_format.assistant(trace["thinking"], trace["answer"])},
    ]


def build_sft(
    traces: pl.DataFrame,
    config: SFTConfig,
    tokenizer=None,
    prompts_dir=None,
    chat_format: ChatFormat | None = None,
) -> tuple[pl.DataFrame, dict]:
    sections, prompt_hash = triage_prompt.load(prompts_dir)
    chat_format = chat_format or ChatFormat()
    kept = traces.filter(pl.col("kept"))
    rows, dropped, truncated = [], 0, 0
    for trace in kept.iter_rows(named=True):
        messages = messages_for(trace, chat_format, sections)
        text = render_chat(messages, tokenizer)
        n = count_tokens(text, tokenizer)
        if n > config.block_size:
            if config.overlong == "drop":
                dropped += 1
                continue
            truncated += 1
            if tokenizer is not None:
                ids = tokenizer(text, add_special_tokens=False)["input_ids"][: config.block_size]
                text = tokenizer.decode(ids)
            else:
                text = " ".join(text.split(" ")[: config.block_size])
            n = config.block_size
        rows.append(
            {
                "id": trace["id"],
                "messages": json.dumps(messages, ensure_ascii=False),
                "text": text,
                "n_tokens": n,
            }
        )
    df = pl.DataFrame(
        rows,
        schema={"id": pl.String, "messages": pl.String, "text": pl.String, "n_tokens": pl.Int64},
    )
    lengths = df["n_tokens"].to_list()
    stats = {
        "traces": traces.height,
        "kept_traces": kept.height,
        "examples": df.height,
        "dropped_overlong": dropped,
        "truncated_overlong": truncated,
        "block_size": config.block_size,
        "tokens_mean": round(statistics.mean(lengths), 1) if lengths else 0,
        "tokens_p50": int(statistics.median(lengths)) if lengths else 0,
        "tokens_max": max(lengths) if lengths else 0,
        "token_counts": "tokenizer"
        if tokenizer is not None
        else "whitespace words (no tokenizer configured)",
        "student_prompt_hash": prompt_hash,
        "chat_format": chat_format.model_dump(),
    }
    return df, stats


def run_sft(
    paths: DataPaths,
    config: SFTConfig,
    prompts_dir=None,
    chat_format: ChatFormat | None = None,
    facts: Provenance | None = None,
) -> tuple[pl.DataFrame, dict]:
    """Write ``train.parquet``, ``dataset.json`` (what made it) and the card ``README.md``;
    ``facts``: the task and licence the card names (:func:`t0_pipeline.cards.provenance`)."""
    traces = read_parquet(paths.traces, "reasoning traces", "t0 traces")
    df, stats = build_sft(
        traces, config, load_tokenizer(config.tokenizer), prompts_dir, chat_format
    )
    if df.is_empty():
        raise T0Error(
            f"no SFT examples: {stats['kept_traces']} of {stats['traces']} traces kept, "
            f"{stats['dropped_overlong']} over the block size; loosen traces.keep or raise "
            "sft.block_size."
        )
    eval_file = paths.synthetic_queries("eval")
    eval_queries = (
        pl.scan_parquet(eval_file).select(pl.len()).collect().item()
        if (eval_file.exists())
        else None
    )
    info = dataset_info(
        stats, traces, facts or Provenance(), public_name(config.tokenizer), eval_queries
    )
    out = paths.sft_dir
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        df.write_parquet(tmp / "train.parquet")
        info["sha256"] = file_digest(tmp / "train.parquet")
        write_json(info, tmp / "dataset.json")
        (tmp / "README.md").write_text(dataset_card(info, config.overlong), encoding="utf-8")
    write_config_sidecar(out / "train.parquet", config)
    stats["sha256"] = info["sha256"]
    return df, stats
