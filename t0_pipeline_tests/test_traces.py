"""Teacher traces: answer parsing, retrieval context, filtering policy."""

from __future__ import annotations

import polars as pl
import pytest

from t0_pipeline.config import LLMConfig, RoleConfig, TraceConfig
from t0_pipeline.retrieval.retrieve import Retriever
from t0_pipeline.synthetic.queries import QUERY_SCHEMA
from t0_pipeline.synthetic.traces import parse_answer, run_traces
from t0_pipeline_tests.fake_llm import FakeLLM

TITLES = {
    "stroke": "Stroke",
    "heart-attack": "Heart attack",
    "urinary-tract-infections": "Urinary tract infections (UTIs)",
}


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("So the answer is (Stroke, A&E)", ("Stroke", "stroke", "A&E")),
        (
            "(Heart attack, Self-care) no wait... (heart attack, a & e)",
            ("heart attack", "heart-attack", "A&E"),
        ),
        (
            "**(Urinary tract infections (UTIs), Urgent Primary Care)**",
            ("Urinary tract infections (UTIs)", "urinary-tract-infections", "Urgent Primary Care"),
        ),
        ('("Stroke", urgent primary care)', ("Stroke", "stroke", "Urgent Primary Care")),
        ("(inconclusive, Self-care)", ("inconclusive", "inconclusive", "Self-care")),
        (
            "(Migraine, Self-care)",
            ("Migraine", None, "Self-care"),
        ),  # not among the retrieved titles
        ("I cannot decide.", (None, None, None)),
    ],
)
def test_parse_answer(answer, expected):
    assert parse_answer(answer, TITLES) == expected


def teacher(messages):
    # the evaluation prompt's user turn ends with the message
    message = messages[-1]["content"].rsplit("\n", 1)[-1]
    if "face has suddenly dropped" in message:
        return "(Stroke, A&E)"
    if "itchy" in message:
        return "(Made-up disease, Self-care)"
    return "I am not sure what this is."


def write_train_queries(paths, rows: list[dict]) -> None:
    """Training queries as synthetic_queries writes them (id, slug, disposition and query given)."""
    full = [
        {
            **{k: None for k in QUERY_SCHEMA},
            "split": "train",
            "title": r["slug"],
            "query_type": "basic",
            "sex": "male",
            "age": 70,
            "occupation": "retired",
            "social_support": "wife",
            "medical_history": "none",
            "draws": 1,
            "refused_slugs": [],
            "model": "m",
            "prompt_hash": "p",
            **r,
        }
        for r in rows
    ]
    paths.synthetic_queries("train").parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(full, schema=QUERY_SCHEMA).write_parquet(paths.synthetic_queries("train"))


def test_traces_carry_context_thinking_and_policy(built, embedder):
    cfg, paths = built
    rows = [
        {
            "id": "train-00000",
            "slug": "stroke",
            "disposition": "A&E",
            "query": "My dad's face has suddenly dropped on one side and he can't lift his left "
            "arm, his speech is slurred.",
        },
        {
            "id": "train-00001",
            "slug": "hay-fever",
            "disposition": "Self-care",
            "query": "itchy eyes and sneezing in June",
        },
        {
            "id": "train-00002",
            "slug": "gout",
            "disposition": "Urgent Primary Care",
            "query": "my big toe is red and sore",
        },
    ]
    write_train_queries(paths, rows)
    retriever = Retriever("summaries", paths, embedder=embedder)
    with FakeLLM() as server:
        server.on(
            "triage patients", teacher, reasoning="Weighing the documents against the symptoms."
        )
        llm = LLMConfig(
            roles={"teacher": RoleConfig(model="openai/teacher", api_base=server.api_base)}
        )
        traces, stats = run_traces(
            paths, TraceConfig(k=5, mode="hybrid", keep="parsable"), llm, retriever
        )
        request = next(
            r["messages"]
            for r in server.state.requests
            if "face has suddenly dropped" in r["messages"][-1]["content"]
        )
        prompt = "\n".join(m["content"] for m in request)
    by_id = {r["id"]: r for r in traces.iter_rows(named=True)}
    stroke = by_id["train-00000"]
    assert "stroke" in stroke["retrieved_slugs"] and len(set(stroke["retrieved_slugs"])) == 5
    assert stroke["gold_retrieved"] and "] Stroke (score" in prompt and '"age": 70' in prompt
    position = stroke["retrieved_slugs"].index("stroke")
    assert (
        stroke["retrieved_texts"][position].startswith("A stroke is")
        and stroke["retrieved_titles"][position] == "Stroke"
    )
    assert stroke["scores"] == sorted(stroke["scores"], reverse=True)
    assert (
        stroke["thinking"] == "Weighing the documents against the symptoms."
        and stroke["answer"] == "(Stroke, A&E)"
    )
    assert (
        stroke["pred_slug"] == "stroke"
        and stroke["correct_condition"]
        and stroke["correct_disposition"]
        and stroke["kept"]
    )
    made_up = by_id["train-00001"]
    assert made_up["parsable"] and not made_up["condition_in_retrieved"] and not made_up["kept"]
    assert not by_id["train-00002"]["parsable"] and not by_id["train-00002"]["kept"]
    assert stats["kept"] == 1 and stats["parsable_rate"] == pytest.approx(2 / 3)
    assert (paths.traces).exists()
    # the teacher was asked exactly what the student is trained on (and evaluated with): the SFT
    # example's turns
    from t0_pipeline.chat import ChatFormat
    from t0_pipeline.synthetic.sft import messages_for
    from t0_pipeline.task import prompt as triage_prompt

    assert messages_for(stroke, ChatFormat(), triage_prompt.load()[0])[:-1] == request


@pytest.mark.parametrize("policy", ["all", "parsable", "correct"])
def test_a_correct_answer_without_thinking_is_a_rejected_trace_under_every_policy(policy):
    from t0_pipeline.checks import traces_without_thinking
    from t0_pipeline.synthetic.traces import TRACE_SCHEMA, keep

    answered = {"error": None, "parsable": True, "condition_in_retrieved": True}
    answered |= {"correct_condition": True, "correct_disposition": True}
    config = TraceConfig(keep=policy)
    assert keep({**answered, "thinking": "The droop points to a stroke."}, config)
    for nothing in ("", "  \n ", None):
        assert not keep({**answered, "thinking": nothing}, config)

    # the check behind the asset: a kept trace without thinking is named; the share is reported
    rows = [
        {**{k: None for k in TRACE_SCHEMA}, "id": f"t{i}", "thinking": t, "kept": kept, "error": e}
        for i, (t, kept, e) in enumerate(
            [("why", True, None), ("", True, None), ("", False, None), ("", False, "Timeout")]
        )
    ]
    kept_empty, share = traces_without_thinking(pl.DataFrame(rows, schema=TRACE_SCHEMA))
    assert kept_empty == ["t1"] and share == pytest.approx(2 / 3)


def test_traces_evaluation_and_serving_retrieve_the_same_documents_for_a_query(
    built, embedder, tmp_path
):
    """A student is trained on the traces' contexts, measured on the evaluation's and served on the
    service's: with the default settings the three stages, through their own code, show it the same
    documents in the same order; a config where they differ is refused in one line."""
    import asyncio

    from t0_pipeline.artifacts import T0Error
    from t0_pipeline.config import EvalModelConfig, PipelineConfig, load_config
    from t0_pipeline.evaluation.accuracy import run_evaluation
    from t0_pipeline.evaluation.cases import EvaluationInputs
    from t0_pipeline.serve.agent import ChatService
    from t0_pipeline_tests.conftest import write_jsonl

    _, paths = built
    cfg = PipelineConfig()
    query = "my big toe joint went red, hot and swollen overnight and I can't bear the sheet on it"
    row = {
        **{k: None for k in QUERY_SCHEMA},
        "id": "train-00000",
        "split": "train",
        "slug": "gout",
        "title": "Gout",
        "disposition": "Urgent Primary Care",
        "query": query,
        "query_type": "basic",
        "sex": "male",
        "age": 50,
        "draws": 1,
        "refused_slugs": [],
        "model": "m",
        "prompt_hash": "p",
    }
    paths.synthetic_queries("train").parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame([row], schema=QUERY_SCHEMA).write_parquet(paths.synthetic_queries("train"))
    retriever = Retriever(
        cfg.traces.index, paths, cfg.embedding, cfg.chroma, cfg.retrieval, embedder
    )
    with FakeLLM() as server:
        server.on(".*", "(Gout, Urgent Primary Care)", reasoning="A hot toe.")
        llm = LLMConfig(roles={"teacher": RoleConfig(model="openai/t", api_base=server.api_base)})
        traces, _ = run_traces(paths, cfg.traces, llm, retriever)
    in_traces = traces["retrieved_slugs"].to_list()[0]

    cfg.evaluation.models = {"baseline": EvalModelConfig(model="none", backend="retrieval")}
    cfg.evaluation.queries = write_jsonl(tmp_path / "q.jsonl", [{**row, "id": "e1"}])
    cfg.evaluation.ks = [cfg.traces.k]
    df, _ = run_evaluation(paths, EvaluationInputs.resolve(cfg, paths, retriever), "baseline")
    in_evaluation = df["retrieved_slugs"].to_list()[0]

    service = ChatService(cfg, paths, retriever_factory=lambda profile: retriever)
    profile = cfg.serve.profiles["t0"]
    in_serving = [h.slug for h in asyncio.run(service._search(profile, query))]
    assert len(in_traces) == cfg.traces.k and in_traces == in_evaluation == in_serving

    mixed = tmp_path / "mixed.yaml"
    mixed.write_text("evaluation: {mode: dense}\n")
    with pytest.raises(T0Error, match=r"^config: evaluation.mode is 'dense' but traces.mode is"):
        load_config(mixed)
    mixed.write_text("evaluation: {ks: [0, 3]}\n")  # never at the k the traces were collected at
    with pytest.raises(T0Error, match=r"^config: evaluation.k is 3 but traces.k is 5"):
        load_config(mixed)
    mixed.write_text("evaluation: {ks: [0, 3, 5]}\nserve: {profiles: {t0: {k: 3}}}\n")
    with pytest.raises(T0Error, match=r"^config: serve.profiles.t0.k is 3 but traces.k is 5"):
        load_config(mixed)
    mixed.write_text("evaluation: {mode: dense}\nretrieval: {mixed_contexts: true}\n")
    assert load_config(mixed).evaluation.mode == "dense"


def test_rejection_sampling_keeps_only_the_correct_of_several_teacher_samples(built, embedder):
    """traces.samples asks the teacher several times (the first at the role's seed, so one sample's
    cache still answers); keep=correct trains only on samples whose condition is right."""
    cfg, paths = built
    write_train_queries(
        paths,
        [
            {"id": "q-stroke", "slug": "stroke", "disposition": "A&E", "query": "face dropped"},
            {"id": "q-gout", "slug": "gout", "disposition": "Urgent Primary Care", "query": "toe"},
        ],
    )
    retriever = Retriever("summaries", paths, embedder=embedder)

    def sampling_teacher(messages, body) -> str:
        # a sampling model: right about the stroke only at seed 8, never about the toe
        if "face dropped" in messages[-1]["content"]:
            return "(Stroke, A&E)" if body.get("seed") == 8 else "(inconclusive, Self-care)"
        return "(inconclusive, Self-care)"

    with FakeLLM() as server:
        server.on("triage patients", sampling_teacher, reasoning="Comparing the documents.")
        role = RoleConfig(model="openai/teacher", api_base=server.api_base, seed=7)
        llm = LLMConfig(roles={"teacher": role})
        config = TraceConfig(k=5, mode="hybrid", keep="correct", samples=3)
        traces, stats = run_traces(paths, config, llm, retriever)
        seeds = sorted(r.get("seed") for r in server.state.requests)
    assert seeds == [7, 7, 8, 8, 9, 9]  # three samples of each query, the first at the role's seed
    assert traces.height == 6 and sorted(traces["sample"].to_list()) == [0, 0, 1, 1, 2, 2]
    kept = traces.filter(pl.col("kept"))
    assert kept.select("id", "sample").rows() == [("q-stroke", 1)] and kept["correct_condition"][0]
    assert (stats["kept"], stats["queries"], stats["queries_kept"]) == (1, 2, 1)


def test_a_trace_is_correct_as_evaluation_scores_it():
    """'inconclusive' is a correct condition when the gold page was not among the documents shown
    (the evaluation's rule), so keep=correct keeps it; never when the gold page was shown."""
    from t0_pipeline.llm.calls import LLMReply
    from t0_pipeline.synthetic.traces import _trace

    row = {"id": "q", "query": "toe", "slug": "gout", "disposition": "Self-care"}
    row |= {"query_type": "basic", "age": 40, "sex": "male"}
    config = TraceConfig(keep="correct")

    def traced(slugs: list[str], answer: str) -> dict:
        job = (row, slugs, [s.title() for s in slugs], [1.0] * len(slugs), [], [""] * len(slugs))
        return _trace(job, 0, LLMReply(content=answer, thinking="Weighing it."), "m", "p", config)

    assert traced(["cellulitis"], "(inconclusive, Self-care)")["kept"]
    assert not traced(["gout", "cellulitis"], "(inconclusive, Self-care)")["kept"]
    assert traced(["gout", "cellulitis"], "(Gout, Self-care)")["kept"]
