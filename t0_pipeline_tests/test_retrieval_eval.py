"""p@k: pure scoring, query validation, and the saved report."""

from __future__ import annotations

import polars as pl
import pytest

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import RetrievalEvalConfig
from t0_pipeline.retrieval.evaluate import (
    evaluate_retrieval,
    first_hit_rank,
    load_queries,
    precision_at_k,
)
from t0_pipeline.retrieval.retrieve import Retriever
from t0_pipeline_tests.conftest import write_jsonl


def test_first_hit_rank_accepts_any_acceptable_target():
    assert first_hit_rank(["a", "b", "c"], ["c"]) == 3
    assert first_hit_rank(["a", "b", "c"], ["x", "b"]) == 2
    assert first_hit_rank(["a", "b"], ["z"]) is None


def test_precision_at_k():
    assert precision_at_k([1, 3, None, 10], [1, 5, 10]) == {1: 0.25, 5: 0.5, 10: 0.75}
    assert precision_at_k([], [1]) == {1: 0.0}


def test_query_file_validation_names_record_and_field(tmp_path):
    cfg = RetrievalEvalConfig(query_field="text", target_field="gold")
    good = write_jsonl(
        tmp_path / "q.jsonl",
        [{"text": "itch", "gold": ["x", "acne"]}, {"text": "cough", "gold": "cold"}],
    )
    assert [q.targets for q in load_queries(good, cfg, {"acne", "cold"})] == [
        ["x", "acne"],
        ["cold"],
    ]
    with pytest.raises(T0Error, match=r"record 2: field 'text' is missing"):
        load_queries(
            write_jsonl(tmp_path / "a.jsonl", [{"text": "a", "gold": "acne"}, {"gold": "acne"}]),
            cfg,
        )
    with pytest.raises(T0Error, match=r"record 1: field 'gold' must be a slug"):
        load_queries(write_jsonl(tmp_path / "b.jsonl", [{"text": "a", "gold": 3}]), cfg)
    with pytest.raises(
        T0Error, match=r"1 queries name targets .* not in the corpus, e.g. record 2 \(nope\)"
    ):
        load_queries(
            write_jsonl(
                tmp_path / "c.jsonl", [{"text": "a", "gold": "acne"}, {"text": "b", "gold": "nope"}]
            ),
            cfg,
            {"acne"},
        )


def test_report_on_the_sample_corpus(built, embedder):
    cfg, paths = built
    retrievers = {i: Retriever(i, paths, embedder=embedder) for i in ("full", "summaries")}
    report = evaluate_retrieval(paths, RetrievalEvalConfig(), retrievers)
    table = report.table
    assert table.height == 6 and report.n_queries == 123
    for row in table.iter_rows(named=True):
        values = [row[f"p@{k}"] for k in (1, 5, 10, 30, 50, 100)]
        # 41 documents: all of them are in the top 100
        assert values == sorted(values) and values[-1] == 1.0
        # the sample queries are answerable: a regression here means retrieval broke
        assert values[1] >= 0.8
    assert report.csv.exists() and report.png.read_bytes()[:4] == b"\x89PNG"
    assert "| full | hybrid |" in report.markdown
    ranks = pl.read_parquet(report.ranks)
    assert ranks.height == 6 * 123 and ranks["rank"].null_count() == 0


def test_agent_search_queries_are_scored_beside_the_queries_as_written(built, embedder, tmp_path):
    """The agent of a serve profile (the scripted model server, OpenAI tool calls) turns each query
    into its search query exactly as a served turn does; the report scores both and says how many
    were rewritten."""
    from t0_pipeline.config import RoleConfig
    from t0_pipeline.llm.cache import LLMCache
    from t0_pipeline.serve.agent_search import agent_search_queries
    from t0_pipeline_tests.fake_llm import FakeLLM
    from t0_pipeline_tests.serving import script

    cfg, paths = built
    cfg = cfg.model_copy(deep=True)
    texts = ["hello", "my big toe is red hot and swollen", "sneezing and itchy eyes every summer"]
    with FakeLLM() as server:
        script(server)
        cfg.llm.roles["agent"] = RoleConfig(
            model="openai/agent", api_base=server.api_base, seed=None
        )
        cfg.serve.profiles["t0"].agent = "agent"  # a running server (not the student's base)
        cache = LLMCache(tmp_path / "cache.sqlite")
        rewritten, counts = agent_search_queries(cfg, "t0", texts, cache)
        asked = len(server.state.requests)
        again, _ = agent_search_queries(cfg, "t0", texts, cache)  # cached: no new calls
        assert len(server.state.requests) == asked
    # a greeting is not searched
    assert rewritten == again == ["hello", f"symptoms: {texts[1]}", f"symptoms: {texts[2]}"]
    assert counts == {"rewritten": 2, "kept": 1, "failed": 0}

    queries = load_queries(
        write_jsonl(
            tmp_path / "q.jsonl",
            [
                {"query": t, "condition": c}
                for t, c in zip(texts, ["common-cold", "gout", "hay-fever"])
            ],
        ),
        RetrievalEvalConfig(),
    )
    ev = RetrievalEvalConfig(indexes=["summaries"], modes=["dense"], ks=[1, 5])
    retrievers = {"summaries": Retriever("summaries", paths, embedder=embedder)}
    report = evaluate_retrieval(
        paths, ev, retrievers, queries, out_dir=tmp_path / "out", rewritten=rewritten
    )
    assert report.table["mode"].to_list() == ["dense", "dense+agent"]
    assert "| summaries | dense+agent |" in report.markdown
    with pytest.raises(T0Error, match="must pair up"):
        evaluate_retrieval(
            paths, ev, retrievers, queries, out_dir=tmp_path / "out", rewritten=rewritten[:2]
        )
    with pytest.raises(T0Error, match="serve profile 'nope'"):
        agent_search_queries(cfg, "nope", texts)
