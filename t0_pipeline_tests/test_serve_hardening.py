"""The service probed as an attacker and an unlucky client would: each guard here fails without
it."""

from __future__ import annotations

import asyncio
import json
import re
import stat
import time

import httpx

from t0_pipeline_tests.test_serve import reasoner_requests, served


def test_a_rebinding_host_header_is_refused_in_local_mode_and_named_hosts_pass(
    built, retriever, tmp_path
):
    with served(built, retriever, tmp_path) as (server, app, client):
        evil = {"Host": "rebind.evil.example"}
        assert client.post("/api/threads", json={}, headers=evil).status_code == 421
        assert client.get("/", headers=evil).status_code == 421
        assert client.get("/api/threads").json() == []  # the refused request created nothing
        port = client.base_url.port
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            assert client.get("/api/threads", headers={"Host": host}).status_code == 200
    with served(
        built, retriever, tmp_path, allowed_hosts=["chat.example.org", "*.example.net"]
    ) as (_, _, client):
        assert client.get("/healthz", headers={"Host": "chat.example.org"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "a.example.net:8443"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "example.org"}).status_code == 421


def test_security_headers_on_the_page_the_api_and_errors(built, retriever, tmp_path):
    with served(built, retriever, tmp_path) as (_, _, client):
        for response in (
            client.get("/"),
            client.get("/static/app.js"),
            client.get("/api/config"),
            client.get("/api/threads/nope"),
        ):
            csp = response.headers["content-security-policy"]
            assert (
                "script-src 'self'" in csp
                and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
            )
            assert "frame-ancestors 'none'" in csp
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
        page = client.get("/").text
        # no inline script: the CSP would block it
        assert not re.search(r"<script(?![^>]*\bsrc=)", page)
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", page)  # nor inline event handlers


def test_wrong_key_storms_are_rate_limited_per_address_and_real_keys_still_work(
    built, retriever, tmp_path
):
    with served(built, retriever, tmp_path, insecure_local=False, auth_failures_per_minute=10) as (
        _,
        app,
        client,
    ):
        _, key = app.state.store.create_key("alice")
        codes = [
            client.get(
                "/api/threads", headers={"Authorization": f"Bearer t0k_guess{i}"}
            ).status_code
            for i in range(30)
        ]
        assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
        limited = client.get("/api/threads")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert (
            client.get("/api/threads", headers={"Authorization": f"Bearer {key}"}).status_code
            == 200
        )


def test_chunked_oversize_bodies_get_413_and_blank_messages_422(built, retriever, tmp_path):
    with served(built, retriever, tmp_path, max_request_bytes=2000) as (server, _, client):
        tid = client.post("/api/threads", json={}).json()["id"]

        def chunks():  # no Content-Length: the size is only known while reading
            yield b'{"content": "'
            for _ in range(10):
                yield b"a" * 500
            yield b'"}'

        big = client.post(
            f"/api/threads/{tid}/messages",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
        assert big.status_code == 413 and "2000 bytes" in big.json()["detail"]
        small = client.post(
            f"/api/threads/{tid}/messages",
            content=iter([b'{"content": ', b'"sore toe"}']),
            headers={"Content-Type": "application/json"},
        )
        assert small.status_code == 200  # a chunked body under the limit is handed on whole
        for blank in ("   ", "\n\t "):
            r = client.post(f"/api/threads/{tid}/messages", json={"content": blank})
            assert r.status_code == 422 and "message is empty" in r.text
        r = client.post(
            "/v1/chat/completions",
            json={"model": "t0", "messages": [{"role": "user", "content": "  "}]},
        )
        assert r.status_code == 422
        # nothing stored for the refused ones
        assert len(client.get(f"/api/threads/{tid}").json()["messages"]) == 2


def test_deleting_a_thread_mid_turn_ends_its_stream_with_an_error_event(built, retriever, tmp_path):
    with served(built, retriever, tmp_path, latency_s=0.6) as (_, _, client):
        tid = client.post("/api/threads", json={}).json()["id"]
        events = []
        with client.stream(
            "POST", f"/api/threads/{tid}/messages/stream", json={"content": "sore toe"}
        ) as s:
            for line in s.iter_lines():
                if line.startswith("event: "):
                    events.append(line[7:])
                    if line == "event: search":
                        assert client.delete(f"/api/threads/{tid}").status_code == 204
                elif line.startswith("data: ") and events[-1] == "error":
                    error = json.loads(line[6:])
        assert events[-1] == "error" and "deleted" in error["message"]
        assert client.get(f"/api/threads/{tid}").status_code == 404


def test_an_answer_is_stored_even_when_the_client_has_gone(built, retriever, tmp_path):
    with served(built, retriever, tmp_path, latency_s=0.5) as (server, _, client):
        url = str(client.base_url)
        tid = client.post("/api/threads", json={}).json()["id"]

        async def leave_early():
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                async with c.stream(
                    "POST", f"/api/threads/{tid}/messages/stream", json={"content": "sore toe"}
                ) as s:
                    async for line in s.aiter_lines():
                        if line == "event: user":
                            return  # the browser tab is closed

        asyncio.run(leave_early())
        for _ in range(100):
            messages = client.get(f"/api/threads/{tid}").json()["messages"]
            if len(messages) == 2:
                break
            time.sleep(0.1)
    assert [(m["content"], m["status"]) for m in messages] == [
        ("sore toe", "ok"),
        ("Answer to: sore toe", "ok"),
    ]
    assert len(reasoner_requests(server)) == 1


def test_health_is_cached_and_the_database_is_private(built, retriever, tmp_path):
    with served(built, retriever, tmp_path) as (_, app, client):
        for _ in range(20):
            assert client.get("/healthz").status_code == 200
        # the start-up probe serves every hit within serve.health_cache_s
        assert app.state.probe.probes == 1
        tid = client.post("/api/threads", json={}).json()["id"]
        client.post(f"/api/threads/{tid}/messages", json={"content": "sore toe"})
    for name in ("conversations.sqlite", "conversations.sqlite-wal"):
        path = tmp_path / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, name


def test_personal_details_belong_to_the_key_and_prefill_new_threads(built, retriever, tmp_path):
    with served(built, retriever, tmp_path) as (server, _, client):
        assert client.get("/api/me/demographics").json() == {}
        client.put("/api/me/demographics", json={"age": 41, "occupation": "nurse"})
        thread = client.post("/api/threads", json={}).json()
        assert thread["demographics"] == {"age": 41, "occupation": "nurse"}
        client.put(
            f"/api/threads/{thread['id']}/demographics",
            json={"age": 41, "occupation": "nurse", "sex": "female"},
        )
        # per thread stays there
        assert client.get("/api/me/demographics").json() == {
            "age": 41,
            "occupation": "nurse",
        }
        other = client.post("/api/threads", json={"demographics": {"age": 9}}).json()
        assert other["demographics"] == {"age": 9}
        client.post(f"/api/threads/{thread['id']}/messages", json={"content": "sore toe"})
    assert '"sex": "female"' in reasoner_requests(server)[-1]["messages"][0]["content"]
