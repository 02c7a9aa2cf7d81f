"""The service through uvicorn on loopback, with the loopback model server as agent and reasoner."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import httpx
import pytest

from t0_pipeline.config import RoleConfig, ServeProfile
from t0_pipeline.serve.agent import UNREACHABLE, ChatService, fit_history
from t0_pipeline.serve.app import create_app
from t0_pipeline.serve.store import Store
from t0_pipeline_tests.fake_llm import FakeLLM, budget_student
from t0_pipeline_tests.serving import AGENT_MARK, REASONER_MARK, free_port, running, script


def make_app(
    built, retriever, tmp_path, api_base, insecure_local=True, reasoner_api_base=None, **serve
):
    cfg, paths = built
    cfg = cfg.model_copy(deep=True)
    cfg.llm.max_attempts, cfg.llm.backoff_s = 1, 0.01
    for role in ("agent", "reasoner"):
        base = reasoner_api_base if role == "reasoner" and reasoner_api_base else api_base
        cfg.llm.roles[role] = RoleConfig(model=f"openai/{role}", api_base=base, seed=None)
    # a chat reasoner unless a test names its profiles (the student's are tested on their own)
    cfg.serve.profiles = serve.pop("profiles", None) or {"t0": ServeProfile(student=None)}
    cfg.serve.database_url = f"sqlite:///{tmp_path / 'conversations.sqlite'}"
    for key, value in serve.items():
        setattr(cfg.serve, key, value)
    service = ChatService(cfg, paths, retriever_factory=lambda profile: retriever)
    return create_app(cfg, paths, insecure_local=insecure_local, service=service), cfg


@contextlib.contextmanager
def served(built, retriever, tmp_path, latency_s: float = 0.0, **serve):
    """The scripted model server, the app on it under uvicorn, and an HTTP client for the app."""
    with FakeLLM() as server:
        script(server, latency_s)
        app, _ = make_app(built, retriever, tmp_path, server.api_base, **serve)
        with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            yield server, app, client


def reasoner_requests(server):
    return [r for r in server.state.requests if REASONER_MARK in str(r["messages"][0]["content"])]


def agent_requests(server):
    return [r for r in server.state.requests if AGENT_MARK in str(r["messages"][0]["content"])]


def test_direct_answers_tool_searches_and_context_only_in_the_system_prompt(
    built, retriever, tmp_path
):
    with served(built, retriever, tmp_path) as (server, app, client):
        thread = client.post(
            "/api/threads", json={"demographics": {"age": 58, "sex": "male"}}
        ).json()
        tid = thread["id"]
        hello = client.post(f"/api/threads/{tid}/messages", json={"content": "hello"}).json()[
            "message"
        ]
        assert hello["content"] == "Hello! How can I help you today?"
        assert (
            hello["sources"] == []
            and hello["search_query"] is None
            and not reasoner_requests(server)
        )

        toe = client.post(
            f"/api/threads/{tid}/messages", json={"content": "My big toe is red, hot and swollen"}
        ).json()
        reply = toe["message"]
        assert reply["content"] == "Answer to: My big toe is red, hot and swollen"
        assert reply["thinking"] == "I compared the documents with the symptoms."
        assert reply["search_query"] == "symptoms: My big toe is red, hot and swollen"
        assert len(reply["sources"]) == 5 and {"slug", "title", "url", "score"} <= set(
            reply["sources"][0]
        )
        assert reply["timings_ms"]["retrieval"] > 0 and reply["timings_ms"]["total"] > 0

        client.post(f"/api/threads/{tid}/messages", json={"content": "It started last night"})
        last = reasoner_requests(server)[-1]["messages"]
        assert last[0]["role"] == "system" and "Documents:" in last[0]["content"]
        assert (
            '"age": 58' in last[0]["content"]
            and "symptoms: It started last night" in last[0]["content"]
        )
        history = last[1:]
        assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant", "user"]
        assert history[3]["content"] == "Answer to: My big toe is red, hot and swollen"
        assert not any(
            "Documents:" in m["content"] or "I compared" in m["content"] for m in history
        )
        # the agent also sees answers only, never the documents or earlier thinking
        agent_history = agent_requests(server)[-1]["messages"][1:]
        assert not any(
            "Documents:" in m["content"] or "I compared" in m["content"] for m in agent_history
        )
        assert (
            agent_requests(server)[-1]["tools"][0]["function"]["name"]
            == "search_health_information"
        )

        full = client.get(f"/api/threads/{tid}").json()
        assert [m["role"] for m in full["messages"]] == ["user", "assistant"] * 3
        assert full["title"] == "hello" and full["demographics"] == {"age": 58, "sex": "male"}


def test_streamed_reply_events_in_order(built, retriever, tmp_path):
    with served(built, retriever, tmp_path) as (server, app, client):
        tid = client.post("/api/threads", json={}).json()["id"]
        events = []
        with client.stream(
            "POST",
            f"/api/threads/{tid}/messages/stream",
            json={"content": "sneezing and itchy eyes"},
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            kind = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
    kinds = [k for k, _ in events]
    assert kinds[:3] == ["user", "search", "sources"] and kinds[-1] == "final"
    # token by token
    assert kinds.index("thinking") < kinds.index("answer") and kinds.count("answer") > 1
    assert (
        "".join(d["text"] for k, d in events if k == "answer")
        == "Answer to: sneezing and itchy eyes"
    )
    assert events[-1][1]["thinking"] == "I compared the documents with the symptoms."


def test_history_is_trimmed_by_tokens_but_keeps_the_system_prompt_and_the_new_message():
    system = {"role": "system", "content": "s" * 400}  # ~100 tokens
    history = [
        {"role": r, "content": f"{r} {i} " + "x" * 200, "thinking": "never resent"}
        for i in range(10)
        for r in ("user", "assistant")
    ]
    new = {"role": "user", "content": "now"}
    kept = fit_history(system, history, new, budget=350)
    assert kept[0] is system and kept[-1] is new
    # the latest that fit
    assert [m["content"].split()[1] for m in kept[1:-1]] == [
        "8",
        "8",
        "9",
        "9",
    ]
    assert all(set(m) == {"role", "content"} for m in kept[1:-1])
    # over budget: still system + message
    assert fit_history(system, history, new, budget=10) == [
        system,
        new,
    ]
    # never starts with an orphaned assistant turn
    assert [m["role"] for m in fit_history(system, history, new, budget=290)] == [
        "system",
        "user",
        "assistant",
        "user",
    ]


def test_trimming_applies_to_what_the_models_receive(built, retriever, tmp_path):
    with served(built, retriever, tmp_path, context_tokens=1200) as (server, app, client):
        tid = client.post("/api/threads", json={}).json()["id"]
        for i in range(6):
            client.post(
                f"/api/threads/{tid}/messages",
                json={"content": f"message {i} " + " ".join(f"w{j}" for j in range(150))},
            )
    last = reasoner_requests(server)[-1]["messages"]
    assert last[0]["role"] == "system" and last[-1]["content"].startswith("message 5")
    assert len(last) < 12 and not any(m["content"].startswith("message 0") for m in last)


def test_conversations_survive_a_restart(built, retriever, tmp_path):
    with FakeLLM() as server:
        script(server)
        port = free_port()
        app, _ = make_app(built, retriever, tmp_path, server.api_base)
        with running(app, port) as url:
            tid = httpx.post(f"{url}/api/threads", json={"title": "toe"}).json()["id"]
            httpx.post(
                f"{url}/api/threads/{tid}/messages", json={"content": "sore toe"}, timeout=30
            )
        # a new process would open the same file
        app, _ = make_app(built, retriever, tmp_path, server.api_base)
        with running(app, port) as url:
            thread = httpx.get(f"{url}/api/threads/{tid}").json()
            assert [m["content"] for m in thread["messages"]] == ["sore toe", "Answer to: sore toe"]
            httpx.post(
                f"{url}/api/threads/{tid}/messages", json={"content": "still sore"}, timeout=30
            )
    assert [m["role"] for m in reasoner_requests(server)[-1]["messages"][1:]] == [
        "user",
        "assistant",
        "user",
    ]


def test_api_keys_scope_threads_and_are_hashed_at_rest(built, retriever, tmp_path):
    with FakeLLM() as server:
        script(server)
        app, cfg = make_app(built, retriever, tmp_path, server.api_base, insecure_local=False)
        store = app.state.store
        _, alice = store.create_key("alice")
        bob_id, bob = store.create_key("bob")
        with running(app) as url:
            a = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {alice}"}, timeout=30)
            b = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {bob}"}, timeout=30)
            assert httpx.get(f"{url}/api/threads").status_code == 401
            wrong = httpx.get(f"{url}/api/threads", headers={"Authorization": "Bearer t0k_wrong"})
            assert wrong.status_code == 401 and "t0 keys create" in wrong.json()["detail"]
            assert wrong.headers["www-authenticate"] == "Bearer"
            tid = a.post("/api/threads", json={}).json()["id"]
            assert (
                a.post(f"/api/threads/{tid}/messages", json={"content": "sore toe"}).status_code
                == 200
            )
            assert b.get(f"/api/threads/{tid}").status_code == 404
            assert b.post(f"/api/threads/{tid}/messages", json={"content": "hi"}).status_code == 404
            assert b.delete(f"/api/threads/{tid}").status_code == 404
            assert b.put(f"/api/threads/{tid}/demographics", json={"age": 3}).status_code == 404
            assert b.get("/api/threads").json() == [] and len(a.get("/api/threads").json()) == 1
            store.revoke_key(bob_id)
            assert b.get("/api/threads").status_code == 401
            assert (
                httpx.get(f"{url}/healthz").status_code == 200
                and httpx.get(f"{url}/").status_code == 200
            )
            schema = httpx.get(f"{url}/openapi.json").json()["paths"]  # the API documents itself
            assert {
                "/api/threads",
                "/api/threads/{thread_id}/messages/stream",
                "/v1/chat/completions",
                "/api/threads/{thread_id}/demographics",
                "/healthz",
            } <= set(schema)
    raw = (
        (tmp_path / "conversations.sqlite").read_bytes()
        + (tmp_path / "conversations.sqlite-wal").read_bytes()
        if (tmp_path / "conversations.sqlite-wal").exists()
        else (tmp_path / "conversations.sqlite").read_bytes()
    )
    assert alice.encode() not in raw and bob.encode() not in raw


def test_limits_rate_and_cors(built, retriever, tmp_path):
    with FakeLLM() as server:
        script(server)
        app, _ = make_app(
            built,
            retriever,
            tmp_path,
            server.api_base,
            max_request_bytes=2000,
            max_message_chars=100,
            rate_limit_per_minute=60,
            rate_limit_burst=4,
            cors_origins=["https://chat.example"],
        )
        with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            tid = client.post("/api/threads", json={}).json()["id"]
            too_big = client.post(
                f"/api/threads/{tid}/messages",
                content=json.dumps({"content": "a" * 5000}),
                headers={"Content-Type": "application/json"},
            )
            assert too_big.status_code == 413 and "2000 bytes" in too_big.json()["detail"]
            too_long = client.post(f"/api/threads/{tid}/messages", json={"content": "a" * 150})
            assert too_long.status_code == 422 and "limit is 100" in too_long.json()["detail"]
            bad = client.put(f"/api/threads/{tid}/demographics", json={"age": 500})
            assert bad.status_code == 422
            statuses = [client.get("/api/threads").status_code for _ in range(3)]
            assert statuses[-1] == 429 and 200 in statuses
            limited = client.get("/api/threads")
            assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
            ok = client.options(
                "/api/threads",
                headers={"Origin": "https://chat.example", "Access-Control-Request-Method": "GET"},
            )
            other = client.options(
                "/api/threads",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
            )
    assert ok.headers.get("access-control-allow-origin") == "https://chat.example"
    assert "access-control-allow-origin" not in other.headers


def test_fifty_concurrent_conversations_nothing_lost_or_mixed(built, retriever, tmp_path):
    with FakeLLM() as server:
        script(server, latency_s=0.05)
        app, _ = make_app(built, retriever, tmp_path, server.api_base, rate_limit_per_minute=0)
        with running(app) as url:

            async def conversation(client: httpx.AsyncClient, i: int) -> str:
                tid = (await client.post("/api/threads", json={"title": f"patient {i}"})).json()[
                    "id"
                ]
                for turn in range(2):
                    r = await client.post(
                        f"/api/threads/{tid}/messages",
                        json={"content": f"patient-{i} turn-{turn} cough"},
                    )
                    assert r.status_code == 200, r.text
                return tid

            async def main():
                async with httpx.AsyncClient(
                    base_url=url, timeout=120, limits=httpx.Limits(max_connections=100)
                ) as client:
                    tids = await asyncio.gather(*(conversation(client, i) for i in range(50)))
                    # two messages at once on one thread: serialised, both kept in order
                    await asyncio.gather(
                        *(
                            client.post(
                                f"/api/threads/{tids[0]}/messages",
                                json={"content": f"patient-0 extra-{j}"},
                            )
                            for j in range(2)
                        )
                    )
                    return tids, [(await client.get(f"/api/threads/{t}")).json() for t in tids]

            tids, threads = asyncio.run(main())
    assert server.state.max_in_flight > 1  # the turns really overlapped
    for i, thread in enumerate(threads):
        contents = [m["content"] for m in thread["messages"]]
        expected = [
            f"patient-{i} turn-0 cough",
            f"Answer to: patient-{i} turn-0 cough",
            f"patient-{i} turn-1 cough",
            f"Answer to: patient-{i} turn-1 cough",
        ]
        assert contents[:4] == expected, (i, contents)
        if i == 0:
            assert (
                len(contents) == 8
                and [m["role"] for m in thread["messages"]] == ["user", "assistant"] * 4
            )
        else:
            assert len(contents) == 4


def test_openai_client_streaming_and_not(built, retriever, tmp_path):
    import openai

    with FakeLLM() as server:
        script(server)
        app, _ = make_app(built, retriever, tmp_path, server.api_base, insecure_local=False)
        _, key = app.state.store.create_key("openai client")
        with running(app) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)
            assert [m.id for m in client.models.list()] == ["t0"]
            history = [
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "<think>x</think>Hi there"},
                {"role": "user", "content": "my ear hurts"},
            ]
            reply = client.chat.completions.create(model="t0", messages=history)
            assert reply.choices[0].message.content == "Answer to: my ear hurts"
            assert reply.model_extra["sources"] and reply.usage.total_tokens > 0
            assert (
                reply.choices[0].message.model_extra["reasoning_content"]
                == "I compared the documents with the symptoms."
            )
            sent = reasoner_requests(server)[-1]["messages"]
            # client thinking stripped
            assert [m["content"] for m in sent[1:]] == [
                "hello",
                "Hi there",
                "my ear hurts",
            ]

            pieces, thinking = [], []
            for chunk in client.chat.completions.create(
                model="t0", messages=[{"role": "user", "content": "sore throat"}], stream=True
            ):
                delta = chunk.choices[0].delta
                pieces.append(delta.content or "")
                thinking.append((delta.model_extra or {}).get("reasoning_content") or "")
            assert "".join(pieces) == "Answer to: sore throat"
            assert "".join(thinking).strip() == "I compared the documents with the symptoms."
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="gpt-4", messages=history)
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=f"{url}/v1", api_key="t0k_nope").models.list()


def test_failing_models_give_plain_errors_mark_the_turn_failed_and_retry_works_once_back(
    built, retriever, tmp_path
):
    import time

    port = free_port()
    dead = f"http://127.0.0.1:{port}/v1"
    with FakeLLM() as server:
        script(server)
        app, cfg = make_app(built, retriever, tmp_path, server.api_base, reasoner_api_base=dead)
        # the pipeline's patience: serving must not use it (serve.model_attempts)
        cfg.llm.max_attempts = 5
        with running(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            tid = client.post("/api/threads", json={}).json()["id"]
            started = time.monotonic()
            r = client.post(f"/api/threads/{tid}/messages", json={"content": "sore toe"})
            assert time.monotonic() - started < 10
            assert r.status_code == 502 and r.json()["detail"] == UNREACHABLE
            assert (
                "reasoner model openai/reasoner" in r.json()["technical"]
                and "litellm" not in r.json()["detail"]
            )
            with client.stream(
                "POST", f"/api/threads/{tid}/messages/stream", json={"content": "still sore"}
            ) as s:
                events = [e for e in s.read().decode().split("\n\n") if e]
            error = json.loads(events[-1].split("data: ", 1)[1])
            assert events[-1].startswith("event: error") and error["message"] == UNREACHABLE
            messages = client.get(f"/api/threads/{tid}").json()["messages"]
            assert [(m["content"], m["status"]) for m in messages] == [
                ("sore toe", "failed"),
                ("still sore", "failed"),
            ]
            assert (
                error["message_id"] == messages[1]["id"]
                and "check that the server is up" in messages[1]["error"]
            )
            health = client.get("/healthz")
            assert (
                health.status_code == 503
                and health.json()["models"]["reasoner"]["reachable"] is False
            )
            assert (
                health.json()["models"]["agent"]["reachable"] is True
                and health.json()["index"]["loaded"]
            )

            with FakeLLM(port=port) as back:  # the reasoner's server returns
                script(back)
                again = client.post(
                    f"/api/threads/{tid}/messages",
                    json={"content": "still sore", "retry_of": error["message_id"]},
                )
                assert (
                    again.status_code == 200
                    and again.json()["message"]["content"] == "Answer to: still sore"
                )
                sent = back.state.requests[-1]["messages"]
                # failed turns are never resent
                assert [m["content"] for m in sent[1:]] == ["still sore"]
                refused = client.post(
                    f"/api/threads/{tid}/messages",
                    json={"content": "x", "retry_of": again.json()["message"]["id"]},
                )
                assert (
                    refused.status_code == 502
                    and "cannot be sent again" in refused.json()["detail"]
                )
            messages = client.get(f"/api/threads/{tid}").json()["messages"]
            assert [(m["content"], m["status"]) for m in messages] == [
                ("sore toe", "failed"),
                ("still sore", "ok"),
                ("Answer to: still sore", "ok"),
            ]


def test_agents_without_tool_calling_use_the_text_protocol(built, retriever, tmp_path):
    with FakeLLM() as server:
        server.on(REASONER_MARK, "(Gout) see a GP today", reasoning="thinking")
        server.on("SEARCH:", "SEARCH: red painful big toe joint")
        profiles = {
            "plain": ServeProfile(agent_tools=False, student=None),
            "t0": ServeProfile(student=None),
        }
        app, _ = make_app(built, retriever, tmp_path, server.api_base, profiles=profiles)
        with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            tid = client.post("/api/threads", json={"profile": "plain"}).json()["id"]
            reply = client.post(f"/api/threads/{tid}/messages", json={"content": "my toe"}).json()[
                "message"
            ]
            assert client.post("/api/threads", json={"profile": "nope"}).status_code == 422
    assert (
        reply["search_query"] == "red painful big toe joint"
        and reply["content"] == "(Gout) see a GP today"
    )
    assert "tools" not in agent_requests(server)[0] and any(
        s["slug"] == "gout" for s in reply["sources"]
    )


def test_keys_cli_creates_lists_and_revokes(tmp_path):
    from typer.testing import CliRunner

    from t0_pipeline.cli import app

    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "laptop", "--data-dir", str(tmp_path)])
    assert created.exit_code == 0, created.output
    key_id, token = created.output.split()[2], created.output.strip().splitlines()[-1]
    store = Store(f"sqlite:///{tmp_path / 'serve' / 'conversations.sqlite'}")
    assert store.key_owner(token) == key_id
    listed = runner.invoke(app, ["keys", "list", "--data-dir", str(tmp_path)])
    assert key_id in listed.output and "laptop" in listed.output and token not in listed.output
    assert (
        runner.invoke(app, ["keys", "revoke", key_id, "--data-dir", str(tmp_path)]).exit_code == 0
    )
    assert store.key_owner(token) is None
    missing = runner.invoke(app, ["keys", "revoke", "nope", "--data-dir", str(tmp_path)])
    # `t0` prints it as one line, exit status 2
    assert "no key with id nope" in str(missing.exception)


@pytest.mark.parametrize(
    "tags, text",
    [
        (("<think>", "</think>"), "<think>weighing gout</think>It is probably gout."),
        (
            ("<|im_start|>think", "<|im_start|>answer"),
            "<|im_start|>think\nweighing gout<|im_start|>answer\nIt is probably gout.",
        ),
    ],
)
def test_inline_thinking_is_split_across_any_chunk_boundaries(tags, text):
    from t0_pipeline.llm.thinking import ThinkSplitter

    for size in (1, 2, 3, 5, 8, len(text)):
        splitter, pieces = ThinkSplitter(*tags), []
        for start in range(0, len(text), size):
            pieces += splitter.feed(text[start : start + size])
        pieces += splitter.flush()
        thinking = "".join(p for k, p in pieces if k == "thinking").strip()
        answer = "".join(p for k, p in pieces if k == "answer").strip()
        assert (thinking, answer) == ("weighing gout", "It is probably gout."), size


@pytest.mark.parametrize("template", ["chatml-by-hand", "smollm2"])
def test_budget_forced_reasoner_on_a_completions_endpoint(
    built, retriever, tmp_path, template, request
):
    from t0_pipeline.config import BudgetConfig

    marker = "<|im_start|>answer"
    tokenizer = tok = None
    if template == "smollm2":  # the prompt rendered by a real ChatML tokenizer's own chat template
        from transformers import AutoTokenizer

        gguf = request.getfixturevalue("smollm2_gguf")
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tok.save_pretrained(tmp_path / "smollm2-tokenizer")
        tokenizer = str(tmp_path / "smollm2-tokenizer")
    with FakeLLM() as server:
        # only the completions prompt holds the thinking marker
        server.on(
            r"<\|im_start\|>think",
            budget_student("toe is hot", "It is probably gout: ask for an urgent GP appointment."),
        )
        script(server)
        profile = ServeProfile(
            student=None, budget=BudgetConfig(thinking_budget=8, max_waits=1), tokenizer=tokenizer
        )
        app, _ = make_app(built, retriever, tmp_path, server.api_base, profiles={"t0": profile})
        with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            tid = client.post("/api/threads", json={}).json()["id"]
            reply = client.post(
                f"/api/threads/{tid}/messages", json={"content": "red hot toe"}
            ).json()["message"]
    completions = [r for r in server.state.requests if "prompt" in r]
    assert completions[0]["prompt"].startswith("<|im_start|>system\n" + REASONER_MARK)
    assert completions[0]["prompt"].endswith(
        "<|im_start|>user\nred hot toe<|im_end|>\n<|im_start|>assistant\n<|im_start|>think\n"
    )
    # less 3 words, the newline and the turn token it stopped on, and 1 "Wait"
    assert [r["max_tokens"] for r in completions if marker in r["stop"]] == [8, 2]
    assert reply["thinking"] == "toe is hot\n Wait toe is" and reply["content"].startswith(
        "It is probably gout"
    )
    assert reply["sources"] and reply["completion_tokens"] == 8
    # every ChatML marker is the tokenizer's one special token; "think" is a plain word after it
    if tok is not None:
        ids = tok(completions[0]["prompt"], add_special_tokens=False)["input_ids"]
        start = tok.convert_tokens_to_ids("<|im_start|>")
        # system, user, assistant, think
        assert ids.count(start) == completions[0]["prompt"].count("<|im_start|>") == 4
        assert tok.decode(ids[ids.index(start, len(ids) - 4) :]) == "<|im_start|>think\n"


def test_another_domain_is_served_in_its_own_words_tools_and_profile(built, retriever, tmp_path):
    """The IT desk's domain behind the service: its search tool, its reasoner prompt, its page
    words and the profile fields a person may give (the NHS ones refused)."""
    from t0_pipeline_tests.serving import last_user

    cfg, paths = built
    it_desk = Path(__file__).resolve().parents[1] / "examples" / "it-desk" / "domain.yaml"
    domain_built = (cfg.model_copy(update={"domain": str(it_desk)}), paths)
    with FakeLLM() as server:
        server.on(
            "You help people understand their IT problem",
            lambda messages: f"Answer to: {last_user(messages)}",
            reasoning="I read the articles.",
        )
        server.on(
            "conversational assistant of the Kestrel Logistics IT service desk",
            lambda messages: "",
            tool_calls=lambda messages: [("search_help_articles", {"query": last_user(messages)})],
        )
        app, _ = make_app(domain_built, retriever, tmp_path, server.api_base)
        with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            config = client.get("/api/config").json()
            assert [f["name"] for f in config["profile"]] == [
                "department",
                "device",
                "location",
                "years_at_company",
            ]
            assert config["page"]["title"] == "Kestrel IT help"
            details = {"department": "Finance", "years_at_company": 3}
            assert client.put("/api/me/demographics", json=details).json() == details
            for bad, field in (
                ({"age": 40}, "age"),
                ({"years_at_company": 99}, "years_at_company"),
            ):
                refused = client.put("/api/me/demographics", json=bad)
                assert refused.status_code == 422
                assert refused.json()["detail"][0]["loc"] == ["body", field]
            thread = client.post("/api/threads", json={}).json()
            assert thread["demographics"] == details  # the key's own details
            client.post(
                f"/api/threads/{thread['id']}/messages", json={"content": "My VPN will not connect"}
            )
        agent, reasoner = server.state.requests[0], server.state.requests[-1]
        assert [t["function"]["name"] for t in agent["tools"]] == ["search_help_articles"]
        system = reasoner["messages"][0]["content"]
        assert '"department": "Finance"' in system and "patient" not in system.lower()
