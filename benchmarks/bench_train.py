"""Student-training throughput: tokens/s, peak memory and model FLOPs utilisation of the real
trainer.

Builds a model from a config in the shape of a Qwen2.5 student (no weights are downloaded), an SFT
dataset of full-length chats, and runs ``t0_pipeline.training.train.train`` for a few steps with and
without gradient checkpointing. On one GPU the default is the 0.5B shape at block size 8,192 under
DeepSpeed ZeRO-3 (target: MFU >= 35% on one H100); on CPU use ``--shape tiny`` to check that the
script runs.

    python benchmarks/bench_train.py                                  # GPU: 0.5B, block 8192,
    ZeRO-3 python benchmarks/bench_train.py --shape tiny --block 256 --steps 3 --deepspeed none   #
    CPU smoke run

MFU counts the model's FLOPs per token as 6 × (parameters outside the input embedding) plus 12 ×
layers × hidden × block / 2 for causal attention, against the GPU's dense bf16 peak (--peak-tflops;
989 for H100/H200 SXM). Recomputation under gradient checkpointing is not counted, by convention.
Figures are printed as a table and written to benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _qwen25(size: str) -> dict:
    """A Qwen2.5 student's config.json figures (t0_pipeline.servers.model_shape.QWEN25)."""
    from t0_pipeline.servers.model_shape import QWEN25

    hidden, layers, inter, heads, kv, vocab, tied = QWEN25[size]
    return dict(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        tie_word_embeddings=tied,
    )


SHAPES = {  # Qwen2.5-0.5B and 1.5B shapes (151,936-token vocabulary); tiny for CPU smoke runs
    "0.5B": _qwen25("0.5B"),
    "1.5B": _qwen25("1.5B"),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=2048,
        tie_word_embeddings=True,
    ),
}


def build(root: Path, shape: str, block: int, rows: int) -> tuple[Path, Path, dict]:
    """A random-initialised model + word-level ChatML tokenizer in ``root/model`` and an SFT parquet
    of full blocks."""
    import polars as pl
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from t0_pipeline_tests.conftest import build_tiny_tokenizer

    words = [f"w{i}" for i in range(1000)]
    tok = build_tiny_tokenizer(root / "model", " ".join(words))
    dims = SHAPES[shape]
    config = Qwen2Config(
        **dims,
        max_position_embeddings=max(block, 32768),
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        torch_dtype="bfloat16" if torch.cuda.is_available() else "float32",
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "model")
    # ~16 tokens of chat scaffolding; the rest split 3:1 between question and answer, so each chat
    # fills the block
    room = block - 16
    chats = []
    for r in range(rows):
        text = [words[(r * 7 + i) % len(words)] for i in range(room)]
        chats.append(
            json.dumps(
                [
                    {"role": "user", "content": " ".join(text[: room * 3 // 4])},
                    {"role": "assistant", "content": " ".join(text[room * 3 // 4 :])},
                ]
            )
        )
    pl.DataFrame({"messages": chats}).write_parquet(root / "sft.parquet")
    return root / "model", root / "sft.parquet", dims


def model_flops_per_token(dims: dict, block: int) -> float:
    """6·N + causal attention per token, as the trainer's MFU counts it (model_shape)."""
    from t0_pipeline.servers.model_shape import shape_from_config

    return shape_from_config({**dims, "model_type": "qwen2"}).train_flops_per_token(block)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="0.5B")
    parser.add_argument("--block", type=int, default=8192, help="tokens per example (block size)")
    parser.add_argument(
        "--steps", type=int, default=12, help="optimizer steps per run (the first 2 are warm-up)"
    )
    parser.add_argument("--deepspeed", default="zero3", help="zero3, zero3_offload or none")
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM: 989)"
    )
    args = parser.parse_args()
    for key, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29533",
    }.items():
        # DeepSpeed wants a (one-process) process group even on one GPU
        os.environ.setdefault(key, value)

    import torch

    from t0_pipeline.config import TrainConfig
    from t0_pipeline.training.train import train

    rows, device = [], torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        model, dataset, dims = build(Path(tmp), args.shape, args.block, args.steps + 2)
        per_token = model_flops_per_token(dims, args.block)
        for checkpointing in (False, True):
            config = TrainConfig(
                model=str(model),
                block_size=args.block,
                max_steps=args.steps,
                epochs=1,
                warmup_ratio=0.0,
                eval_fraction=0.0,
                save_steps=10**6,
                logging_steps=1,
                gradient_checkpointing=checkpointing,
                deepspeed=args.deepspeed,
                learning_rate=1e-5,
            )
            out = Path(tmp) / f"run-{checkpointing}"
            try:
                result = train(config, dataset, out)
            except Exception as exc:  # out of memory without checkpointing is a result too
                rows.append(
                    {
                        "gradient_checkpointing": checkpointing,
                        "error": f"{exc.__class__.__name__}: {exc}"[:200],
                    }
                )
                torch.cuda.empty_cache() if torch.cuda.is_available() else None
                continue
            tps = result.tokens_per_second
            mfu = tps * per_token / (args.peak_tflops * 1e12) if device != "cpu" else None
            rows.append(
                {
                    "gradient_checkpointing": checkpointing,
                    "tokens_per_second": tps,
                    "peak_memory_gb": max(result.peak_memory_gb),
                    "mfu": round(mfu, 3) if mfu else None,
                    "steps": result.global_step,
                    "params": result.params_total,
                    "deepspeed": result.deepspeed,
                }
            )
    print(
        f"\nstudent training, {args.shape} shape, block {args.block}, {args.deepspeed}, on {device}"
    )
    print(f"{'grad ckpt':>9} {'tokens/s':>10} {'peak GB':>8} {'MFU':>6}")
    for row in rows:
        if "error" in row:
            print(f"{str(row['gradient_checkpointing']):>9}  failed: {row['error']}")
        else:
            mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "n/a"
            print(
                f"{str(row['gradient_checkpointing']):>9} {row['tokens_per_second']:>10.0f} "
                f"{row['peak_memory_gb']:>8.2f} {mfu:>6}"
            )
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "train.json").write_text(
        json.dumps(
            {
                "shape": args.shape,
                "block": args.block,
                "device": device,
                "flops_per_token": per_token,
                "runs": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
