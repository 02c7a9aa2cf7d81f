"""The Dagster asset graph, materialised end to end in-process on a small pages file."""

from __future__ import annotations

import dagster as dg
import polars as pl

from t0_pipeline.definitions import defs
from t0_pipeline.defs.corpus import corpus_source
from t0_pipeline.defs.resources import PipelineSettings
from t0_pipeline_tests.conftest import graph_subset, write_jsonl
from t0_pipeline_tests.test_cli import PAGES


def test_definitions_load_with_lineage_groups_and_checks():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"corpus_source", "condition_pages", "conditions", "summaries", "full_page_index", "summary_index",
            "full_page_bm25", "summary_bm25", "eval_queries", "retrieval_report"} <= keys
    parents = lambda name: {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}
    assert parents("condition_pages") == {"corpus_source"}
    assert parents("summary_index") == {"summaries"}
    assert parents("retrieval_report") == {"full_page_index", "summary_index", "full_page_bm25", "summary_bm25", "eval_queries"}
    assert graph.get(dg.AssetKey("conditions")).group_name == "corpus"
    assert graph.get(dg.AssetKey("retrieval_report")).group_name == "retrieval"
    assert len(list(graph.asset_check_keys)) >= 8
    assert {s.name for s in defs.schedules} == {"weekly_recrawl", "daily_corpus_observation"}


def observe_source(resources, instance) -> str:
    """Run an observation of corpus_source the way the daily schedule does; return its data version."""
    job = dg.define_asset_job("observe", selection=[corpus_source])
    result = dg.Definitions(assets=[corpus_source], jobs=[job], resources=resources).resolve_job_def("observe").execute_in_process(
        instance=instance)
    return result.get_asset_observation_events()[0].asset_observation_data.asset_observation.data_version


def test_materialise_the_whole_graph_then_react_to_a_source_change(tmp_path):
    pages = write_jsonl(tmp_path / "pages.jsonl", PAGES)
    queries = write_jsonl(tmp_path / "q.jsonl", [{"query": "itchy blue fingers after ink", "condition": "ink-rash"}])
    config = tmp_path / "t0.yaml"
    config.write_text(f"retrieval_eval:\n  queries: {queries}\n  ks: [1, 2]\n")
    resources = {
        "settings": PipelineSettings(data_dir=str(tmp_path / "data"), config_file=str(config), overrides={"source": {
            "kind": "pages", "location": str(pages)}}),
    }
    offline = graph_subset({"corpus", "retrieval"})  # synthetic_data needs an LLM endpoint: see test_synthetic_assets
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(offline, resources=resources, instance=instance, raise_on_error=True)
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) >= 8 and all(e.passed for e in evaluations), [(e.check_name, e.passed) for e in evaluations]
    mats = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert mats["conditions"]["dagster/row_count"].value == 4
    assert mats["full_page_index"]["embedded_chunks"].value >= 4
    assert "| full | hybrid | 1.000 |" in mats["retrieval_report"]["p_at_k"].value
    assert mats["retrieval_report"]["plot"].value.startswith("![p@k curves](data:image/png;base64,")
    data = tmp_path / "data"
    assert pl.read_parquet(data / "corpus" / "conditions.parquet").height == 4

    # a change to the source shows as a new data version, and an incremental rebuild touches one document
    before = observe_source(resources, instance)
    changed = [dict(p) for p in PAGES]
    changed[1]["text"] += " It can also stain the nails."
    write_jsonl(pages, changed)
    after = observe_source(resources, instance)
    assert before and after and before != after
    again = dg.materialize(offline, resources=resources, instance=instance,
                           selection="condition_pages*", raise_on_error=True)
    mats = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
            for e in again.get_asset_materialization_events()}
    assert mats["condition_pages"]["changed"].value == 1 and mats["condition_pages"]["unchanged"].value == 3
    assert mats["full_page_index"]["changed"].value == 1 and mats["full_page_index"]["unchanged"].value == 3


def test_the_default_graph_builds_on_a_corpus_unlike_the_sample_then_scores_its_synthetic_evaluation_split(tmp_path):
    """No query file configured: the sample's conditions are not in this corpus, so nothing fails and nothing is
    scored; once a synthetic evaluation split exists, eval_queries takes it (slug targets) and p@k follows."""
    pages = write_jsonl(tmp_path / "pages.jsonl", PAGES)
    resources = {"settings": PipelineSettings(data_dir=str(tmp_path / "data"), overrides={"source": {
        "kind": "pages", "location": str(pages)}})}
    offline = graph_subset({"corpus", "retrieval"})
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(offline, resources=resources, instance=instance, raise_on_error=True)
    mats = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert mats["eval_queries"]["source"].value == "bundled sample queries"
    assert mats["eval_queries"]["dagster/row_count"].value == 0 and mats["eval_queries"]["left_out"].value > 100
    assert mats["retrieval_report"]["queries"].value == 0
    assert all(e.passed for e in result.get_asset_check_evaluations())

    split = tmp_path / "data" / "synthetic" / "queries_eval.parquet"  # what synthetic_queries writes
    split.parent.mkdir(parents=True)
    pl.DataFrame({"id": ["eval-00000", "eval-00001"], "slug": ["ink-rash", "chalk-lung"],
                  "disposition": ["Self-care", "A&E"],
                  "query": ["my fingers are blue and itchy after the printing job",
                            "dry cough and wheeze, I teach all day at the blackboard"]}).write_parquet(split)
    again = dg.materialize(offline, resources=resources, instance=instance, selection="eval_queries*",
                           raise_on_error=True)
    mats = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
            for e in again.get_asset_materialization_events()}
    assert mats["eval_queries"]["source"].value == "synthetic evaluation split"
    assert mats["eval_queries"]["dagster/row_count"].value == 2
    assert mats["retrieval_report"]["queries"].value == 2 and mats["retrieval_report"]["query_source"].value == \
        "synthetic evaluation split"
    assert "| full | dense |" in mats["retrieval_report"]["p_at_k"].value and "| summaries | hybrid |" in \
        mats["retrieval_report"]["p_at_k"].value
