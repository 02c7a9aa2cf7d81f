"""The domain file: the NHS domain renders exactly the prompts the project had before domains (a
copy of them is kept in golden/nhs_prompts), and another domain's words reach every prompt, schema,
tool, score, table and page; a broken domain file is one clear error."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from t0_pipeline.artifacts import T0Error
from t0_pipeline.domain import load_domain
from t0_pipeline.prompts import PromptSet, load_sections, load_template

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "nhs_prompts"
IT_DESK = ROOT / "examples" / "it-desk" / "domain.yaml"
TEMPLATES = ("agent", "query_examples", "query_writer", "reasoner", "summarise", "triage")
NHS_WORDS = re.compile(r"patient|\bNHS\b|A&E|condition", re.I)


def _sections(text: str) -> dict[str, str]:
    pieces = re.split(r"^\[([a-z_]+)\]\s*$", text, flags=re.M)
    return {pieces[i]: pieces[i + 1].strip("\n") for i in range(1, len(pieces) - 1, 2)}


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_nhs_domain_renders_exactly_the_prompts_of_before(name):
    text, digest = load_template(name)  # the default domain
    assert text == (GOLDEN / f"{name}.txt").read_text(encoding="utf-8")
    # the hash recorded with every output (and the LLM cache's keys) is unchanged too
    assert digest == load_template(name, PromptSet(None, load_domain("nhs-triage")))[1]


def test_the_nhs_replies_and_tools_are_those_of_before():
    from t0_pipeline.evaluation.predictors import TOOL
    from t0_pipeline.serve.agent_search import SEARCH_TOOL
    from t0_pipeline.serve.student_turn import load_replies

    assert load_replies() == _sections((GOLDEN / "triage_reply.txt").read_text(encoding="utf-8"))
    function = TOOL["function"]
    assert function["name"] == "submit_condition_recommendation"
    assert function["description"] == (
        "Submit the condition that best explains the patient's message and how urgently they "
        "need care."
    )
    assert function["parameters"]["properties"]["severity"]["enum"] == [
        "Self-care",
        "Urgent Primary Care",
        "A&E",
    ]
    assert set(function["parameters"]["properties"]) == {"condition", "severity"}
    assert SEARCH_TOOL["function"]["name"] == "search_health_information"


def test_another_domain_reaches_every_prompt_schema_tool_score_and_table():
    from t0_pipeline.evaluation.baseline import disposition_from_page
    from t0_pipeline.evaluation.predictors import submit_tool
    from t0_pipeline.evaluation.tables import model_table
    from t0_pipeline.serve.student_turn import load_replies
    from t0_pipeline.synthetic.query_prompt import response_schema
    from t0_pipeline.task.scoring import Scale, parse_answer_text, summarise_runs
    from t0_pipeline.task.teacher_schema import answer_schema

    domain = load_domain(IT_DESK)
    prompts = PromptSet(None, domain)
    for name in (*TEMPLATES, "triage_reply"):
        text, _ = load_template(name, prompts)
        # a stage's own placeholders ($condition: the page's title) are filled in later
        assert not NHS_WORDS.search(text.replace("$condition", "")), (name, text)
        assert "{{" not in text
    triage, _ = load_sections("triage", ("system",), prompts)
    for category in domain.categories:
        assert f"- {category.name}: {category.meaning}" in triage["system"]

    tool = submit_tool(domain)["function"]
    assert tool["name"] == "submit_issue_recommendation"
    assert tool["parameters"]["properties"]["route"]["enum"] == list(domain.category_names)
    teacher = json.dumps(
        answer_schema("My VPN will not connect at all.", ["VPN"], ["Text."], domain)
    )
    writer = json.dumps(response_schema(True, "female", domain))
    assert not NHS_WORDS.search(teacher + writer + json.dumps(tool))
    assert '"department"' in writer and '"years_at_company"' in writer

    scale = Scale.of(domain)
    allowed = {"vpn-wont-connect": "My VPN will not connect"}
    said = parse_answer_text("(My VPN will not connect, urgent line)", allowed, True, scale)
    assert (said.condition, said.severity) == ("vpn-wont-connect", "Call the urgent line")
    assert (
        parse_answer_text("(My VPN will not connect, A&E)", allowed, True, scale).severity is None
    )
    # the baseline reads this domain's trigger phrases off the article
    article = (ROOT / "examples/it-desk/articles/clicked-phishing-link.md").read_text()
    asked = "I clicked a link in an email and typed my password into the page it opened"
    assert disposition_from_page(asked, article, domain=domain) == "Call the urgent line"
    assert disposition_from_page("hello there", article, domain=domain) == "Fix it yourself"

    rows = [
        {
            "run": 0,
            "query_type": "plain",
            "gold_severity": "Raise a ticket",
            "pred_severity": "Fix it yourself",
            "condition_correct": True,
            "disposition_correct": False,
            "severity_error": "under",
            "status": "ok",
        }
    ]
    stats = summarise_runs(rows, scale)
    summary = {
        "model": "m",
        "model_id": "m",
        "backend": "litellm",
        "queries": 1,
        "queries_hash": "h",
        "runs": 1,
        "seeds": [0],
        "prompt_hash": "p",
        "by_k": {"3": stats},
        "notes": [],
        "labels": list(domain.score_labels),
    }
    table = model_table(summary)
    assert "| k | issue | next step |" in table
    assert (
        "| gold \\ predicted | Fix it yourself | Raise a ticket | Call the urgent line | none |"
        in (table)
    )
    assert load_replies(prompts)["level_call_the_urgent_line"].startswith("Call the urgent line")
    from t0_pipeline.evaluation.accuracy import status_notes

    counts = {"unknown_condition": 2, "bad_severity": 1}
    assert status_notes(counts, domain=domain) == [
        "2 issues not in the allowed list",
        "1 routes outside the three",
    ]
    assert status_notes(counts)[1] == "1 severities outside the three"  # the NHS domain's


def _domain(**changes):
    base = {
        "name": "t",
        "categories": [{"name": "Low", "meaning": "m"}, {"name": "High", "meaning": "n"}],
        "personas": {"plain": "p"},
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"passages": {"writer_intro_typo": "x"}}, "unknown passage"),
        (
            {"passages": {"writer_categories": "- Low: only one"}},
            "does not name the category 'High'",
        ),
        ({"passages": {"writer_intro": "Hi {{nobody}}"}}, "{{nobody}}, which no domain defines"),
        ({"categories": [{"name": "Only", "meaning": "m"}]}, "categories"),
        ({"categories": [{"name": "A", "meaning": "m"}, {"name": "A", "meaning": "n"}]}, "repeat"),
    ],
)
def test_a_broken_domain_is_one_error_naming_what_to_fix(changes, message):
    with pytest.raises(T0Error, match=re.escape(message)):
        load_domain(_domain(**changes))


def test_a_config_names_its_domain_and_its_draws_must_be_the_domain_s(tmp_path):
    from t0_pipeline.config.layers import load_config

    config = load_config(ROOT / "examples" / "it-desk.yaml")
    assert config.domain_spec.name == "it-desk" and config.source.kind == "documents"
    assert config.queries.dispositions == list(config.domain_spec.category_names)
    assert config.queries.query_types == ["plain", "rushed", "vague"]
    # extends: the demo's model settings came along
    assert config.llm.roles["teacher"].structured_output and "135M" in config.train.sizes

    def fails(yaml_text: str) -> str:
        path = tmp_path / "c.yaml"
        path.write_text(yaml_text)
        done = subprocess.run(
            [sys.executable, "-m", "t0_pipeline.cli", "config", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        return done.stderr

    assert "not among the domain 'nhs-triage''s categories" in fails(
        "queries: {dispositions: [Raise a ticket]}\n"
    )
    assert "no such file and no built-in domain" in fails("domain: nowhere/domain.yaml\n")
    assert "bundled examples are NHS patients' messages" in fails(
        f"domain: {IT_DESK}\nqueries: {{examples: 2}}\n"
    )
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    assert "break the circle" in fails("extends: a.yaml\n")
