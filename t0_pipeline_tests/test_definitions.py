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
    assert {
        "corpus_source",
        "condition_pages",
        "conditions",
        "summaries",
        "full_page_index",
        "summary_index",
        "full_page_bm25",
        "summary_bm25",
        "eval_queries",
        "retrieval_report",
    } <= keys
    parents = lambda name: {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}
    assert parents("condition_pages") == {"corpus_source"}
    assert parents("summary_index") == {"summaries", "retriever_model"}
    assert parents("retriever_model") == {"summaries", "conditions", "synthetic_queries"}
    assert parents("retrieval_report") == {
        "full_page_index",
        "summary_index",
        "full_page_bm25",
        "summary_bm25",
        "eval_queries",
    }
    assert graph.get(dg.AssetKey("conditions")).group_name == "corpus"
    assert graph.get(dg.AssetKey("retrieval_report")).group_name == "retrieval"
    assert len(list(graph.asset_check_keys)) >= 8
    assert {s.name for s in defs.schedules} == {"weekly_recrawl", "daily_corpus_observation"}


def observe_source(resources, instance) -> str:
    """Run an observation of corpus_source the way the daily schedule does; return its data
    version."""
    job = dg.define_asset_job("observe", selection=[corpus_source])
    result = (
        dg.Definitions(assets=[corpus_source], jobs=[job], resources=resources)
        .resolve_job_def("observe")
        .execute_in_process(instance=instance)
    )
    return result.get_asset_observation_events()[
        0
    ].asset_observation_data.asset_observation.data_version


def test_materialise_the_whole_graph_then_react_to_a_source_change(tmp_path):
    pages = write_jsonl(tmp_path / "pages.jsonl", PAGES)
    queries = write_jsonl(
        tmp_path / "q.jsonl", [{"query": "itchy blue fingers after ink", "condition": "ink-rash"}]
    )
    config = tmp_path / "t0.yaml"
    config.write_text(f"retrieval_eval:\n  queries: {queries}\n  ks: [1, 2]\n")
    resources = {
        "settings": PipelineSettings(
            data_dir=str(tmp_path / "data"),
            config_file=str(config),
            overrides={"source": {"kind": "pages", "location": str(pages)}},
        ),
    }
    # synthetic_data needs an LLM endpoint: see test_synthetic_assets
    offline = graph_subset({"corpus", "retrieval"})
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(offline, resources=resources, instance=instance, raise_on_error=True)
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) >= 8 and all(e.passed for e in evaluations), [
        (e.check_name, e.passed) for e in evaluations
    ]
    mats = {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert mats["conditions"]["dagster/row_count"].value == 4
    assert mats["full_page_index"]["embedded_chunks"].value >= 4
    assert "| full | hybrid | 1.000 |" in mats["retrieval_report"]["p_at_k"].value
    assert mats["retrieval_report"]["plot"].value.startswith("![p@k curves](data:image/png;base64,")
    data = tmp_path / "data"
    assert pl.read_parquet(data / "corpus" / "conditions.parquet").height == 4

    # a change to the source shows as a new data version, and an incremental rebuild touches one
    # document
    before = observe_source(resources, instance)
    changed = [dict(p) for p in PAGES]
    changed[1]["text"] += " It can also stain the nails."
    write_jsonl(pages, changed)
    after = observe_source(resources, instance)
    assert before and after and before != after
    again = dg.materialize(
        offline,
        resources=resources,
        instance=instance,
        selection="condition_pages*",
        raise_on_error=True,
    )
    mats = {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
        for e in again.get_asset_materialization_events()
    }
    assert (
        mats["condition_pages"]["changed"].value == 1
        and mats["condition_pages"]["unchanged"].value == 3
    )
    assert (
        mats["full_page_index"]["changed"].value == 1
        and mats["full_page_index"]["unchanged"].value == 3
    )


def test_the_default_graph_builds_on_an_unfamiliar_corpus_and_scores_its_synthetic_eval_split(
    tmp_path,
):
    """No query file configured: the sample's conditions are not in this corpus, so nothing fails
    and nothing is scored; once a synthetic evaluation split exists, eval_queries takes it (slug
    targets) and p@k follows."""
    pages = write_jsonl(tmp_path / "pages.jsonl", PAGES)
    resources = {
        "settings": PipelineSettings(
            data_dir=str(tmp_path / "data"),
            overrides={"source": {"kind": "pages", "location": str(pages)}},
        )
    }
    offline = graph_subset({"corpus", "retrieval"})
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(offline, resources=resources, instance=instance, raise_on_error=True)
    mats = {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert mats["eval_queries"]["source"].value == "bundled sample queries"
    assert (
        mats["eval_queries"]["dagster/row_count"].value == 0
        and mats["eval_queries"]["left_out"].value > 100
    )
    assert mats["retrieval_report"]["queries"].value == 0
    assert all(e.passed for e in result.get_asset_check_evaluations())

    # what synthetic_queries writes
    split = tmp_path / "data" / "synthetic" / "queries_eval.parquet"
    split.parent.mkdir(parents=True)
    pl.DataFrame(
        {
            "id": ["eval-00000", "eval-00001"],
            "slug": ["ink-rash", "chalk-lung"],
            "disposition": ["Self-care", "A&E"],
            "query": [
                "my fingers are blue and itchy after the printing job",
                "dry cough and wheeze, I teach all day at the blackboard",
            ],
        }
    ).write_parquet(split)
    again = dg.materialize(
        offline,
        resources=resources,
        instance=instance,
        selection="eval_queries*",
        raise_on_error=True,
    )
    mats = {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
        for e in again.get_asset_materialization_events()
    }
    assert mats["eval_queries"]["source"].value == "synthetic evaluation split"
    assert mats["eval_queries"]["dagster/row_count"].value == 2
    assert (
        mats["retrieval_report"]["queries"].value == 2
        and mats["retrieval_report"]["query_source"].value == "synthetic evaluation split"
    )
    assert (
        "| full | dense |" in mats["retrieval_report"]["p_at_k"].value
        and "| summaries | hybrid |" in mats["retrieval_report"]["p_at_k"].value
    )


def test_a_new_source_version_asks_for_exactly_the_cheap_chain_and_nothing_that_calls_a_model(
    tmp_path,
):
    """Dagster's own automation evaluation over the real definitions: after a source change, the
    corpus, summaries, indexes, evaluation queries and report are requested in one tick;
    model-calling, training and evaluation assets are not (automation.synthetic_data / training are
    off by default)."""
    from t0_pipeline.definitions import defs as location

    pages = write_jsonl(tmp_path / "pages.jsonl", PAGES)
    resources = {
        "settings": PipelineSettings(
            data_dir=str(tmp_path / "data"),
            overrides={"source": {"kind": "pages", "location": str(pages)}},
        )
    }
    graph = location.resolve_asset_graph()
    from t0_pipeline.defs.resources import ModelServer, TrainingCompute

    defs = dg.Definitions(
        assets=list(location.assets),
        asset_checks=list(location.asset_checks),
        resources={
            **resources,
            "training_compute": TrainingCompute(),
            "model_server": ModelServer(),
        },
    )
    instance = dg.DagsterInstance.ephemeral()
    # as `make demo` does first: the source's version is on record
    observe_source(resources, instance)
    dg.materialize(
        graph_subset({"corpus", "retrieval"}),
        resources=resources,
        instance=instance,
        raise_on_error=True,
    )

    def requested(result) -> set[str]:
        return {
            k.to_user_string() for k in graph.get_all_asset_keys() if result.get_num_requested(k)
        }

    quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert requested(quiet) == set()  # everything is up to date with the observed source
    assert (
        requested(
            dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
        )
        == set()
    )

    changed = [dict(p) for p in PAGES]
    changed[0]["text"] += " Teachers who use dustless chalk are less affected."
    write_jsonl(pages, changed)
    observe_source(resources, instance)
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
    assert requested(after) == {
        "condition_pages",
        "conditions",
        "summaries",
        "full_page_index",
        "summary_index",
        "full_page_bm25",
        "summary_bm25",
        "eval_queries",
        "retrieval_report",
    }


def test_a_prompt_edit_marks_exactly_the_assets_that_render_it_stale(tmp_path):
    """Code versions hash each asset's stage modules and prompt files; Dagster reads a changed one
    as stale."""
    import shutil
    from importlib import resources as package

    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    from t0_pipeline.defs.versions import DEPENDS_ON, code_version

    prompts = tmp_path / "prompts"
    shutil.copytree(str(package.files("t0_pipeline") / "prompts"), prompts)
    before = {asset: code_version(asset, prompts) for asset in DEPENDS_ON}
    # identical copies: same versions
    assert before == {asset: code_version(asset, None) for asset in DEPENDS_ON}
    triage = prompts / "triage.txt"
    triage.write_text(triage.read_text().replace("most likely explains it", "best explains it"))
    after = {asset: code_version(asset, prompts) for asset in DEPENDS_ON}
    assert {a for a in DEPENDS_ON if before[a] != after[a]} == {
        "reasoning_traces",
        "sft_dataset",
        "accuracy_report",
    }

    def traces_at(version: str):
        @dg.asset(name="reasoning_traces", code_version=version)
        def traces() -> None:
            return None

        return traces

    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([traces_at(before["reasoning_traces"])], instance=instance)
    key = dg.AssetKey("reasoning_traces")
    for version, status in (
        (before["reasoning_traces"], StaleStatus.FRESH),
        (after["reasoning_traces"], StaleStatus.STALE),
    ):
        graph = dg.Definitions(assets=[traces_at(version)]).resolve_asset_graph()
        assert (
            CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance)).get_status(
                key
            )
            == status
        )


def test_code_versions_follow_the_code_not_its_layout_comments_or_docstrings():
    from t0_pipeline.defs.versions import code_fingerprint

    original = b"def cut(x, limit=5):\n    return x[:limit]  # keep the head\n"
    reformatted = (
        b"# a helper\ndef cut(\n    x,\n    limit=5,\n):\n    return x[\n        :limit\n    ]\n"
    )
    changed = b"def cut(x, limit=6):\n    return x[:limit]  # keep the head\n"
    documented = b'def cut(x, limit=5):\n    """The head."""\n    return x[:limit]\n'
    assert (
        code_fingerprint(original) == code_fingerprint(reformatted) == code_fingerprint(documented)
    )
    assert code_fingerprint(original) != code_fingerprint(changed)


def test_a_prompts_folder_with_the_former_triage_file_name_still_replaces_the_triage_prompt(
    tmp_path, caplog
):
    """The triage prompt was ``evaluator.txt``: a user's copy under that name keeps working, with a
    warning that says how to rename it, and the assets it feeds follow its edits."""
    from importlib import resources as package

    from t0_pipeline.defs.versions import code_version
    from t0_pipeline.task import prompt as triage_prompt

    shipped = (package.files("t0_pipeline") / "prompts" / "triage.txt").read_text()
    (tmp_path / "evaluator.txt").write_text(
        shipped.replace("decide which {{topic}}", "work out which {{topic}}")
    )
    with caplog.at_level("WARNING"):
        sections, digest = triage_prompt.load(tmp_path)
    assert "work out which condition" in sections["system"]  # a user's copy has the domain's words
    assert digest != triage_prompt.load(None)[1]
    assert "rename it to triage.txt" in caplog.text
    assert code_version("sft_dataset", tmp_path) != code_version("sft_dataset", None)
    (tmp_path / "triage.txt").write_text(shipped)  # the new name wins over the old one
    assert triage_prompt.load(tmp_path)[1] == triage_prompt.load(None)[1]
