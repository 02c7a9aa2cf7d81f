"""`t0 serve` as real processes: two of them on one database behave as one service; a start warns
about model endpoints that do not answer; the first turn is as quick as later ones (warm start)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from t0_pipeline.serve.store import Store
from t0_pipeline_tests.fake_llm import FakeLLM
from t0_pipeline_tests.serving import (
    REASONER_MARK,
    free_port,
    script,
    start_serve,
    wait_serving,
)
from t0_pipeline_tests.test_serve import reasoner_requests


def write_config(path: Path, api_base: str, database_url: str, chroma=None, **serve) -> Path:
    roles = {
        r: {"model": f"openai/{r}", "api_base": api_base, "seed": None}
        for r in ("agent", "reasoner")
    }
    # a chat reasoner (not a trained student): these tests are about the service itself
    serve = {"profiles": {"t0": {"student": None}}, **serve}
    config = {"llm": {"roles": roles}, "serve": {"database_url": database_url, **serve}}
    if chroma is not None:
        config["chroma"] = {"host": chroma.host, "port": chroma.port}
    path.write_text(yaml.safe_dump(config))
    return path


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgres_and_chroma_server"])
def deployment(request, tmp_path):
    """Where two `t0 serve` processes keep their state: (data dir, database URL, Chroma server
    config or None). ``sqlite``: the single-machine default (one SQLite file, the embedded index);
    ``postgres_and_chroma_server``: a team's (a PostgreSQL database, the indexes built into and
    searched in a Chroma server, no local vector store)."""
    if request.param == "sqlite":
        _, paths = request.getfixturevalue("built")
        yield paths, sqlite_url(tmp_path / "shared.sqlite"), None
        return
    from t0_pipeline.config import DataPaths, PipelineConfig
    from t0_pipeline.corpus_to_index import build_all
    from t0_pipeline_tests.chroma_server import ChromaServer

    postgres, embedder = request.getfixturevalue("postgres"), request.getfixturevalue("embedder")
    chroma = ChromaServer(tmp_path / "chroma-server").start()
    try:
        cfg = PipelineConfig(chroma=chroma.config)
        paths = DataPaths(tmp_path / "data")
        build_all(cfg, paths, embedder=embedder)
        assert not (paths.root / "index" / "chroma").exists()  # every vector is in the server
        yield paths, postgres.create_database(f"serve_{uuid.uuid4().hex[:8]}"), chroma.config
    finally:
        chroma.stop()


@pytest.fixture
def two_servers(deployment, tmp_path):
    paths, database_url, chroma = deployment
    with FakeLLM() as model:
        script(model, latency_s=0.05)
        config = write_config(
            tmp_path / "serve.yaml",
            model.api_base,
            database_url,
            chroma,
            rate_limit_per_minute=6,
            rate_limit_burst=30,
        )
        procs = [start_serve(paths.root, config, tmp_path / f"serve{i}.log") for i in range(2)]
        try:
            for i, (proc, url) in enumerate(procs):
                wait_serving(proc, url, tmp_path / f"serve{i}.log", healthy=True)
            yield model, Store(database_url), [url for _, url in procs]
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
        # searched in this deployment's index (the Chroma server's, in the team deployment)
        assert answer["sources"] and all(source["slug"] for source in answer["sources"]), answer
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
    config = write_config(tmp_path / "dead.yaml", dead, sqlite_url(tmp_path / "dead.sqlite"))
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
        config = write_config(
            tmp_path / "live.yaml", model.api_base, sqlite_url(tmp_path / "live.sqlite")
        )
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


def open_together(url: str, replicas: int = 6) -> list[str]:
    """Replicas opening one fresh database at the same moment, each Store its own engine and
    connection as in separate processes; the errors they met."""
    import threading

    gate, errors = threading.Barrier(replicas), []

    def open_store():
        gate.wait()
        try:
            Store(url).close()
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(str(exc))

    workers = [threading.Thread(target=open_store) for _ in range(replicas)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return errors


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_replicas_starting_together_on_a_fresh_database_all_open_it(database, tmp_path, request):
    """The loser of the race to create a table must not fail the start (it did, with "table
    api_keys already exists", in a CI run; on PostgreSQL the loser gets a duplicate-type error)."""
    for round_ in range(5 if database == "sqlite" else 3):
        if database == "sqlite":
            url = sqlite_url(tmp_path / f"fresh{round_}.sqlite")
        else:
            url = request.getfixturevalue("postgres").create_database(
                f"fresh_{uuid.uuid4().hex[:8]}"
            )
        assert open_together(url) == []
        _, key = Store(url).create_key("after")
        assert Store(url).key_owner(key) is not None


def test_postgres_down_or_refusing_is_one_line_naming_the_cause_without_the_password(postgres):
    from t0_pipeline.artifacts import T0Error
    from t0_pipeline_tests.postgres import PASSWORD

    url = postgres.create_database(f"conv_{uuid.uuid4().hex[:8]}")
    with pytest.raises(T0Error) as wrong:
        Store(url.replace(PASSWORD, "not-the-password"))
    with pytest.raises(T0Error) as missing:
        Store(url.rsplit("/", 1)[0] + "/no_such_db")
    closed = f"postgresql://t0:{PASSWORD}@127.0.0.1:{free_port()}/conv"
    started = time.monotonic()
    with pytest.raises(T0Error) as down:
        Store(closed)
    assert time.monotonic() - started < 30
    for caught, cause in (
        (wrong, "the password was refused"),
        (missing, "that database does not exist"),
        (down, "nothing answers there"),
    ):
        message = str(caught.value)
        assert cause in message and "serve.database_url" in message, message
        assert "\n" not in message and PASSWORD not in message and "not-the-password" not in message
        assert "t0:***@127.0.0.1" in message


def test_postgres_stopped_mid_turn_fails_the_turn_and_it_can_be_sent_again(tmp_path, built):
    """PostgreSQL goes down (fast shutdown: connections cut) while the reasoner writes its answer.
    The request ends promptly with 503 and a plain sentence, the service answers 503 (not 500)
    while the database is away, and once it is back the message reads as failed, not pending,
    and sending it again gets its answer."""
    from t0_pipeline.serve.turns import STORE_DOWN
    from t0_pipeline_tests.postgres import PostgresServer

    _, paths = built
    postgres = PostgresServer().start()
    try:
        url = postgres.create_database("conversations")
        _, key = Store(url).create_key("alice")
        auth = {"Authorization": f"Bearer {key}"}
        with FakeLLM() as model:
            stops = []

            def stop_database_then_answer(messages):
                if not stops:  # the first turn only
                    stops.append(time.monotonic())
                    postgres.stop()
                return f"Answer to: {messages[-1]['content']}"

            model.on(REASONER_MARK, stop_database_then_answer)
            script(model)
            config = write_config(tmp_path / "pg.yaml", model.api_base, url, turn_lease_s=3)
            proc, base = start_serve(paths.root, config, tmp_path / "pg.log")
            try:
                wait_serving(proc, base, tmp_path / "pg.log")
                tid = httpx.post(f"{base}/api/threads", json={}, headers=auth).json()["id"]
                started = time.monotonic()
                reply = httpx.post(
                    f"{base}/api/threads/{tid}/messages",
                    json={"content": "a cough for weeks"},
                    headers=auth,
                    timeout=120,
                )
                assert stops and time.monotonic() - started < 60
                assert reply.status_code == 503 and reply.json()["detail"] == STORE_DOWN, reply.text
                failed_id = reply.json()["message_id"]
                assert "nothing answers there" in reply.json()["technical"]
                # while it is down: every request is a 503 in plain words, never a 500
                listing = httpx.get(f"{base}/api/threads", headers=auth, timeout=30)
                assert listing.status_code == 503 and listing.json()["detail"] == STORE_DOWN
                assert listing.headers["retry-after"]

                postgres.start()
                time.sleep(3.5)  # the turn's lease (3 s) lapses: no process runs that turn now
                history = httpx.get(f"{base}/api/threads/{tid}", headers=auth, timeout=30).json()
                assert [(m["role"], m["status"]) for m in history["messages"]] == [
                    ("user", "failed")
                ]
                again = httpx.post(
                    f"{base}/api/threads/{tid}/messages",
                    json={"content": "a cough for weeks", "retry_of": failed_id},
                    headers=auth,
                    timeout=120,
                )
                assert again.status_code == 200, again.text
                history = httpx.get(f"{base}/api/threads/{tid}", headers=auth, timeout=30).json()
                assert [(m["role"], m["status"], m["content"]) for m in history["messages"]] == [
                    ("user", "ok", "a cough for weeks"),
                    ("assistant", "ok", "Answer to: a cough for weeks"),
                ]
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            assert "Traceback" not in (tmp_path / "pg.log").read_text()
    finally:
        postgres.close()
