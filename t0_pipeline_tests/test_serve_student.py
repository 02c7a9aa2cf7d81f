"""A trained student behind the service (``serve.profiles.*.student``): asked with the triage prompt
it was trained and evaluated on, budget-forced with the chat format's markers, its "(condition,
level of care)" turned into a plain reply; through the scripted completions server and through the
real CPU server on the real SmolLM2."""

from __future__ import annotations

import re

import httpx
import pytest

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import BudgetConfig, ServeProfile
from t0_pipeline.serve.agent import ChatService
from t0_pipeline.serve.student_turn import load_replies
from t0_pipeline_tests.fake_llm import FakeLLM, budget_student
from t0_pipeline_tests.serving import running, script
from t0_pipeline_tests.test_serve import make_app

MARKER = "<|im_start|>answer"
TRIAGE_MARK = "You help a health information service triage patients"


def allowed_titles(prompt: str) -> list[str]:
    """The titles the triage prompt allows (the lines after "Allowed conditions:")."""
    block = prompt.split("Allowed conditions:\n", 1)[1].split("\n\n", 1)[0]
    return [line[2:] for line in block.splitlines() if line.startswith("- ")]


def ask(built, retriever, tmp_path, server, profile, messages):
    app, cfg = make_app(built, retriever, tmp_path, server.api_base, profiles={"t0": profile})
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        tid = client.post("/api/threads", json={"demographics": {"age": 67}}).json()["id"]
        replies = [
            client.post(f"/api/threads/{tid}/messages", json={"content": m}).json()["message"]
            for m in messages
        ]
    return replies, cfg


@pytest.mark.parametrize("answer", ["first allowed", "inconclusive", "garbled"])
def test_a_student_is_asked_as_trained_and_its_answer_becomes_a_plain_reply(
    built, retriever, tmp_path, answer
):
    replies_text = load_replies()

    def student_answer(prompt: str) -> str:
        title = allowed_titles(prompt)[0]
        return {
            "first allowed": f"({title}, Urgent Primary Care)",
            "inconclusive": "(inconclusive, A&E)",
            "garbled": "A-S-1999-A-D",
        }[answer]

    with FakeLLM() as server:
        server.on(r"<\|im_start\|>think", budget_student("toe is hot and red", student_answer))
        script(server)
        profile = ServeProfile(
            student="7B",
            agent="agent",
            reasoner="reasoner",
            budget=BudgetConfig(thinking_budget=16, max_waits=0),
        )
        replies, cfg = ask(
            built, retriever, tmp_path, server, profile, ["red hot toe", "it started last night"]
        )
    opened = cfg.chat_format.think_start
    prompts = [r.get("prompt", "") for r in server.state.requests]
    prompt = [p for p in prompts if p.endswith(opened)][-1]
    # the triage prompt the student was trained on, over the documents the turn retrieved
    assert prompt.startswith("<|im_start|>system\n" + TRIAGE_MARK)
    reply = replies[-1]
    titles = allowed_titles(prompt)
    assert titles[:-1] == [s["title"] for s in reply["sources"]] and titles[-1] == "inconclusive"
    # the person's own words (both messages) and details in the user turn, the s1 think marker open
    assert prompt.endswith(
        '<|im_start|>user\nAbout me: {"age": 67}\n\nred hot toe\n\nit started last night'
        "<|im_end|>\n<|im_start|>assistant\n" + opened
    ), prompt[-300:]
    # the thinking has no marker in it; what the student wrote is kept behind the toggle
    assert reply["thinking"].startswith("toe is hot and red")
    assert "<|im_start|>" not in reply["thinking"] + reply["content"]
    assert reply["thinking"].endswith("The model's answer: " + student_answer(prompt))
    content = reply["content"]
    if answer == "first allowed":
        first = reply["sources"][0]
        assert f"**{first['title']}**" in content and f"]({first['url']})" in content
        assert replies_text["level_urgent_primary_care"] in content
    elif answer == "inconclusive":
        assert content.startswith("None of the pages I found") and "A&E or call 999" in content
    else:
        assert content == replies_text["unreadable"]


def test_a_student_profile_names_a_trained_size(built, tmp_path):
    cfg, paths = built
    cfg = cfg.model_copy(deep=True)
    cfg.serve.profiles = {"t0": ServeProfile(student="70B")}
    with pytest.raises(T0Error, match=r"serves the 70B student, but train\.sizes has no 70B"):
        ChatService(cfg, paths, retriever_factory=lambda profile: None)


def test_a_student_profile_is_asked_with_its_evaluation_budget_and_the_chat_format():
    from pathlib import Path

    from t0_pipeline.config import PipelineConfig, load_config

    cfg = PipelineConfig.model_validate(
        {"chat_format": {"think_start": "<think>\n", "think_end": "</think>"}}
    )
    budget = cfg.serve.profiles["t0"].budget
    assert cfg.serve.profiles["t0"].student == "7B" and budget is not None
    assert (budget.think_start, budget.think_end) == ("<think>\n", "</think>")
    assert budget == cfg.evaluation.models["t0-7b"].budget
    chat = PipelineConfig.model_validate({"serve": {"profiles": {"t0": {"student": None}}}})
    assert chat.serve.profiles["t0"].budget is None
    # the demo serves its 135M student with the small budget its evaluation uses
    demo = load_config(Path(__file__).parents[1] / "t0_pipeline" / "demo.yaml", environ={})
    served, measured = demo.serve.profiles["t0"].budget, demo.evaluation.models["t0-135m"].budget
    assert served == measured and served is not None and served.thinking_budget == 128


def test_a_served_student_on_the_real_cpu_server_splits_thinking_from_its_reply(
    built, retriever, tmp_path, smollm2_checkpoint
):
    """The real SmolLM2 behind the real CPU server stands in for a student: whatever it writes, the
    thinking is what came before the forced marker (no marker text, within the budget) and the
    reply is one of the plain replies."""
    from t0_pipeline.servers.model_server import LocalServer, ServerPlan, serving
    from t0_pipeline_tests.test_cpu_server import cpu_servers

    replies_text = load_replies()
    budget = BudgetConfig(thinking_budget=24, max_waits=1, answer_tokens=16)
    plan = ServerPlan("reasoner", str(smollm2_checkpoint))
    with FakeLLM() as agent, serving(LocalServer(cpu_servers(), plan, tmp_path)) as student:
        script(agent)
        app, _ = make_app(
            built,
            retriever,
            tmp_path,
            agent.api_base,
            reasoner_api_base=student,
            profiles={
                "t0": ServeProfile(student="7B", agent="agent", reasoner="reasoner", budget=budget)
            },
        )
        with running(app) as url, httpx.Client(base_url=url, timeout=300) as client:
            tid = client.post("/api/threads", json={}).json()["id"]
            reply = client.post(
                f"/api/threads/{tid}/messages",
                json={"content": "My big toe is suddenly hot, red and swollen."},
            ).json()["message"]
    thinking, content = reply["thinking"], reply["content"]
    assert thinking and "<|im_start|>" not in thinking and "<|im_end|>" not in thinking
    assert reply["completion_tokens"] <= budget.thinking_budget
    assert "<|im_start|>" not in content and "<|im_end|>" not in content
    # what it wrote after the forced marker (the scripted test pins the exact line)
    written = thinking.rsplit("The model's answer: ", 1)[-1]
    assert MARKER not in written and len(written) < 400
    shapes = [
        re.escape(replies_text["unreadable"]),
        r"What you describe sounds most like \*\*.+\*\*",
        r"None of the pages I found",
    ]
    assert any(re.match(shape, content) for shape in shapes), content
