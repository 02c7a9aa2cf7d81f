"""The CPU model server on the real SmolLM2-135M-Instruct (converted from the bundled GGUF by
base_models), started and stopped by the model-server resource as vLLM is: the protocol the stages
rely on, constrained JSON, batching, and the failures a user meets (a checkpoint that does not load,
an over-long request, tools)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil

import httpx
import pytest

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, LLMConfig, ModelServerConfig, RoleConfig
from t0_pipeline.domain import default_domain
from t0_pipeline.llm.cache import LLMCache
from t0_pipeline.llm.client import LLMClient
from t0_pipeline.servers.model_server import LocalServer, ServerPlan, serving
from t0_pipeline.synthetic.queries import WrittenQuery
from t0_pipeline.synthetic.query_prompt import response_schema

CPU_SERVER = [
    "{python}",
    "-m",
    "t0_pipeline.servers.cpu_server",
    "{checkpoint}",
    "--served-model-name",
    "{name}",
    "--host",
    "{host}",
    "--port",
    "{port}",
    "--quantize",
    "int8",
]


def cpu_servers() -> ModelServerConfig:
    return ModelServerConfig(command=CPU_SERVER, startup_timeout_s=120)


@pytest.fixture(scope="module")
def smol_server(smollm2_checkpoint, tmp_path_factory):
    logs = tmp_path_factory.mktemp("server-logs")
    with serving(
        LocalServer(cpu_servers(), ServerPlan("smol", str(smollm2_checkpoint)), logs)
    ) as api_base:
        yield api_base


def test_the_server_speaks_the_protocol_the_stages_use(smol_server, smollm2_checkpoint):
    from transformers import AutoTokenizer

    assert [m["id"] for m in httpx.get(smol_server + "/models").json()["data"]] == ["smol"]
    prompt = "<|im_start|>user\nName a fruit.<|im_end|>\n<|im_start|>assistant\n"
    done = httpx.post(
        smol_server + "/completions",
        timeout=60,
        json={"model": "smol", "prompt": prompt, "max_tokens": 40, "temperature": 0, "stop": ["."]},
    ).json()
    text = done["choices"][0]["text"]
    # stop strings are not returned
    assert "." not in text and done["usage"]["completion_tokens"] <= 40
    counted = httpx.post(
        smol_server.removesuffix("/v1") + "/tokenize", json={"prompt": prompt}
    ).json()["count"]
    assert counted == len(
        AutoTokenizer.from_pretrained(smollm2_checkpoint)(prompt, add_special_tokens=False)[
            "input_ids"
        ]
    )
    wrong = httpx.post(smol_server + "/chat/completions", json={"model": "other", "messages": []})
    assert wrong.status_code == 404 and "serves `smol`" in wrong.text
    tools = httpx.post(
        smol_server + "/chat/completions",
        json={
            "model": "smol",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function"}],
        },
    )
    assert tools.status_code == 400 and "answer: text" in tools.text


def test_structured_output_makes_a_tiny_model_write_valid_json_through_litellm(
    smol_server, tmp_path
):
    role = RoleConfig(
        model="openai/smol",
        api_base=smol_server,
        api_key_env=None,
        temperature=0.9,
        max_tokens=200,
        structured_output=True,
    )
    llm = LLMConfig(roles={"query_writer": role}, concurrency=8)
    client = LLMClient("query_writer", llm, LLMCache(tmp_path / "cache.sqlite"))
    prompt = [{"role": "user", "content": "Write a patient with tonsillitis as JSON."}]
    schema = response_schema(allow_refusal=False, sex="female")

    async def one(seed: int):
        return await client.complete_json(prompt, WrittenQuery, seed=seed, response_schema=schema)

    results = client.run(list(range(6)), one, "queries")  # six at once: generated as one batch
    assert all(parsed is not None and not parsed.refused for parsed, _ in results), [
        r.error for _, r in results
    ]
    assert len({parsed.symptoms_description for parsed, _ in results}) > 1  # each its own seed
    assert client.usage.invalid_json == 0
    # the message is plain words opening in the first person; the details are from the choices
    word = re.compile(r"^[A-Za-z][a-z']*[,.!?]?$")
    for parsed, _ in results:
        words = parsed.symptoms_description.split(" ")
        assert words[0] in ("I", "My") and all(word.match(w) for w in words), words
        assert parsed.demographics.sex == "female" and 18 <= parsed.demographics.age <= 90
        occupations = next(f for f in default_domain().profile if f.name == "occupation").choices
        assert parsed.demographics.occupation in occupations


def test_frequency_and_presence_penalties_count_only_generated_tokens():
    import torch

    from t0_pipeline.servers.cpu_engine import Penalties

    # a prompt of two tokens (5, 6), then 7 generated twice and 5 once
    ids = torch.tensor([[5, 6, 7, 7, 5]])
    scores = Penalties(2, frequency=1.0, presence=0.5)(ids, torch.zeros(1, 10))
    assert scores[0, 7] == -2.5 and scores[0, 5] == -1.5 and scores[0, 6] == 0
    assert torch.equal(Penalties(5, 1.0, 0.5)(ids, torch.zeros(1, 10)), torch.zeros(1, 10))


def test_a_request_longer_than_the_context_fails_alone_with_the_reason(smol_server):
    long = httpx.post(
        smol_server + "/completions",
        timeout=60,
        json={"model": "smol", "prompt": "word " * 9000, "max_tokens": 10},
    )
    assert long.status_code == 400 and "exceed the model's context" in long.text
    fine = httpx.post(
        smol_server + "/completions",
        timeout=60,
        json={"model": "smol", "prompt": "Hi", "max_tokens": 3},
    )
    assert fine.status_code == 200  # the server keeps serving


def test_a_checkpoint_that_does_not_load_is_one_clear_error(smollm2_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(smollm2_checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(T0Error) as err:
        LocalServer(cpu_servers(), ServerPlan("t0-135m", str(broken)), tmp_path / "logs").start()
    message = str(err.value)
    assert (
        "could not load the checkpoint" in message
        and "t0-135m" in message
        and "full log:" in message
    )


def test_a_role_with_a_serve_section_gets_its_own_server_for_the_stage(
    smollm2_checkpoint, tmp_path
):
    from t0_pipeline.config import load_config, with_base_models
    from t0_pipeline.servers.model_server import local_servers, roles_served

    paths = DataPaths(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smol").symlink_to(smollm2_checkpoint)
    cfg = with_base_models(
        load_config(
            overrides={
                "base_models": {"smol": str(smollm2_checkpoint)},
                "servers": {"command": CPU_SERVER},
                "llm": {
                    "roles": {
                        r: {
                            "model": "openai/smol",
                            "max_tokens": 16,
                            "serve": {"checkpoint": "smol"},
                        }
                        for r in ("teacher", "agent")
                    }
                },
            }
        ),
        paths,
    )
    logged: list[str] = []
    with roles_served(
        cfg.llm,
        ["teacher", "agent", "query_writer"],
        paths,
        local_servers(cfg.servers, paths, logged.append),
    ) as served:
        teacher, agent = served.roles["teacher"], served.roles["agent"]
        # one server for one model
        assert teacher.api_base == agent.api_base != "http://127.0.0.1:8000/v1"
        # no serve: left alone
        assert served.roles["query_writer"].api_base == "http://127.0.0.1:8000/v1"
        # the settings handed in stay as they were: only the block sees the servers
        assert cfg.llm.roles["teacher"].api_base != teacher.api_base
        reply = asyncio.run(
            LLMClient("teacher", served, LLMCache(tmp_path / "c.sqlite")).complete(
                [{"role": "user", "content": "Hi"}]
            )
        )
        assert reply.ok and reply.content
    assert sum("starting a model server" in m for m in logged) == 1 and any(
        "stopped" in m for m in logged
    )
    assert str(smollm2_checkpoint.resolve()) in json.dumps(logged) or "models/smol" in json.dumps(
        logged
    )


def test_budget_forcing_on_the_real_model_through_the_server(smol_server, smollm2_checkpoint):
    """The real SmolLM2 (a ChatML model whose <|im_start|> is one special token, as Qwen2.5's)
    behind the server, budget-forced over the completions protocol: the turn tokens go as
    stop_token_ids (from /tokenize), so min_tokens bars them after a Wait; the budget holds; the
    marker is forced after the newline training puts before it; the answer stops at its turn."""
    from transformers import AutoTokenizer

    from t0_pipeline.chat import ChatFormat, generation_prompt
    from t0_pipeline.config import BudgetConfig
    from t0_pipeline.evaluation.budget_endpoint import complete_with_budget

    tok = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    chat = [{"role": "user", "content": "My big toe is suddenly hot, red and painful. What is it?"}]
    prompt = generation_prompt(chat, tok, ChatFormat().think_start)
    marker = ChatFormat().think_end
    for budget, waits in ((24, 2), (5, 50)):
        config = BudgetConfig(thinking_budget=budget, max_waits=waits, answer_tokens=12)
        out = complete_with_budget(smol_server, "smol", prompt, config)
        assert out.thinking_tokens <= budget, (budget, out)
        assert not out.thinking.endswith("Wait"), out  # a token of thinking after every Wait
        if budget == 24:  # this chat model ends its turn within a few tokens: each end a Wait
            assert out.waits == 2, out
        closing = out.text[out.text.index(marker) - 1 :]
        assert closing.startswith("\n" + marker + "\n") and out.text.count(marker) == 1
        assert "<|im_start|>" not in out.answer and "<|im_end|>" not in out.answer


def test_a_structured_teacher_on_the_real_model_cites_the_query_and_a_document(smol_server):
    """The real SmolLM2 as a structured teacher (its grammar from teacher_schema): whatever it
    chooses, the trace's thinking quotes one of the patient's phrases and, unless inconclusive, a
    sentence of the document it named, and the answer is one of its documents with a level."""
    from t0_pipeline.task import prompt as triage_prompt
    from t0_pipeline.task.scoring import SEVERITIES, last_answer_pair
    from t0_pipeline.task.teacher_schema import (
        answer_schema,
        from_structured,
        phrases,
        sentences,
    )

    role = RoleConfig(
        model="openai/smol",
        api_base=smol_server,
        api_key_env=None,
        temperature=0.3,
        max_tokens=256,
        structured_output=True,
    )
    client = LLMClient("teacher", LLMConfig(roles={"teacher": role}), None)
    sections = triage_prompt.load()[0]
    query = "My big toe went red, hot and swollen overnight. I can't bear the sheet touching it."
    titles = ["Gout", "Cellulitis"]
    texts = [
        "Gout is a type of arthritis. It causes sudden severe pain in a joint, often the big toe.",
        "Cellulitis is an infection of the skin. The skin becomes red, hot and swollen.",
    ]
    context = triage_prompt.with_documents(sections, titles, [0.8, 0.5], texts)
    messages = triage_prompt.messages(sections, context, "not given", query)

    async def one(_):
        schema = answer_schema(query, titles, texts)
        return from_structured(await client.complete(messages, response_format=schema))

    [reply] = client.run([0], one, "teacher")
    assert reply.ok, reply.error
    condition, severity = last_answer_pair(reply.content)
    assert condition in [*titles, "inconclusive"] and severity in SEVERITIES
    assert any(f"The patient says: {p}." in reply.thinking for p in phrases(query)), reply.thinking
    if condition != "inconclusive":
        text = texts[titles.index(condition)]
        assert any(s in reply.thinking for s in sentences(text)), reply.thinking


def _together(api_base: str, bodies: list[dict]) -> list[httpx.Response]:
    """``bodies`` sent at once to /completions (they reach the engine within its batching
    window)."""

    async def send():
        async with httpx.AsyncClient(timeout=300) as client:
            return await asyncio.gather(
                *(client.post(api_base + "/completions", json=b) for b in bodies)
            )

    return asyncio.run(send())


def test_a_bad_request_batched_with_good_ones_fails_alone_and_names_its_field(smol_server):
    good = {"model": "smol", "prompt": "Name a colour:", "max_tokens": 6, "temperature": 0}
    bad = [
        {**good, "prompt": "word " * 9000},  # past the context
        {**good, "max_tokens": 10**9},
        {**good, "response_format": {"type": "json_schema", "json_schema": {"schema": 5}}},
        {**good, "prompt": [10**9]},  # a token id outside the vocabulary
    ]
    replies = _together(smol_server, [good, bad[0], good, bad[1], good, bad[2], bad[3], good])
    statuses = [r.status_code for r in replies]
    assert statuses == [200, 400, 200, 400, 200, 400, 400, 200], [r.text for r in replies]
    fields = [replies[i].json()["error"]["param"] for i in (1, 3, 5, 6)]
    assert fields == ["max_tokens", "max_tokens", "response_format", "prompt"]
    texts = {r.json()["choices"][0]["text"] for r in replies if r.status_code == 200}
    assert len(texts) == 1  # the good ones were answered alike, none with another's error
    assert "9000" not in "".join(r.text for r in replies if r.status_code == 200)


def test_a_seeded_request_gives_the_same_text_alone_and_batched(smollm2_checkpoint, tmp_path):
    """In full precision (how the demo serves the models it measures): int8 quantises activations
    per batch, so there a batch's other prompts move the logits themselves."""
    command = [*CPU_SERVER[:-1], "none"]
    plan = ServerPlan("smol", str(smollm2_checkpoint))
    config = ModelServerConfig(command=command, startup_timeout_s=120)
    asked = {"model": "smol", "prompt": "Tell me a story:", "max_tokens": 24, "temperature": 1.0}
    batch = [{**asked, "seed": s} for s in (3, 7, 11, 7)]
    with serving(LocalServer(config, plan, tmp_path)) as api_base:
        alone = _together(api_base, [{**asked, "seed": 7}])[0].json()["choices"][0]["text"]
        texts = [r.json()["choices"][0]["text"] for r in _together(api_base, batch)]
    logged = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert "batch of 4:" in logged  # they really were generated together
    assert texts[1] == texts[3] == alone, (alone, texts)
    assert len({texts[0], texts[1], texts[2]}) == 3  # other seeds, other stories
