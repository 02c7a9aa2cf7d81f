"""Bad requests to every HTTP endpoint of `t0 serve` (the chat service on its scripted model
server) and of the CPU model server (the real SmolLM2): each gets a 4xx naming what is wrong,
within 30 s, and changes nothing (no thread, message or key is created; the model server keeps
answering good requests)."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from t0_pipeline_tests.test_serve import served

JSON = {"Content-Type": "application/json"}
THREAD = "{thread}"  # replaced by a real thread's id

# (method, path, body: bytes | dict | list | str | None, extra headers, status, words in the reply)
SERVE = {
    "threads-not-json": ("POST", "/api/threads", b"{not json", JSON, 422, "JSON"),
    "threads-array": ("POST", "/api/threads", [1, 2], None, 422, "dict"),
    "threads-string": ("POST", "/api/threads", "hello", None, 422, "dict"),
    "threads-not-utf8": ("POST", "/api/threads", b'{"demographics": "\xff"}', JSON, 400, "body"),
    "threads-unknown-field": (
        "POST",
        "/api/threads",
        {"demographics": {"shoe_size": 9}},
        None,
        422,
        "shoe_size",
    ),
    "threads-age-text": (
        "POST",
        "/api/threads",
        {"demographics": {"age": "old"}},
        None,
        422,
        "age",
    ),
    "threads-age-negative": (
        "POST",
        "/api/threads",
        {"demographics": {"age": -4}},
        None,
        422,
        "age",
    ),
    "message-missing-content": (
        "POST",
        f"/api/threads/{THREAD}/messages",
        {},
        None,
        422,
        "content",
    ),
    "message-blank": ("POST", f"/api/threads/{THREAD}/messages", {"content": "  "}, None, 422, ""),
    "message-number": (
        "POST",
        f"/api/threads/{THREAD}/messages",
        {"content": 5},
        None,
        422,
        "content",
    ),
    "message-too-long": (
        "POST",
        f"/api/threads/{THREAD}/messages",
        {"content": "x" * 4001},
        None,
        422,
        "4000",
    ),
    "message-body-too-big": (
        "POST",
        f"/api/threads/{THREAD}/messages",
        {"content": "y" * 70000},
        None,
        413,
        "",
    ),
    "message-unknown-thread": (
        "POST",
        "/api/threads/nope/messages",
        {"content": "hello"},
        None,
        404,
        "",
    ),
    "stream-not-json": ("POST", f"/api/threads/{THREAD}/messages/stream", b"[", JSON, 422, "JSON"),
    "stream-unknown-thread": (
        "POST",
        "/api/threads/nope/messages/stream",
        {"content": "hi"},
        None,
        404,
        "",
    ),
    "thread-unknown": ("GET", "/api/threads/nope", None, None, 404, ""),
    "delete-unknown": ("DELETE", "/api/threads/nope", None, None, 404, ""),
    "details-unknown-thread": ("PUT", "/api/threads/nope/demographics", {"age": 30}, None, 404, ""),
    "details-bad-field": (
        "PUT",
        f"/api/threads/{THREAD}/demographics",
        {"planet": "Mars"},
        None,
        422,
        "planet",
    ),
    "me-details-array": ("PUT", "/api/me/demographics", [1], None, 422, ""),
    "openai-no-messages": ("POST", "/v1/chat/completions", {"model": "t0"}, None, 422, "messages"),
    "openai-bad-role": (
        "POST",
        "/v1/chat/completions",
        {"model": "t0", "messages": [{"role": "wizard", "content": "hi"}]},
        None,
        422,
        "role",
    ),
    "openai-unknown-model": (
        "POST",
        "/v1/chat/completions",
        {"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
        None,
        404,
        "nope",
    ),
    "openai-not-json": ("POST", "/v1/chat/completions", b"{", JSON, 422, "JSON"),
    "openai-stream-text": (
        "POST",
        "/v1/chat/completions",
        {"model": "t0", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"},
        None,
        422,
        "stream",
    ),
    "host-rebinding": ("GET", "/api/config", None, {"Host": "evil.example"}, 421, ""),
    "page-host-rebinding": ("GET", "/", None, {"Host": "evil.example"}, 421, ""),
    "threads-list-host": ("GET", "/api/threads", None, {"Host": "evil.example"}, 421, ""),
    "me-details-host": ("GET", "/api/me/demographics", None, {"Host": "evil.example"}, 421, ""),
    "healthz-post": ("POST", "/healthz", {}, None, 405, ""),
    "models-post": ("POST", "/v1/models", {}, None, 405, ""),
    "method-not-allowed": ("PATCH", "/api/threads", {}, None, 405, ""),
    "no-such-path": ("GET", "/api/nothing-here", None, None, 404, ""),
}


def _counts(database) -> dict[str, int]:
    with sqlite3.connect(database) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}


def _send(client: httpx.Client, method: str, path: str, body, headers) -> httpx.Response:
    if isinstance(body, bytes):
        return client.request(method, path, content=body, headers=headers)
    if body is None:
        return client.request(method, path, headers=headers)
    return client.request(method, path, json=body, headers=headers)


def test_every_t0_serve_endpoint_refuses_bad_requests_and_keeps_its_data(
    built, retriever, tmp_path
):
    # no rate limit: the cases come faster than a person's
    with served(built, retriever, tmp_path, rate_limit_per_minute=0) as (server, _, client):
        thread = client.post("/api/threads", json={}).json()["id"]
        database = tmp_path / "conversations.sqlite"
        before, calls = _counts(database), len(server.state.requests)
        failures = []
        for name, (method, path, body, headers, status, said) in SERVE.items():
            started = time.monotonic()
            reply = _send(client, method, path.replace(THREAD, thread), body, headers)
            took = time.monotonic() - started
            if reply.status_code != status or said not in reply.text or took > 30:
                failures.append((name, reply.status_code, reply.text[:200], round(took, 1)))
        assert not failures, failures  # each entry names its case
        assert _counts(database) == before  # no thread, message or key was made
        assert len(server.state.requests) == calls  # no model was asked anything
        # and the service still answers
        ok = client.post(f"/api/threads/{thread}/messages", json={"content": "hello"})
        assert ok.status_code == 200


# --- the CPU model server -------------------------------------------------------------------

CHAT = "/v1/chat/completions"
DONE = "/v1/completions"
HI = [{"role": "user", "content": "hi"}]


def chat(**fields) -> dict:
    return {"model": "smol", "messages": HI, "max_tokens": 4, **fields}


def complete(**fields) -> dict:
    return {"model": "smol", "prompt": "Hi", "max_tokens": 4, **fields}


# (path, body, status, the field named in error.param, or words in the message)
MODEL_SERVER = {
    "not-json": (CHAT, b"{nope", 400, "not valid JSON"),
    "array-body": (CHAT, [1, 2], 400, "JSON list"),
    "string-body": (CHAT, "hello", 400, "JSON str"),
    "not-utf8": (CHAT, b'{"model": "smol\xff"}', 400, "not UTF-8"),
    "messages-not-list": (CHAT, chat(messages="hi"), 400, "messages"),
    "messages-empty": (CHAT, chat(messages=[]), 400, "messages"),
    "content-number": (
        CHAT,
        chat(messages=[{"role": "user", "content": 5}]),
        400,
        "messages.0.content",
    ),
    "content-image": (
        CHAT,
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        400,
        "messages.0",
    ),
    "unknown-role": (
        CHAT,
        chat(messages=[{"role": "wizard", "content": "hi"}]),
        400,
        "messages.0.role",
    ),
    "missing-model": (CHAT, {"messages": HI}, 400, "model"),
    "other-model": (CHAT, chat(model="gpt-4o"), 404, "model"),
    "negative-temperature": (CHAT, chat(temperature=-0.5), 400, "temperature"),
    "temperature-text": (CHAT, chat(temperature="0.5"), 400, "temperature"),
    "top-p-zero": (CHAT, chat(top_p=0), 400, "top_p"),
    "max-tokens-zero": (CHAT, chat(max_tokens=0), 400, "max_tokens"),
    "max-tokens-huge": (CHAT, chat(max_tokens=10**9), 400, "max_tokens"),
    "max-tokens-text": (CHAT, chat(max_tokens="ten"), 400, "max_tokens"),
    "seed-huge": (CHAT, chat(seed=2**70), 400, "seed"),
    "stop-number": (CHAT, chat(stop=5), 400, "stop"),
    "stop-list-of-numbers": (CHAT, chat(stop=[1, 2]), 400, "stop"),
    "stop-empty-string": (CHAT, chat(stop=[""]), 400, "stop"),
    "min-tokens-negative": (CHAT, chat(min_tokens=-1), 400, "min_tokens"),
    "penalty-high": (CHAT, chat(frequency_penalty=3), 400, "frequency_penalty"),
    "format-unknown": (CHAT, chat(response_format={"type": "yaml"}), 400, "response_format"),
    "schema-not-object": (
        CHAT,
        chat(response_format={"type": "json_schema", "json_schema": {"schema": 5}}),
        400,
        "response_format",
    ),
    "stream": (CHAT, chat(stream=True), 400, "stream"),
    "tools": (CHAT, chat(tools=[{"type": "function"}]), 400, "tools"),
    "n-two": (CHAT, chat(n=2), 400, "n"),
    "prompt-too-long": (DONE, complete(prompt="word " * 9000), 400, "max_tokens"),
    "prompt-number": (DONE, complete(prompt=5), 400, "prompt"),
    "prompt-two": (DONE, complete(prompt=["a", "b"]), 400, "prompt"),
    "prompt-bad-token-id": (DONE, complete(prompt=[10**9]), 400, "prompt"),
    "prompt-missing": (DONE, {"model": "smol"}, 400, "prompt"),
    "tokenize-array": ("/tokenize", [1], 400, "JSON list"),
    "tokenize-neither": ("/tokenize", {}, 400, "prompt or messages"),
    "tokenize-both": ("/tokenize", {"prompt": "a", "messages": HI}, 400, "prompt or messages"),
    "tokenize-prompt-number": ("/tokenize", {"prompt": 5}, 400, "prompt"),
    "health-post": ("/health", {}, 405, "Method Not Allowed"),
    "models-post": ("/v1/models", {}, 405, "Method Not Allowed"),
}


@pytest.fixture(scope="module")
def smol(smollm2_checkpoint, tmp_path_factory):
    from t0_pipeline.config import ModelServerConfig
    from t0_pipeline.servers.model_server import LocalServer, ServerPlan, serving
    from t0_pipeline_tests.test_cpu_server import CPU_SERVER

    logs = tmp_path_factory.mktemp("adversarial-server")
    config = ModelServerConfig(command=CPU_SERVER, startup_timeout_s=120)
    with serving(LocalServer(config, ServerPlan("smol", str(smollm2_checkpoint)), logs)) as base:
        yield base.removesuffix("/v1")


def test_the_cpu_model_server_refuses_each_bad_request_alone_with_its_field(smol):
    failures = []
    with httpx.Client(base_url=smol, timeout=60) as client:
        for name, (path, body, status, said) in MODEL_SERVER.items():
            started = time.monotonic()
            reply = _send(client, "POST", path, body, None)
            took = time.monotonic() - started
            error = reply.json().get("error", {}) if reply.status_code < 500 else {}
            named = said in (error.get("param") or "") or said in (error.get("message") or "")
            named = named or (reply.status_code == 405 and said in reply.text)
            if reply.status_code != status or not named or took > 30:
                failures.append((name, reply.status_code, reply.text[:200], round(took, 1)))
        assert not failures, failures  # each entry names its case
        good = client.post(DONE, json=complete(temperature=0))
        assert good.status_code == 200 and good.json()["choices"][0]["text"] is not None


def test_there_are_enough_http_cases():
    assert len(SERVE) + len(MODEL_SERVER) >= 45
