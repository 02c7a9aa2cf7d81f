"""`t0 serve` as real processes: two of them on one database behave as one service; a start warns
about model endpoints that do not answer; the first turn is as quick as later ones (warm start)."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import httpx
import pytest
import yaml

from t0_pipeline.serve.store import Store
from t0_pipeline_tests.fake_llm import FakeLLM
from t0_pipeline_tests.serving import free_port, script, start_serve, wait_serving
from t0_pipeline_tests.test_serve import reasoner_requests


def write_config(path: Path, api_base: str, db: Path, **serve) -> Path:
    roles = {
        r: {"model": f"openai/{r}", "api_base": api_base, "seed": None}
        for r in ("agent", "reasoner")
    }
    path.write_text(
        yaml.safe_dump(
            {"llm": {"roles": roles}, "serve": {"database_url": f"sqlite:///{db}", **serve}}
        )
    )
    return path


@pytest.fixture
def two_servers(built, tmp_path):
    _, paths = built
    with FakeLLM() as model:
        script(model, latency_s=0.05)
        db = tmp_path / "shared.sqlite"
        config = write_config(
            tmp_path / "serve.yaml",
            model.api_base,
            db,
            rate_limit_per_minute=6,
            rate_limit_burst=30,
        )
        procs = [start_serve(paths.root, config, tmp_path / f"serve{i}.log") for i in range(2)]
        try:
            for i, (proc, url) in enumerate(procs):
                wait_serving(proc, url, tmp_path / f"serve{i}.log")
            yield model, Store(f"sqlite:///{db}"), [url for _, url in procs]
        finally:
            for proc, _ in procs:
                proc.terminate()
                proc.wait(timeout=30)


def test_two_processes_on_one_database_serialise_a_thread_and_share_the_rate_limit(two_servers):
    model, store, (a, b) = two_servers
    _, key = store.create_key("alice")
    _, other = store.create_key("bob")
    auth = {"Authorization": f"Bearer {key}"}
    tid = httpx.post(f"{a}/api/threads", json={}, headers=auth).json()["id"]

    async def post(i: int) -> int:
        async with httpx.AsyncClient(timeout=120, headers=auth) as client:
            r = await client.post(
                f"{(a, b)[i % 2]}/api/threads/{tid}/messages", json={"content": f"turn {i} cough"}
            )
            return r.status_code

    async def main():
        return await asyncio.gather(*(post(i) for i in range(20)))

    assert asyncio.run(main()) == [200] * 20
    messages = httpx.get(f"{b}/api/threads/{tid}", headers=auth).json()["messages"]
    assert len(messages) == 40 and [m["role"] for m in messages] == ["user", "assistant"] * 20
    # each answer right after its own question
    for question, answer in zip(messages[::2], messages[1::2]):
        assert (
            answer["content"] == f"Answer to: {question['content']}" and question["status"] == "ok"
        )
    # none lost
    assert sorted(int(m["content"].split()[1]) for m in messages[::2]) == list(range(20))
    # every turn saw all the turns before it: the history sent grows by one exchange each time
    sizes = [len(r["messages"]) for r in reasoner_requests(model)]
    assert sizes == [2 + 2 * i for i in range(20)], sizes

    # the per-key rate limit (burst 30, 6 a minute) is one bucket for both processes, not one each
    async def hammer():
        async with httpx.AsyncClient(
            timeout=30, headers={"Authorization": f"Bearer {other}"}
        ) as client:
            return [
                (await client.get(f"{(a, b)[i % 2]}/api/threads")).status_code for i in range(50)
            ]

    codes = asyncio.run(hammer())
    assert 30 <= codes.count(200) <= 32 and codes.count(429) >= 18, codes


def test_start_warns_about_unreachable_models_and_the_first_turn_is_warm(built, tmp_path):
    _, paths = built
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = write_config(tmp_path / "dead.yaml", dead, tmp_path / "dead.sqlite")
    proc, url = start_serve(paths.root, config, tmp_path / "dead.log", "--insecure-local")
    try:
        wait_serving(proc, url, tmp_path / "dead.log")
        time.sleep(0.5)
        log = (tmp_path / "dead.log").read_text()
        for role in ("agent", "reasoner"):
            assert f"the {role} model (openai/{role}) does not answer at {dead}" in log, log
        tid = httpx.post(f"{url}/api/threads", json={}).json()["id"]
        started = time.monotonic()
        r = httpx.post(
            f"{url}/api/threads/{tid}/messages", json={"content": "sore toe"}, timeout=60
        )
        # fails fast, in plain words
        assert r.status_code == 502 and time.monotonic() - started < 10
        assert (
            r.json()["detail"]
            == "The assistant's model is not reachable right now; try again in a minute."
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    with FakeLLM() as model:
        script(model)
        config = write_config(tmp_path / "live.yaml", model.api_base, tmp_path / "live.sqlite")
        proc, url = start_serve(paths.root, config, tmp_path / "live.log", "--insecure-local")
        try:
            wait_serving(proc, url, tmp_path / "live.log")
            tid = httpx.post(f"{url}/api/threads", json={}).json()["id"]
            times = []
            for i in range(6):
                started = time.monotonic()
                assert (
                    httpx.post(
                        f"{url}/api/threads/{tid}/messages",
                        json={"content": f"sore toe {i}"},
                        timeout=60,
                    ).status_code
                    == 200
                )
                times.append(time.monotonic() - started)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    later = statistics.median(times[1:])
    # a cold first turn took 8 s against an instant model server
    assert times[0] < 3 * later + 0.5, times


def test_replicas_starting_together_on_a_fresh_database_all_open_it(tmp_path):
    """Each Store is its own engine and connection, as in separate processes: the loser of the race
    to create a table must not fail the start (it did, with "table api_keys already exists", in a CI
    run)."""
    import threading

    for round_ in range(5):
        url = f"sqlite:///{tmp_path / f'fresh{round_}.sqlite'}"
        gate, errors = threading.Barrier(6), []

        def open_store():
            gate.wait()
            try:
                Store(url).close()
            except Exception as exc:  # noqa: BLE001 - collected and asserted on below
                errors.append(str(exc))

        workers = [threading.Thread(target=open_store) for _ in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == []
        _, key = Store(url).create_key("after")
        assert Store(url).key_owner(key) is not None
