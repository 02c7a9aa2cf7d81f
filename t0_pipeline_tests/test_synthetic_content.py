"""The checks that judge synthetic data by its content: they fail on the garbage a tiny model once
wrote (quoted from a demo run) and pass on the bundled hand-written sample queries; the query
writer's examples and schema; rejection sampling over several teacher samples."""

from __future__ import annotations

import json
import random

import polars as pl
import pytest

from t0_pipeline.retrieval.evaluate import sample_queries_path
from t0_pipeline.synthetic.content_checks import copies_an_example, query_content, trace_content
from t0_pipeline.synthetic.readable import Vocabulary, grounded, offensive_words
from t0_pipeline.synthetic.traces import TRACE_SCHEMA

GARBAGE_QUERIES = [
    "1901-2022, fiait-comic-m_t_f_2017-j_f_2020, 201-2017-v_2017-10-27_2017, 2017-2017-f_2020",
    "A-S-1999-D-All those patients with a wound",
    "... 2021 1000 10.5.22.2021.22.2021.2020.2021.2021.2021.2020.2021.2020.2020.2021.",
    "My ia a ia ia ia ia ia ia ia ia ia ia ia ia ia ia ia ia ia ia ia ia ia ia ia ia ia ia,",
    "You are at risk of having a bowel injury or bowel obstruction",  # not the patient speaking
]
GARBAGE_THINKING = [
    "2017-2017, 2017-2020, 2017-2017-f-2017-2017-2017",
    "A-S-1999-A-D-A-N-E-E-D-I-W-R-I-B",
    "ia ia ia ia ia ia ia ia ia ia ia ia",
]


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    return Vocabulary()


def sample_queries() -> list[str]:
    lines = sample_queries_path().read_text().splitlines()
    return [json.loads(line)["query"] for line in lines if line.strip()]


def test_queries_that_are_garbage_fail_and_the_hand_written_samples_pass(vocabulary):
    garbage = pl.DataFrame({"query": GARBAGE_QUERIES})
    figures, problems = query_content(garbage, vocabulary, 0.8)
    assert figures["readable_first_person_share"] == 0.0 and problems
    assert "queries.min_readable_share" in problems[0]
    figures, problems = query_content(pl.DataFrame({"query": sample_queries()}), vocabulary, 0.8)
    assert figures["readable_first_person_share"] >= 0.95 and not problems, figures
    # a set with one in five garbled still passes at 0.8; two in five do not
    good = sample_queries()[:8]
    assert not query_content(pl.DataFrame({"query": good + GARBAGE_QUERIES[:2]}), vocabulary, 0.8)[
        1
    ]
    assert query_content(pl.DataFrame({"query": good[:3] + GARBAGE_QUERIES[:2]}), vocabulary, 0.8)[
        1
    ]


def test_a_copy_of_the_writers_example_is_not_a_query_of_its_own(vocabulary):
    from t0_pipeline.synthetic.query_prompt import load_examples

    example = load_examples()[0]["query"]
    assert copies_an_example(example.replace(".", "!"), [example])
    assert not copies_an_example(sample_queries()[0], [example])
    figures, problems = query_content(
        pl.DataFrame({"query": [example] * 4 + sample_queries()[:1]}), vocabulary, 0.8, [example]
    )
    assert figures["copies_of_examples"] == 4 and problems


def test_offensive_words_are_found_and_medical_words_are_not():
    assert offensive_words("This fucking rash, you bastard") == ["fucking", "bastard"]
    assert offensive_words("A pin prick in Scunthorpe; the cockroach; shiitake soup") == []


def traces_frame(rows: list[dict]) -> pl.DataFrame:
    base = {k: None for k in TRACE_SCHEMA}
    full = [
        {
            **base,
            "id": f"q{i}",
            "sample": 0,
            "kept": True,
            "answer": "(Gout, Urgent Primary Care)",
            "retrieved_titles": ["Gout", "Cellulitis"],
            **row,
        }
        for i, row in enumerate(rows)
    ]
    return pl.DataFrame(full, schema=TRACE_SCHEMA)


def test_kept_thinking_must_be_words_about_the_query(vocabulary):
    query = "My big toe is suddenly red, hot and swollen and I can't bear the sheet on it."
    sensible = (
        "The toe is red, hot and swollen overnight, which fits gout better than cellulitis; "
        "they should see a doctor today."
    )
    assert grounded(sensible, query, ["Gout"])
    assert not grounded("The weather is nice and the garden is green.", query, ["Gout"])
    figures, problems = trace_content(
        traces_frame([{"query": query, "thinking": sensible}] * 4), vocabulary, 0.8
    )
    assert figures["readable_grounded_share"] == 1.0 and not problems
    bad = [{"query": query, "thinking": t} for t in GARBAGE_THINKING]
    figures, problems = trace_content(traces_frame(bad), vocabulary, 0.8)
    assert figures["readable_grounded_share"] == 0.0 and "traces.min_grounded_share" in problems[0]
    # unkept garbage does not count; an offensive word in a kept trace always fails
    mixed = [{"query": query, "thinking": sensible}] + [{**b, "kept": False} for b in bad]
    assert not trace_content(traces_frame(mixed), vocabulary, 0.8)[1]
    rude = [{"query": query, "thinking": sensible + " What a shitty toe."}]
    assert "offensive" in trace_content(traces_frame(rude), vocabulary, 0.8)[1][-1]
    assert trace_content(traces_frame([{**bad[0], "kept": False}]), vocabulary, 0.8)[1] == [
        "no trace was kept: the student would train on nothing"
    ]


def test_the_writer_sees_examples_of_its_cells_level_and_may_only_write_words(built):
    import re

    from t0_pipeline.config import QueryGenConfig
    from t0_pipeline.synthetic.queries import Cell, QueryWriter
    from t0_pipeline.synthetic.query_prompt import load_examples, response_schema

    cfg, paths = built
    pages = pl.read_parquet(paths.documents("summaries"))
    writer = QueryWriter(None, QueryGenConfig(examples=2), pages)  # type: ignore[arg-type]
    prompt = writer.prompt("gout", Cell(0, "downplay", "A&E", "male"), random.Random(1))
    shown = [e for e in load_examples() if e["query"] in prompt]
    assert len(shown) == 2 and all(e["disposition"] == "A&E" for e in shown)
    marker = "write a new message about the page above"
    assert prompt.index(marker) > prompt.index(pages.filter(slug="gout")["text"][0][:40])
    none = QueryWriter(None, QueryGenConfig(), pages)  # type: ignore[arg-type]
    assert marker not in none.prompt("gout", Cell(0, "downplay", "A&E", "male"))
    schema = response_schema(allow_refusal=False, sex="male")
    pattern = re.compile(schema["properties"]["symptoms_description"]["pattern"])
    assert pattern.match("My toe is red and hot, and it hurts when I walk on it.")
    for garbage in GARBAGE_QUERIES[:3] + ["I have had it for 3 days now and it is bad"]:
        assert not pattern.match(garbage)
    demographics = schema["properties"]["demographics"]["properties"]
    assert demographics["sex"] == {"enum": ["male"]} and "1901-2022" not in json.dumps(demographics)


def test_a_structured_teachers_choices_become_readable_thinking_about_the_query(vocabulary):
    from t0_pipeline.llm.calls import LLMReply
    from t0_pipeline.task.teacher_schema import (
        answer_schema,
        from_structured,
        phrases,
        sentences,
    )

    query = "My big toe is red and hot. It started last night, and I can't sleep. Help"
    assert phrases(query) == [
        "My big toe is red and hot",
        "It started last night",
        "and I can't sleep",
    ]
    page = "Gout is a type of arthritis. It causes sudden pain in a joint, often the big toe.\nSee"
    assert sentences(page) == [
        "Gout is a type of arthritis.",
        "It causes sudden pain in a joint, often the big toe.",
    ]
    schema = answer_schema(query, ["Gout", "Cellulitis"], [page, "Cellulitis is a skin infection."])
    properties = schema["json_schema"]["schema"]["properties"]
    options = properties["choice"]["anyOf"]
    assert [o["properties"]["condition"]["enum"] for o in options] == [
        ["Gout"],
        ["Cellulitis"],
        ["inconclusive"],
    ]
    assert options[0]["properties"]["evidence"]["enum"] == sentences(page)
    chosen = {
        "complaint": "My big toe is red and hot",
        "choice": {"condition": "Gout", "evidence": sentences(page)[1]},
        "severity": "Urgent Primary Care",
    }
    reply = from_structured(LLMReply(content=json.dumps(chosen)))
    assert reply.content == "(Gout, Urgent Primary Care)"
    assert reply.thinking.startswith("The patient says: My big toe is red and hot.")
    assert "The page on Gout says: It causes sudden pain" in reply.thinking
    assert vocabulary.readable(reply.thinking) and grounded(reply.thinking, query, ["Gout"])
    none = {**chosen, "choice": {"condition": "inconclusive"}, "severity": "Self-care"}
    reply = from_structured(LLMReply(content=json.dumps(none), thinking="My own reasoning."))
    assert reply.content == "(inconclusive, Self-care)" and reply.thinking.startswith(
        "My own reasoning.\nThe patient says"
    )
    assert from_structured(LLMReply(content='{"complaint": 1}')).error.startswith("InvalidJSON")
