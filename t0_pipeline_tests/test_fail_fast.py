"""Model stages stop quickly, with one line naming the role, the URL and what to do, when the
endpoint itself is the problem (nothing listening, key refused, model not served) or most calls
fail; nothing produced is lost."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import polars as pl
import pytest

from t0_pipeline.artifacts import T0Error, sha256_text
from t0_pipeline.config import (
    BudgetConfig,
    DataPaths,
    LLMConfig,
    QueryGenConfig,
    RoleConfig,
    SummaryConfig,
    TraceConfig,
)
from t0_pipeline.llm.calls import EndpointError
from t0_pipeline_tests.fake_llm import FakeLLM
from t0_pipeline_tests.serving import free_port
from t0_pipeline_tests.test_synth import PAGES, writer_reply


def corpus(tmp_path) -> DataPaths:
    paths = DataPaths(tmp_path / "data")
    paths.conditions.parent.mkdir(parents=True)
    pl.DataFrame(
        {
            "slug": list(PAGES),
            "title": [t for t, _ in PAGES.values()],
            "url": [""] * len(PAGES),
            "text": [x for _, x in PAGES.values()],
            "content_hash": [sha256_text(x) for _, x in PAGES.values()],
        }
    ).write_parquet(paths.conditions)
    return paths


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # a port nothing listens on


def llm_for(role: str, api_base: str, **llm) -> LLMConfig:
    return LLMConfig(
        roles={role: RoleConfig(model="openai/m", api_base=api_base, timeout_s=5)}, **llm
    )


def test_query_writing_with_no_server_stops_after_its_unreachable_window_at_the_defaults(tmp_path):
    """As a new user meets it: `t0 synth-queries` with nothing listening, every retry setting at its
    default. It gives up once nothing has answered for ``llm.unreachable_after_s`` (20 s) or its
    failure budget is spent, not after retrying each of its 900 queries; the message says how long
    it waited. The wall-clock bound is
    loose (start-up on a loaded 2-core machine varies); timings belong in benchmarks/."""
    paths, url = corpus(tmp_path), closed_url()
    config = tmp_path / "t0.yaml"
    # a partial file: the rest default
    config.write_text(f"llm:\n  roles:\n    query_writer:\n      api_base: {url}\n")
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "t0_pipeline.cli",
            "synth-queries",
            "--data-dir",
            str(paths.root),
            "--config",
            str(config),
            "--n-eval",
            "300",
            "--n-train",
            "600",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    assert done.returncode != 0 and took < 110, (took, done.stderr[-2000:])
    last = done.stderr.strip().splitlines()[-1]
    assert (
        "query_writer" in last and url in last and "nothing answers" in last and "api_base" in last
    ), last
    waited = int(re.search(r"\) for (\d+) s;", last).group(1))
    # stopped at the default window (or sooner, when the failure budget ran out first)
    assert waited <= 40, last
    assert not paths.synthetic_queries("eval").exists()  # nothing half-written


@pytest.mark.parametrize("stage", ["summarise", "traces", "evaluate-chat", "evaluate-budget"])
def test_every_model_stage_stops_on_an_unreachable_endpoint(tmp_path, built, retriever, stage):
    from t0_pipeline.evaluation.accuracy import run_evaluation
    from t0_pipeline.evaluation.cases import EvaluationInputs
    from t0_pipeline.synthetic.summarise import run_summarise
    from t0_pipeline.synthetic.traces import run_traces

    url = closed_url()
    fast = {"unreachable_after_s": 2.0, "backoff_s": 0.2}
    started = time.monotonic()
    with pytest.raises(EndpointError) as caught:
        if stage == "summarise":
            paths = corpus(tmp_path)
            run_summarise(paths, SummaryConfig(backend="llm"), llm_for("summariser", url, **fast))
        elif stage == "traces":
            paths = corpus(tmp_path)
            queries = [
                {
                    "id": f"t{i}",
                    "slug": "stroke",
                    "disposition": "A&E",
                    "query": f"my face dropped {i}",
                    "age": 70,
                    "sex": "male",
                    "occupation": "retired",
                    "social_support": "lives alone",
                    "medical_history": "none",
                }
                for i in range(40)
            ]
            paths.synthetic_queries("train").parent.mkdir(parents=True)
            pl.DataFrame(queries).write_parquet(paths.synthetic_queries("train"))
            run_traces(paths, TraceConfig(), llm_for("teacher", url, **fast), retriever)
        else:
            from t0_pipeline.config import EvalModelConfig
            from t0_pipeline_tests.test_accuracy import QUERIES

            cfg, paths = built
            cfg = cfg.model_copy(deep=True)
            cfg.llm = cfg.llm.model_copy(update={**fast, "cache_path": tmp_path / "cache.sqlite"})
            budget = (
                {"backend": "completions", "budget": BudgetConfig().with_format()}
                if stage == "evaluate-budget"
                else {}
            )
            cfg.evaluation.models = {"m": EvalModelConfig(model="openai/m", api_base=url, **budget)}
            from t0_pipeline_tests.conftest import write_jsonl

            cfg.evaluation.queries = write_jsonl(tmp_path / "q.jsonl", QUERIES[:6])
            cfg.evaluation.runs = 3
            run_evaluation(paths, EvaluationInputs.resolve(cfg, paths, retriever), "m")
    took = time.monotonic() - started
    message = str(caught.value)
    assert url in message and "nothing answers" in message and took < 15, (took, message)
    role = {"summarise": "summariser", "traces": "teacher"}.get(stage, "m")
    assert message.startswith(f"{role}:")
    assert (
        "evaluation.models.m.api_base"
        if stage.startswith("evaluate")
        else f"llm.roles.{role}.api_base"
    ) in message


def test_a_refused_key_stops_the_stage_at_the_first_answer(tmp_path):
    from t0_pipeline.synthetic.queries import run_generate_queries

    with FakeLLM() as server:
        # every request: HTTP 401, as a gateway answers a bad key
        server.on(".*", writer_reply, faults=[401] * 1000)
        paths = corpus(tmp_path)
        llm = llm_for("query_writer", server.api_base, backoff_s=0.01)
        with pytest.raises(
            EndpointError,
            match=r"query_writer: http://127\.0\.0\.1:\d+/v1 refused the API key .*"
            r"set \$T0_LLM_API_KEY to a valid key",
        ):
            run_generate_queries(paths, QueryGenConfig(n_eval=200, n_train=200), llm)
        # the calls already in flight, then nothing
        assert len(server.state.requests) <= llm.concurrency * 2


def test_a_model_the_server_does_not_serve_is_named(tmp_path):
    from t0_pipeline.synthetic.summarise import run_summarise

    with FakeLLM() as server:
        server.on(".*", "unused", faults=[404] * 100)
        paths = corpus(tmp_path)
        with pytest.raises(
            EndpointError, match=r"does not serve 'm' .*fix llm\.roles\.summariser\.model"
        ):
            run_summarise(
                paths,
                SummaryConfig(backend="llm"),
                llm_for("summariser", server.api_base, backoff_s=0.01),
            )


def test_a_stage_where_most_calls_fail_stops_at_the_failure_budget_and_keeps_what_succeeded(
    tmp_path,
):
    from t0_pipeline.llm.cache import LLMCache
    from t0_pipeline.synthetic.queries import run_generate_queries

    with FakeLLM() as server:
        # four pages in six cannot be written about: the server rejects those prompts (HTTP 400, not
        # retried)
        server.on('"(Beta cough|Gamma pain|Delta rash|Eps ache)"', "unused", faults=[400] * 10_000)
        server.on(".*", writer_reply)
        paths = corpus(tmp_path)
        llm = llm_for("query_writer", server.api_base, backoff_s=0.01, concurrency=2)
        with pytest.raises(
            T0Error,
            match=r"query_writer: \d+ of \d+ calls .* failed \(most often BadRequestError.*"
            r"failure budget llm\.max_failure_share=0\.5; stopped",
        ):
            run_generate_queries(paths, QueryGenConfig(n_eval=300, n_train=300), llm)
        assert len(server.state.requests) < 100  # not 600 draws
        assert not paths.synthetic_queries("eval").exists()
        assert len(LLMCache(paths.llm_cache(llm))) > 0  # what succeeded is cached for the re-run


def test_progress_counts_the_whole_stage_across_top_up_rounds(tmp_path):
    from t0_pipeline.synthetic.queries import run_generate_queries

    with FakeLLM() as server:
        server.on(".*", writer_reply)
        paths = corpus(tmp_path)
        lines: list[str] = []
        cfg = QueryGenConfig(n_eval=18, n_train=12, seed=7)
        _, _, report = run_generate_queries(
            paths,
            cfg,
            llm_for("query_writer", server.api_base, backoff_s=0.01),
            progress=lines.append,
        )
    counts = [tuple(map(int, line.split(": ", 1)[1].split(" ")[0].split("/"))) for line in lines]
    assert all(line.startswith("synthetic queries: ") for line in lines)
    # one count, never restarting per round
    assert [d for d, _ in counts] == sorted(d for d, _ in counts)
    planned = 18 + 12 + report["train"]["top_up_draws"]
    assert report["train"]["top_up_draws"] > 0 and counts[-1] == (planned, planned)
    # top-ups may spend at most as many draws as the training set
    assert report["train"]["top_up_draws"] <= 12


def test_top_up_draws_are_bounded_by_the_setting(tmp_path):
    from t0_pipeline.synthetic.queries import run_generate_queries

    with FakeLLM() as server:
        server.on(".*", writer_reply)
        paths = corpus(tmp_path)
        llm = llm_for("query_writer", server.api_base, backoff_s=0.01)
        _, train, report = run_generate_queries(
            paths, QueryGenConfig(n_eval=18, n_train=12, seed=7, max_top_up_draws=0), llm
        )
    assert report["train"]["top_up_draws"] == 0 and report["train"]["removed_overlaps"] > 0
    assert (
        train.height == 12 - report["train"]["removed_overlaps"] - report["train"]["repeated_texts"]
    )
    assert (
        json.loads(paths.synthetic_queries("report").with_suffix(".json").read_text())["train"][
            "top_up_draws"
        ]
        == 0
    )
