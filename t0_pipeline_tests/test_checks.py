"""The pure validators behind the asset checks that had their logic inline before: each names what
is wrong."""

from __future__ import annotations

import polars as pl

from t0_pipeline.checks import (
    crawl_failures,
    embedder_choice_problems,
    json_validity_problems,
    json_validity_rate,
    parsable_in_retrieved_share,
    query_rate_problems,
    query_rates,
    traces_outside_retrieved,
    unresolvable_queries,
)
from t0_pipeline.retrieval.evaluate import EvalQuery


def test_crawl_failures_name_page_address_and_reason():
    report = {
        "failed": [{"slug": "gout", "url": "https://x/gout/", "error": "HTTP 503 after 4 attempts"}]
    }
    assert crawl_failures(report) == ["gout (https://x/gout/): HTTP 503 after 4 attempts"]
    assert crawl_failures({"failed": []}) == []


def test_queries_whose_targets_left_the_corpus_are_named():
    queries = [
        EvalQuery("my toe is red and hot", ["gout"], {}),
        EvalQuery("itchy rash", ["scabies", "hives"], {}),
        EvalQuery("a cough for weeks", ["removed-page"], {}),
    ]
    assert unresolvable_queries(queries, {"gout", "hives"}) == ["a cough for weeks"]


def test_the_tuned_embedder_is_used_exactly_when_it_gained():
    gained, lost = {"used": True, "gain": 0.05}, {"used": False, "gain": -0.01}
    assert embedder_choice_problems(gained, tuned_in_use=True) == []
    assert embedder_choice_problems(lost, tuned_in_use=False) == []
    assert "did not measure it better" in embedder_choice_problems(lost, tuned_in_use=True)[0]
    assert "do not use it" in embedder_choice_problems(gained, tuned_in_use=False)[0]
    assert (
        "gain of 0.0" in embedder_choice_problems({"used": True, "gain": 0.0}, tuned_in_use=True)[0]
    )


def test_query_writer_json_and_rates():
    # 100 replies, 5 invalid
    usage = {
        "completed": 90,
        "cache_hits": 20,
        "repairs": 10,
        "invalid_json": 5,
    }
    assert json_validity_rate(usage) == 0.95 and json_validity_problems(usage) == []
    assert "94.0% of replies" in json_validity_problems({**usage, "invalid_json": 6})[0]
    split = {"requested": 50, "failures": [], "refusals": 0}
    report = {
        "eval": {**split, "failures": ["a", "b"]},
        "train": {**split, "refusals": 10, "top_up_draws": 0},
    }
    assert query_rates(report) == {"failure_rate": 0.02, "refusal_rate": 10 / 110}
    problems = query_rate_problems(report, max_failure_rate=0.01, max_refusal_rate=0.05)
    assert problems == ["failure rate 2.0% is over 1.0%", "refusal rate 9.1% is over 5.0%"]
    assert query_rate_problems(report, 0.05, 0.10) == []


def test_kept_traces_must_answer_from_what_they_were_shown():
    traces = pl.DataFrame(
        {
            "id": ["t1", "t2", "t3", "t4"],
            "kept": [True, True, False, False],
            "parsable": [True, True, True, False],
            "condition_in_retrieved": [True, False, False, False],
        }
    )
    assert traces_outside_retrieved(traces) == ["t2"]
    assert parsable_in_retrieved_share(traces) == 1 / 3
