"""LLM client throughput against the loopback OpenAI-compatible server, and warm-cache re-runs.

  1. N calls (default 2,000) at concurrency C (default 32) against a server with a fixed
     reply latency L (default 200 ms); target: wall time ≤ 1.15 × ideal (N × L / C).
     Two baselines are measured in the same run, against the same server: a bare aiohttp
     client (the server's own floor) and bare ``litellm.acompletion`` (litellm's floor),
     so the client's own overhead can be told apart from the transport's;
  2. the same run again with the cache warm; target: zero calls, finishes in seconds.

    PYTHONPATH=. python benchmarks/bench_llm.py [--calls 2000] [--concurrency 32] [--latency 0.2]

(`make bench` sets PYTHONPATH.) The server (t0_pipeline_tests/fake_llm.py) runs in its own
process, as a model server would, so the real litellm code path is what is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from t0_pipeline.config import LLMConfig, RoleConfig
from t0_pipeline.llm.cache import LLMCache
from t0_pipeline.llm.calls import litellm_module
from t0_pipeline.llm.client import LLMClient

RESULTS = Path(__file__).resolve().parent / "results"


async def _gather_bounded(n: int, concurrency: int, call) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int):
        async with gate:
            await call(i)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - started


def bare_aiohttp(api_base: str, calls: int, concurrency: int) -> float:
    import aiohttp

    async def main() -> float:
        async with aiohttp.ClientSession() as session:

            async def call(i: int):
                async with session.post(
                    f"{api_base}/chat/completions",
                    json={"model": "x", "messages": [{"role": "user", "content": f"raw {i}"}]},
                ) as r:
                    await r.json()

            await call(-1)
            return await _gather_bounded(calls, concurrency, call)

    return asyncio.run(main())


def bare_litellm(api_base: str, calls: int, concurrency: int) -> float:
    litellm = litellm_module()
    litellm.register_model(
        {
            "bare": {
                "input_cost_per_token": 0.0,
                "output_cost_per_token": 0.0,
                "litellm_provider": "openai",
                "mode": "chat",
            }
        }
    )

    async def call(i: int):
        await litellm.acompletion(
            model="openai/bare",
            api_base=api_base,
            api_key="none",
            num_retries=0,
            messages=[{"role": "user", "content": f"bare {i}"}],
        )

    async def main() -> float:
        await call(-1)
        return await _gather_bounded(calls, concurrency, call)

    return asyncio.run(main())


def client_run(client: LLMClient, calls: int) -> float:
    client.usage = type(client.usage)()

    async def one(i: int):
        return await client.complete([{"role": "user", "content": f"benchmark prompt {i}"}])

    started = time.perf_counter()
    replies = client.run(list(range(calls)), one, "bench")
    elapsed = time.perf_counter() - started
    failed = sum(1 for r in replies if not r.ok)
    if failed:
        raise SystemExit(f"{failed} calls failed; the figures would be meaningless")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2, help="server reply latency, seconds")
    args = parser.parse_args()
    ideal = args.calls * args.latency / args.concurrency
    server = subprocess.Popen(
        [sys.executable, "-m", "t0_pipeline_tests.fake_llm", "--latency", str(args.latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    api_base = server.stdout.readline().strip()
    try:
        raw = bare_aiohttp(api_base, args.calls, args.concurrency)
        bare = bare_litellm(api_base, args.calls, args.concurrency)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = LLMConfig(
                roles={
                    "teacher": RoleConfig(model="openai/bench", api_base=api_base, timeout_s=30)
                },
                concurrency=args.concurrency,
            )
            client = LLMClient("teacher", cfg, LLMCache(Path(tmp) / "cache.sqlite"))
            client.start()
            cold = client_run(client, args.calls)
            cold_requests = client.usage.requests
            warm = client_run(client, args.calls)
            warm_requests, warm_hits = client.usage.requests, client.usage.cache_hits
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    result = {
        "calls": args.calls,
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "ideal_s": round(ideal, 2),
        "bare_aiohttp_s": round(raw, 2),
        "bare_litellm_s": round(bare, 2),
        "client_cold_s": round(cold, 2),
        "client_over_ideal": round(cold / ideal, 3),
        "client_over_bare_litellm": round(cold / bare, 3),
        "cold_requests": cold_requests,
        "warm_s": round(warm, 2),
        "warm_requests": warm_requests,
        "warm_cache_hits": warm_hits,
    }
    print(
        f"{args.calls} calls, concurrency {args.concurrency}, server latency "
        f"{args.latency * 1000:.0f} ms; ideal {ideal:.2f}s"
    )
    print(f"  bare aiohttp (server floor):  {raw:.2f}s = {raw / ideal:.3f}× ideal")
    print(f"  bare litellm.acompletion:     {bare:.2f}s = {bare / ideal:.3f}× ideal")
    print(
        f"  t0 LLM client, cold cache:    {cold:.2f}s = {cold / ideal:.3f}× ideal (target ≤ 1.15), "
        f"{cold / bare:.3f}× bare litellm, {cold_requests} requests"
    )
    print(
        f"  t0 LLM client, warm cache:    {warm:.2f}s, {warm_requests} requests, {warm_hits} cache "
        "hits (target: 0 requests)"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "llm.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
