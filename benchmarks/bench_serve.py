"""The service's own overhead per message, and its throughput, with a model server that replies
instantly.

The ~700-page NHS extracts (../shared/bench/nhs/conditions.jsonl) are built once into
benchmarks/results/serve_data/ (reused on later runs). ``t0 serve`` then runs as its own
process with an API key, in front of the loopback OpenAI-compatible server (no latency), and
every message takes the full path: agent call → retrieval tool → reasoner stream →
persistence. Reported:

  1. per-message overhead p50/p99 = the server's own time (retrieval + prompt building +
     persistence + bookkeeping: total minus the two model calls), from each reply's
     ``timings_ms``; and client-observed latency p50/p99, one client;
  2. messages per second with 16 concurrent clients, each on its own thread;
  3. for scale, the very same searches run alone in this process right after, back to back and
     one every 0.1 s (the machine's speed drifts by tens of percent from minute to minute on a
     shared host, and a search after an idle pause is slower than one of a tight loop).

    PYTHONPATH=. python benchmarks/bench_serve.py [--messages 200] [--clients 16]

Figures are printed and written to benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import yaml  # noqa: E402

from t0_pipeline.config import DataPaths, PipelineConfig, SourceConfig  # noqa: E402
from t0_pipeline.serve.store import Store, default_url  # noqa: E402
from t0_pipeline_tests.fake_llm import FakeLLM  # noqa: E402
from t0_pipeline_tests.serving import free_port, script, start_serve, wait_serving  # noqa: E402

ROOT = Path(__file__).resolve().parent
NHS = ROOT.parents[0].parent / "shared" / "bench" / "nhs" / "conditions.jsonl"
RESULTS = ROOT / "results"
SYMPTOMS = [
    "a red, hot and swollen big toe",
    "itchy eyes and sneezing in summer",
    "a cough for three weeks",
    "burning when I pee",
    "a sudden severe headache and a stiff neck",
    "tummy pain after fatty meals",
    "a rash of small blisters on one side of my chest",
    "ringing in my ears",
    "feeling tired all the time",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def build(data: Path) -> None:
    paths = DataPaths(data)
    if paths.index_manifest("summaries").exists():
        return
    from t0_pipeline.corpus_to_index import build_all

    print(f"building the NHS index once into {data} (reused next time) …", flush=True)
    build_all(PipelineConfig(source=SourceConfig(kind="pages", location=str(NHS))), paths)


def start_server(data: Path, api_base: str, port: int) -> subprocess.Popen:
    config = data.parent / "serve_config.yaml"
    role = {"api_base": api_base, "seed": None, "timeout_s": 60}
    config.write_text(
        yaml.safe_dump(
            {
                "llm": {
                    "roles": {
                        "agent": {"model": "openai/agent", **role},
                        "reasoner": {"model": "openai/reasoner", **role},
                    }
                },
                "serve": {
                    "rate_limit_per_minute": 0,
                    "database_url": f"sqlite:///{data.parent / 'serve_bench.sqlite'}",
                },
            }
        )
    )
    log = data.parent / "serve_bench.log"
    proc, url = start_serve(data, config, log, port=port)
    try:
        wait_serving(proc, url, log, timeout_s=180, healthy=True)
    except AssertionError as exc:
        proc.kill()
        raise SystemExit(str(exc).splitlines()[0] + f"; see {log}") from None
    return proc


def message(i: int) -> str:
    return f"For two days I have had {SYMPTOMS[i % len(SYMPTOMS)]} (message {i})"


def searches_alone(data: Path, n: int, gap_s: float = 0.0) -> list[float]:
    """The searches the service ran (the scripted agent searches "symptoms: <message>"), timed
    alone: back to back, or with ``gap_s`` idle between them as in the service (caches and idle
    cores cool between messages)."""
    from t0_pipeline.config import load_config
    from t0_pipeline.retrieval.retrieve import Retriever

    cfg = load_config(None)
    retriever = Retriever("summaries", DataPaths(data), cfg.embedding, cfg.chroma, cfg.retrieval)
    retriever.search("warm-up")
    times = []
    for i in range(n):
        time.sleep(gap_s)
        started = time.perf_counter()
        retriever.search(f"symptoms: {message(i)}", 5, "hybrid")
        times.append((time.perf_counter() - started) * 1000)
    return times


async def client_run(
    url: str, key: str, n: int, clients: int
) -> tuple[list[float], list[dict], float]:
    headers = {"Authorization": f"Bearer {key}"}
    latencies: list[float] = []
    timings: list[dict] = []
    counter = iter(range(n))

    async def worker(client: httpx.AsyncClient, w: int) -> None:
        tid = (await client.post("/api/threads", json={"title": f"bench {w}"})).json()["id"]
        for i in counter:
            text = message(i)
            started = time.perf_counter()
            r = await client.post(f"/api/threads/{tid}/messages", json={"content": text})
            latencies.append((time.perf_counter() - started) * 1000)
            r.raise_for_status()
            timings.append(r.json()["message"]["timings_ms"])

    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=120, limits=httpx.Limits(max_connections=clients + 4)
    ) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client, w) for w in range(clients)))
        elapsed = time.perf_counter() - started
    return latencies, timings, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200, help="messages per phase")
    parser.add_argument(
        "--clients", type=int, default=16, help="concurrent clients in the throughput phase"
    )
    args = parser.parse_args()
    if not NHS.exists():
        raise SystemExit(f"{NHS} not found; the benchmark needs the shared NHS extracts.")
    data = RESULTS / "serve_data"
    build(data)
    key = Store(default_url(data.parent / "serve_bench.sqlite")).create_key("bench")[1]
    with FakeLLM() as model:
        script(model)  # replies instantly: what is measured is the service
        port = free_port()
        proc = start_server(data, model.api_base, port)
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(client_run(url, key, 20, 1))  # warm-up
            lat1, tim1, _ = asyncio.run(client_run(url, key, args.messages, 1))
            latn, _, elapsed = asyncio.run(client_run(url, key, args.messages, args.clients))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    alone = searches_alone(data, args.messages)
    spaced = searches_alone(data, args.messages, 0.1)
    own = [t["total"] - t.get("agent", 0) - t.get("reasoner", 0) for t in tim1]
    parts = {
        k: statistics.median(t[k] for t in tim1)
        for k in ("agent", "retrieval", "reasoner", "persist", "total")
    }
    result = {
        "documents": len(
            {json.loads(line)["slug"] for line in NHS.read_text().splitlines() if line.strip()}
        ),
        "messages": args.messages,
        "clients": args.clients,
        "overhead_ms_p50": round(percentile(own, 50), 1),
        "overhead_ms_p99": round(percentile(own, 99), 1),
        "client_latency_ms_p50": round(percentile(lat1, 50), 1),
        "client_latency_ms_p99": round(percentile(lat1, 99), 1),
        "median_parts_ms": {k: round(v, 1) for k, v in parts.items()},
        "concurrent_latency_ms_p50": round(percentile(latn, 50), 1),
        "concurrent_latency_ms_p99": round(percentile(latn, 99), 1),
        "messages_per_s": round(args.messages / elapsed, 1),
        "search_alone_ms_p50": round(percentile(alone, 50), 1),
        "search_alone_spaced_ms_p50": round(percentile(spaced, 50), 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\nt0 serve on {result['documents']} NHS pages, instant model server, {args.messages} "
        "messages per phase"
    )
    print(
        "  own overhead per message (retrieval + prompts + persistence): p50 "
        f"{result['overhead_ms_p50']} ms, p99 {result['overhead_ms_p99']} ms"
    )
    print(f"  median parts (ms): {result['median_parts_ms']}")
    print(
        f"  the same searches alone in one process: p50 {result['search_alone_ms_p50']} ms back to "
        f"back, {result['search_alone_spaced_ms_p50']} ms one every 0.1 s (in the service: "
        f"{result['median_parts_ms']['retrieval']} ms)"
    )
    print(
        f"  one client, end to end: p50 {result['client_latency_ms_p50']} ms, p99 "
        f"{result['client_latency_ms_p99']} ms"
    )
    print(
        f"  {args.clients} concurrent clients: {result['messages_per_s']} messages/s "
        f"(latency p50 {result['concurrent_latency_ms_p50']} ms, p99 "
        f"{result['concurrent_latency_ms_p99']} ms)"
    )


if __name__ == "__main__":
    main()
