"""The LLM client over litellm against a loopback OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from pydantic import BaseModel

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import LLMConfig, RoleConfig
from t0_pipeline.llm.cache import LLMCache
from t0_pipeline.llm.calls import require_some_success
from t0_pipeline.llm.client import LLMClient
from t0_pipeline.llm.structured import parse_json
from t0_pipeline.llm.thinking import split_thinking
from t0_pipeline_tests.fake_llm import FakeLLM


@pytest.fixture
def fake():
    with FakeLLM() as server:
        yield server


def make_client(tmp_path, server, role="teacher", **llm):
    cfg = LLMConfig(
        roles={
            role: RoleConfig(model="openai/fake-model", api_base=server.api_base, timeout_s=5.0)
        },
        backoff_s=0.01,
        **llm,
    )
    return LLMClient(role, cfg, LLMCache(tmp_path / "cache.sqlite"))


def ask(client, text):
    return asyncio.run(client.complete([{"role": "user", "content": text}]))


def test_thinking_is_captured_from_reasoning_content_or_inline_tags(tmp_path, fake):
    fake.on("separate", "(Stroke, A&E)", reasoning="Face droop means stroke.")
    fake.on("inline", "(Gout, Urgent Primary Care)", inline_think="Big toe, hot and red.")
    client = make_client(tmp_path, fake)
    a, b = ask(client, "separate"), ask(client, "inline")
    assert (a.thinking, a.content) == ("Face droop means stroke.", "(Stroke, A&E)")
    assert (b.thinking, b.content) == ("Big toe, hot and red.", "(Gout, Urgent Primary Care)")
    assert a.completion_tokens > 0 and a.prompt_tokens > 0


def test_thinking_in_newer_vllm_reasoning_field_is_read_whole_and_streamed(tmp_path, fake):
    """vLLM 0.10 and later return the thinking as ``reasoning``, earlier ones as
    ``reasoning_content``: both are thinking, never lost (a teacher's empty thinking would train
    students to answer without it)."""
    fake.on(
        "newer", "(Stroke, A&E)", reasoning="Face droop means stroke.", reasoning_field="reasoning"
    )
    client = make_client(tmp_path, fake)
    reply = ask(client, "newer")
    assert (reply.thinking, reply.content) == ("Face droop means stroke.", "(Stroke, A&E)")

    async def streamed():
        pieces = {"thinking": "", "answer": ""}
        async for kind, text in client.stream([{"role": "user", "content": "newer"}]):
            if kind in pieces:
                pieces[kind] += text
        return pieces["thinking"].strip(), pieces["answer"]

    assert asyncio.run(streamed()) == ("Face droop means stroke.", "(Stroke, A&E)")


def test_split_thinking_handles_a_template_that_opened_the_tag():
    assert split_thinking("reasoning here</think>answer") == ("reasoning here", "answer")
    assert split_thinking("plain") == ("", "plain")


def test_replies_are_cached_by_model_messages_and_parameters(tmp_path, fake):
    fake.on("hello", "hi")
    client = make_client(tmp_path, fake)
    first, again = ask(client, "hello"), ask(client, "hello")
    assert not first.cached and again.cached and again.content == "hi"
    assert fake.state.calls_matching("hello") == 1
    hotter = make_client(tmp_path, fake)
    hotter.settings.temperature = 1.3  # a different parameter is a different question
    ask(hotter, "hello")
    assert fake.state.calls_matching("hello") == 2
    assert client.usage.cache_hits == 1 and client.usage.completed == 1


def test_retries_stop_at_the_bound_and_the_item_is_recorded_as_failed(tmp_path, fake):
    fake.on("doomed", "never", faults=[500] * 10)
    client = make_client(tmp_path, fake, max_attempts=3)
    reply = ask(client, "doomed")
    assert not reply.ok and reply.error.startswith("InternalServerError") and reply.attempts == 3
    assert fake.state.calls_matching("doomed") == 3
    assert client.usage.failures == 1 and client.usage.retries == 2
    assert ask(client, "doomed").attempts == 3  # failures are not cached: a re-run tries again


def test_429_waits_for_retry_after(tmp_path, fake):
    fake.on("busy", "done", faults=[429])
    fake.state.retry_after = "1"
    client = make_client(tmp_path, fake)
    started = time.monotonic()
    reply = ask(client, "busy")
    assert reply.ok and reply.attempts == 2 and time.monotonic() - started >= 1.0


def test_a_hung_request_times_out_and_is_retried(tmp_path, fake):
    fake.on("slow", "finally", faults=["hang"])
    fake.state.hang_s = 3.0
    client = make_client(tmp_path, fake)
    client.settings.timeout_s = 0.5
    reply = ask(client, "slow")
    assert reply.ok and reply.content == "finally" and reply.attempts == 2


def test_client_errors_are_not_retried(tmp_path, fake):
    client = make_client(tmp_path, fake)  # no rule matches: the server answers 400
    reply = ask(client, "unscripted")
    assert not reply.ok and reply.attempts == 1 and len(fake.state.requests) == 1


class Answer(BaseModel):
    condition: str
    severity: str


def test_malformed_json_gets_one_repair_then_is_recorded_as_failed(tmp_path, fake):
    fake.on("That reply was not valid JSON", '{"condition": "Gout", "severity": "Self-care"}')
    fake.on("fixable", '{"condition": "Gout", "severity": "Self-care"}', faults=["malformed"])
    client = make_client(tmp_path, fake)
    parsed, reply = asyncio.run(
        client.complete_json([{"role": "user", "content": "fixable"}], Answer)
    )
    assert parsed == Answer(condition="Gout", severity="Self-care") and client.usage.repairs == 1

    fake.state.rules.clear()
    fake.on(".*", "I would rather not answer in JSON")
    parsed, reply = asyncio.run(
        client.complete_json([{"role": "user", "content": "hopeless"}], Answer)
    )
    assert (
        parsed is None and reply.error.startswith("InvalidJSON") and client.usage.invalid_json == 1
    )


def test_parse_json_accepts_fences_and_reports_fields():
    assert parse_json('```json\n{"condition": "A", "severity": "B"}\n```', Answer)[0] == Answer(
        condition="A", severity="B"
    )
    assert parse_json('{"condition": "A"}', Answer)[1] == "field severity: Field required"
    assert parse_json("nothing here", Answer)[1] == "no JSON object found"


def test_all_calls_failing_is_one_clear_error(tmp_path):
    cfg = LLMConfig(
        roles={
            "teacher": RoleConfig(model="openai/x", api_base="http://127.0.0.1:9/v1", timeout_s=2)
        },
        max_attempts=2,
        backoff_s=0.01,
    )
    client = LLMClient("teacher", cfg, LLMCache(tmp_path / "c.sqlite"))
    assert not ask(client, "anyone there?").ok
    with pytest.raises(
        T0Error,
        match=r"every teacher call to openai/x at http://127.0.0.1:9/v1 failed "
        r"\(.*Connection error",
    ):
        require_some_success(client.usage, "teacher", client.settings)


def test_unknown_role_is_a_clear_error(tmp_path):
    with pytest.raises(T0Error, match="no LLM role 'critic'"):
        LLMClient("critic", LLMConfig(), LLMCache(tmp_path / "c.sqlite"))


CRASHING_RUN = """
import sys
from t0_pipeline.config import LLMConfig, RoleConfig
from t0_pipeline.llm.client import LLMCache, LLMClient
teacher = RoleConfig(model="openai/fake-model", api_base=sys.argv[1])
cfg = LLMConfig(roles={"teacher": teacher}, concurrency=2)
client = LLMClient("teacher", cfg, LLMCache(sys.argv[2]))
async def one(i):
    return await client.complete([{"role": "user", "content": f"item {i}"}])
client.run(list(range(20)), one, "crashing")
"""


def test_a_run_killed_mid_way_resumes_without_repeating_a_call(tmp_path, fake):
    fake.on("item", lambda messages: "reply to " + messages[-1]["content"])
    fake.state.latency_s = 0.1
    cache_path = tmp_path / "cache.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_RUN, fake.api_base, str(cache_path)],
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if cache_path.exists():
            try:
                if (
                    sqlite3.connect(cache_path)
                    .execute("SELECT COUNT(*) FROM replies")
                    .fetchone()[0]
                    >= 6
                ):
                    break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = {
        json.loads(r)["content"].removeprefix("reply to ")
        for (r,) in sqlite3.connect(cache_path).execute("SELECT reply FROM replies")
    }
    before = len(fake.state.requests)
    assert 6 <= len(stored) < 20  # it really died mid-run

    # same model, messages and sampling parameters: same cache keys
    client = make_client(tmp_path, fake)

    async def one(i):
        return await client.complete([{"role": "user", "content": f"item {i}"}])

    replies = client.run(list(range(20)), one, "resume")
    assert [r.content for r in replies] == [f"reply to item {i}" for i in range(20)]
    resumed = [r["messages"][-1]["content"] for r in fake.state.requests[before:]]
    assert sorted(resumed) == sorted(f"item {i}" for i in range(20) if f"item {i}" not in stored)
    assert client.usage.cache_hits == len(stored) and client.usage.completed == 20 - len(stored)


def test_concurrency_is_bounded(tmp_path, fake):
    fake.on("job", "done")
    fake.state.latency_s = 0.1
    client = make_client(tmp_path, fake, concurrency=3)

    async def one(i):
        return await client.complete([{"role": "user", "content": f"job {i}"}])

    started = time.monotonic()
    replies = client.run(list(range(12)), one, "bounded")
    assert all(r.ok for r in replies) and fake.state.max_in_flight == 3
    assert time.monotonic() - started >= 0.4  # 12 calls / 3 at a time × 0.1 s


def test_requests_per_minute_spaces_request_starts(tmp_path, fake):
    fake.on("paced", "ok")
    client = make_client(tmp_path, fake, requests_per_minute=600)  # one start every 0.1 s

    async def one(i):
        return await client.complete([{"role": "user", "content": f"paced {i}"}])

    client.run(list(range(7)), one, "paced")
    # the first arrival is late by the HTTP client's set-up (its start was on time; litellm's own
    # set-up is rehearsed before pacing begins), so spacing is measured from the second arrival on
    starts = fake.state.started_at[1:]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(gaps) == 5 and min(gaps) >= 0.09, gaps


def test_the_double_streams_reasoning_and_content_through_litellm(fake):
    from t0_pipeline.llm.calls import litellm_module

    fake.on("stream me", "(Gout, Self-care)", reasoning="Toe pain.")

    async def collect():
        stream = await litellm_module().acompletion(
            model="openai/fake",
            api_base=fake.api_base,
            api_key="none",
            stream=True,
            messages=[{"role": "user", "content": "stream me"}],
        )
        thinking, answer = "", ""
        async for chunk in stream:
            delta = chunk.choices[0].delta
            thinking += getattr(delta, "reasoning_content", None) or ""
            answer += delta.content or ""
        return thinking.strip(), answer

    assert asyncio.run(collect()) == ("Toe pain.", "(Gout, Self-care)")


def test_per_run_role_overrides_only_touch_what_is_set():
    from t0_pipeline.defs.roles import RoleOverrides

    llm = RoleOverrides(model="openai/other", temperature=0.1).apply(LLMConfig(), "teacher")
    teacher = llm.roles["teacher"]
    assert (teacher.model, teacher.temperature, teacher.max_tokens) == ("openai/other", 0.1, 8192)
    assert llm.roles["summariser"].model == LLMConfig().roles["summariser"].model
