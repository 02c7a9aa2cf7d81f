"""The synthetic_data asset group materialised end to end against the loopback model server."""

from __future__ import annotations

import re

import dagster as dg
import yaml

from t0_pipeline.definitions import defs
from t0_pipeline.defs.resources import ModelServer, PipelineSettings
from t0_pipeline_tests.conftest import graph_subset, write_jsonl
from t0_pipeline_tests.fake_llm import FakeLLM
from t0_pipeline_tests.test_cli import PAGES
from t0_pipeline_tests.test_synth import writer_reply


def teacher_reply(messages):
    # documents: the system turn; thinking (inline, as a reasoning model writes it) about the
    # patient's message and the document it picks, as the content checks want
    first_title = re.search(r"\[1\] (.+?) \(score", messages[0]["content"]).group(1)
    said = messages[-1]["content"].splitlines()[-1][:120]
    thinking = f"The patient says: {said}. The first document, {first_title}, fits best."
    return f"<think>{thinking}</think>\n({first_title}, Urgent Primary Care)"


def metadata(result):
    return {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }


def test_synthetic_group_end_to_end_and_warm_rerun_makes_no_calls(tmp_path):
    with FakeLLM() as server:
        server.on(
            "condensing a health information page", "Symptoms are mild. Call 111 if they get worse."
        )
        server.on("send to NHS 111", writer_reply)
        server.on("triage patients", teacher_reply)
        role = {"model": "openai/fake", "api_base": server.api_base}
        config = tmp_path / "t0.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "llm": {
                        "roles": {"summariser": role, "query_writer": role, "teacher": role},
                        "backoff_s": 0.01,
                    },
                    "queries": {"n_eval": 6, "n_train": 6, "seed": 3},
                    "traces": {"k": 2, "keep": "parsable"},
                    # measured and served on the traces' contexts too
                    "evaluation": {"ks": [0, 2]},
                    "serve": {"profiles": {"t0": {"k": 2}}},
                    "sft": {"block_size": 4096},
                    "retrieval_eval": {"ks": [1, 2]},
                }
            )
        )
        queries = write_jsonl(
            tmp_path / "q.jsonl",
            [{"query": "itchy blue fingers after ink", "condition": "ink-rash"}],
        )
        cfg = yaml.safe_load(config.read_text())
        cfg["retrieval_eval"]["queries"] = str(queries)
        config.write_text(yaml.safe_dump(cfg))
        resources = {
            "settings": PipelineSettings(
                data_dir=str(tmp_path / "data"),
                config_file=str(config),
                overrides={
                    "source": {
                        "kind": "pages",
                        "location": str(write_jsonl(tmp_path / "pages.jsonl", PAGES)),
                    }
                },
            ),
            "model_server": ModelServer(),  # no role here has a serve section: none is started
        }
        # training has its own test (test_train.py)
        everything = graph_subset({"corpus", "retrieval", "synthetic_data"})
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize(
            everything, resources=resources, instance=instance, raise_on_error=True
        )
        evaluations = {
            (e.asset_key.to_user_string(), e.check_name): e.passed
            for e in result.get_asset_check_evaluations()
        }
        assert all(evaluations.values()), evaluations
        assert ("synthetic_queries", "eval_train_disjoint") in evaluations
        assert ("reasoning_traces", "trace_conditions_retrieved") in evaluations
        meta = metadata(result)
        assert (
            meta["llm_summaries"]["dagster/row_count"].value == 4
            and meta["llm_summaries"]["llm_calls"].value == 4
        )
        assert (
            meta["synthetic_queries"]["eval_queries"].value == 6
            and meta["synthetic_queries"]["train_queries"].value == 6
        )
        assert (
            meta["reasoning_traces"]["traces"].value == 6
            and meta["reasoning_traces"]["kept"].value == 6
        )
        assert meta["sft_dataset"]["examples"].value == 6
        assert "| llm_summaries | hybrid |" in meta["summary_comparison"]["p_at_k"].value
        calls = len(server.state.requests)

        synthetic = [
            a for a in graph_subset({"synthetic_data"}) if isinstance(a, dg.AssetsDefinition)
        ]
        again = dg.materialize(
            synthetic, resources=resources, instance=instance, raise_on_error=True
        )
        assert len(server.state.requests) == calls  # warm cache: zero model calls
        meta = metadata(again)
        assert (
            meta["synthetic_queries"]["llm_calls"].value == 0
            and meta["synthetic_queries"]["llm_cache_hits"].value > 0
        )
        assert meta["reasoning_traces"]["llm_cache_hits"].value == 6

    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("reasoning_traces")).parent_keys}
    # hybrid search of the summaries fuses the full pages' dense and BM25 rankings: all four
    # indexes
    assert parents == {
        "synthetic_queries",
        "summary_index",
        "summary_bm25",
        "full_page_index",
        "full_page_bm25",
    }
    assert graph.get(dg.AssetKey("reasoning_traces")).pools == {"llm"}
