"""Accuracy evaluation against the loopback model server: every predictor, bad answers, caching,
reports."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from t0_pipeline.checks import students_below_base
from t0_pipeline.config import BudgetConfig, DataPaths, EvalModelConfig
from t0_pipeline.evaluation.accuracy import run_evaluation
from t0_pipeline.evaluation.baseline import disposition_from_page, urgency_passages
from t0_pipeline.evaluation.cases import EvaluationInputs, load_eval_queries
from t0_pipeline.evaluation.predictors import TOOL_NAME
from t0_pipeline.evaluation.tables import combine
from t0_pipeline_tests.conftest import write_jsonl
from t0_pipeline_tests.fake_llm import FakeLLM, budget_student

QUERIES = [
    {
        "id": "e1",
        "query": "My face dropped on one side and my speech is slurred",
        "slug": "stroke",
        "disposition": "A&E",
        "query_type": "basic",
        "age": 70,
        "sex": "male",
    },
    {
        "id": "e2",
        "query": "My big toe joint is red, hot and very painful since last night",
        "slug": "gout",
        "disposition": "Urgent Primary Care",
        "query_type": "downplay",
    },
    {
        "id": "e3",
        "query": "Itchy eyes and sneezing every June when the grass is cut",
        "slug": "hay-fever",
        "disposition": "Self-care",
        "query_type": "hypochondriac",
    },
    {
        "id": "e4",
        "query": "Runny nose and a scratchy throat for two days",
        "slug": "common-cold",
        "disposition": "Self-care",
        "query_type": "basic",
    },
    {
        "id": "e5",
        "query": "Crushing chest pain spreading to my left arm and I feel sweaty",
        "slug": "heart-attack",
        "disposition": "A&E",
        "query_type": "basic",
    },
    {
        "id": "e6",
        "query": "Painful burning when I pee and I need to go all the time",
        "slug": "urinary-tract-infections",
        "disposition": "Urgent Primary Care",
        "query_type": "downplay",
    },
    {"query": "", "slug": "gout", "disposition": "Self-care"},  # no text: skipped and counted
    {
        "query": "sore knee",
        "slug": "gout",
        "disposition": "Critical",
    },  # not one of the three: skipped and counted
]


def user_query(messages) -> str:
    return messages[-1]["content"].rsplit("\n", 1)[-1]


def system(messages) -> str:
    return messages[0]["content"]


def configure(built, tmp_path, models: dict[str, dict], **evaluation):
    cfg, paths = built
    cfg = cfg.model_copy(deep=True)
    cfg.llm.cache_path = tmp_path / "cache.sqlite"
    cfg.llm.max_attempts, cfg.llm.backoff_s = 1, 0.01
    cfg.evaluation.models = {name: EvalModelConfig(**m) for name, m in models.items()}
    cfg.evaluation.queries = write_jsonl(
        tmp_path / "queries.jsonl", evaluation.pop("queries", QUERIES)
    )
    for key, value in evaluation.items():
        setattr(cfg.evaluation, key, value)
    return cfg, paths


def tool_model(messages):
    text = user_query(messages)
    if "face dropped" in text:
        return [("submit_condition_recommendation", {"condition": "Stroke", "severity": "A&E"})]
    if "big toe" in text:
        return [
            (
                "submit_condition_recommendation",
                {"condition": "gout", "severity": "urgent primary care"},
            )
        ]
    if "Itchy eyes" in text:
        return [
            (
                "submit_condition_recommendation",
                {"condition": "Made-up disease", "severity": "Self-care"},
            )
        ]
    if "Runny nose" in text:
        return [
            (
                "submit_condition_recommendation",
                {"condition": "Common cold", "severity": "Critical"},
            )
        ]
    if "Crushing" in text:
        # malformed arguments
        return [("submit_condition_recommendation", '{"condition": "Heart attack", ')]
    return []  # e6: nothing at all


def test_tool_calling_model_counts_every_kind_of_bad_answer_and_runs_are_cached_per_seed(
    built, retriever, tmp_path
):
    with FakeLLM() as server:
        server.on(".*", "", tool_calls=tool_model)
        cfg, paths = configure(
            built,
            tmp_path,
            {"tooly": {"model": "openai/tooly", "api_base": server.api_base, "answer": "tool"}},
            runs=2,
            scoring="tolerant",  # level synonyms; the reference reading has its own test
        )
        df, summary = run_evaluation(
            paths, EvaluationInputs.resolve(cfg, paths, retriever), "tooly"
        )
        first = list(server.state.requests)

        assert len(first) == 6 * 2 * 2  # queries × k × runs
        assert all(
            r["tools"][0]["function"]["name"] == TOOL_NAME and r["tool_choice"] == "auto"
            for r in first
        )
        assert sorted({r["seed"] for r in first}) == [0, 1]
        assert df.height == 24 and summary["seeds"] == [0, 1] and summary["skipped_queries"] == 2
        k0 = df.filter(pl.col("k") == 0).sort("query_id")
        assert k0.filter(pl.col("run") == 0)["status"].to_list() == [
            "ok",
            "ok",
            "unknown_condition",
            "bad_severity",
            "unparsable",
            "empty",
        ]
        assert k0.filter(pl.col("query_id") == "e2")["pred_condition"].to_list() == ["gout", "gout"]
        # a valid half of an answer still counts: e4 named the condition, e3 gave a valid severity
        assert summary["by_k"]["0"]["condition_accuracy"] == pytest.approx((3 / 6, 0.0))
        assert summary["by_k"]["0"]["disposition_accuracy"] == pytest.approx((3 / 6, 0.0))
        assert set(summary["by_k"]["0"]["notes"]) == {
            "2 empty replies",
            "2 unparsable answers",
            "2 conditions not in the allowed list",
            "2 severities outside the three",
        }
        assert (
            "2 query records skipped (no text, condition or valid disposition)" in summary["notes"]
        )
        for row in df.filter((pl.col("k") == 5) & pl.col("query_id").is_in(["e1", "e2"])).iter_rows(
            named=True
        ):
            # naming the right condition is only allowed when it was among the documents shown
            assert row["status"] == ("ok" if row["gold_retrieved"] else "unknown_condition")

        # k=0 lists every condition; k=5 holds the retrieved documents and only their titles are
        # allowed
        k0_prompt = next(r for r in first if "No documents" in system(r["messages"]))
        assert "- Warts and verrucas" in system(
            k0_prompt["messages"]
        ) and "relevance score" not in system(k0_prompt["messages"])
        k5_prompt = next(r for r in first if "relevance score" in system(r["messages"]))
        assert system(k5_prompt["messages"]).count("(score ") == 5 and "- inconclusive" in system(
            k5_prompt["messages"]
        )
        stroke = next(r for r in first if "face dropped" in user_query(r["messages"]))
        assert '"age": 70' in stroke["messages"][-1]["content"]

        # three runs instead of two: only the third seed is asked
        cfg.evaluation.runs = 3
        df3, summary3 = run_evaluation(
            paths, EvaluationInputs.resolve(cfg, paths, retriever), "tooly"
        )
        new = server.state.requests[len(first) :]
        assert len(new) == 6 * 2 and {r["seed"] for r in new} == {2}
        assert df3.height == 36 and summary3["usage"]["cache_hits"] == 24
    saved = pl.read_parquet(paths.accuracy_dir("tooly") / "predictions.parquet")
    assert saved.height == 36 and set(saved["seed"].to_list()) == {0, 1, 2}
    assert (
        "conditions not in the allowed list"
        in (paths.accuracy_dir("tooly") / "table.md").read_text()
    )


def reference_tool_model(messages):
    text = user_query(messages)
    submit = "submit_condition_recommendation"
    if "face dropped" in text:  # one call, the exact level: counted
        return [(submit, {"condition": "Stroke", "severity": "A&E"})]
    if "big toe" in text:  # a level synonym
        return [(submit, {"condition": "Gout", "severity": "urgent primary care"})]
    if "Itchy eyes" in text:  # two calls, the last one right
        return [
            (submit, {"condition": "Common cold", "severity": "Self-care"}),
            (submit, {"condition": "Hay fever", "severity": "Self-care"}),
        ]
    return []  # no call: the answer is only in the text


def test_reference_scoring_reads_answers_as_the_report_did(built, retriever, tmp_path):
    """The default reading: exactly one submit call (none, or several, fails the answer even when
    the text or the last call is right), the three levels of care written exactly, the first
    "(condition, level)" pair of a text answer. The same replies read tolerantly score higher,
    from the cache, and each table says which reading it used."""
    queries = QUERIES[:4]

    def text_reply(messages):
        text = user_query(messages)
        if "face dropped" in text:
            return "(Stroke, A&E)"
        if "big toe" in text:
            return "(Gout, Urgent Primary Care) or maybe (Stroke, A&E)"  # the first pair counts
        return "(Hay fever, self care)"  # not one of the three as written

    with FakeLLM() as tool_server, FakeLLM() as text_server:
        text_server.on(".*", text_reply)
        tool_server.on(
            ".*", "I would say (Common cold, Self-care).", tool_calls=reference_tool_model
        )
        models = {
            "tooly": {"model": "openai/tooly", "api_base": tool_server.api_base, "answer": "tool"},
            "texty": {"model": "openai/texty", "api_base": text_server.api_base},
        }
        cfg, paths = configure(built, tmp_path, models, runs=1, ks=[0], queries=queries)
        assert cfg.evaluation.scoring == "reference"  # the default
        tool_df, tool = run_evaluation(
            paths, EvaluationInputs.resolve(cfg, paths, retriever), "tooly"
        )
        text_df, text = run_evaluation(
            paths, EvaluationInputs.resolve(cfg, paths, retriever), "texty"
        )
        cfg.evaluation.scoring = "tolerant"
        _, kind = run_evaluation(paths, EvaluationInputs.resolve(cfg, paths, retriever), "tooly")
    status = dict(zip(tool_df["query_id"], tool_df["status"]))
    assert status == {
        "e1": "ok",
        "e2": "bad_severity",
        "e3": "several_tool_calls",
        "e4": "no_tool_call",
    }
    assert tool["by_k"]["0"]["condition_accuracy"][0] == pytest.approx(2 / 4)  # e1; e2's condition
    assert "1 answers without the submit tool (reference scoring)" in tool["notes"]
    picked = dict(zip(text_df["query_id"], zip(text_df["pred_condition"], text_df["status"])))
    assert picked["e2"] == ("gout", "ok") and picked["e3"][1] == "bad_severity"
    # tolerantly: e2's synonym, e3's last call and e4's text (a cold: right for e4) all count
    assert kind["by_k"]["0"]["condition_accuracy"][0] == pytest.approx(4 / 4)
    assert kind["usage"]["cache_hits"] == 4 and kind["usage"]["completed"] == 0
    assert "scoring reference" in (paths.accuracy_dir("texty") / "table.md").read_text()
    assert tool["scoring"] == "reference" and kind["scoring"] == "tolerant"


def text_model(messages):
    text, k0 = user_query(messages), "No documents" in system(messages)
    if "face dropped" in text:
        return "(Stroke, A&E)"
    if "big toe" in text:
        return "Thinking aloud. **(GOUT, urgent primary care)**"
    if "Itchy eyes" in text or "frost" in text:
        return (
            "None of these fit.\n(inconclusive, Self-care)"
            if not k0
            else "(inconclusive, Self-care)"
        )
    if "Runny nose" in text:
        return "I am not sure what this is."
    return ""


def test_text_model_with_thinking_inconclusive_timeouts_and_empty_replies(
    built, retriever, tmp_path
):
    queries = [
        *QUERIES[:6],
        {
            "id": "e7",
            "query": "My fingers went white and numb after a frost walk",
            "slug": "frostbite",
            "disposition": "Urgent Primary Care",
            "query_type": "basic",
        },
    ]
    with FakeLLM() as server:
        server.state.hang_s = 3.0
        server.on("Crushing chest", "(Heart attack, A&E)", faults=["hang", "hang"])
        server.on(".*", text_model, inline_think="Let me compare the symptoms.")
        cfg, paths = configure(
            built,
            tmp_path,
            {"texty": {"model": "openai/texty", "api_base": server.api_base, "timeout_s": 1.0}},
            runs=1,
            queries=queries,
            scoring="tolerant",
        )
        df, summary = run_evaluation(
            paths, EvaluationInputs.resolve(cfg, paths, retriever), "texty"
        )
    by = {(r["k"], r["query_id"]): r for r in df.iter_rows(named=True)}
    assert (
        by[(0, "e1")]["thinking"] == "Let me compare the symptoms."
        and by[(0, "e1")]["condition_correct"]
    )
    assert by[(5, "e2")]["pred_condition"] == "gout" and by[(5, "e2")]["disposition_correct"]
    assert by[(5, "e5")]["status"] == "timeout" and by[(0, "e5")]["error"].startswith("Timeout")
    assert by[(0, "e4")]["status"] == "unparsable" and by[(0, "e6")]["status"] == "empty"
    # "inconclusive" is right only when the gold condition was not among the documents shown
    assert by[(5, "e7")]["gold_retrieved"] is False and by[(5, "e7")]["condition_correct"]
    assert by[(0, "e7")]["gold_retrieved"] is None and not by[(0, "e7")]["condition_correct"]
    assert by[(5, "e3")]["gold_retrieved"] is True and not by[(5, "e3")]["condition_correct"]
    assert "2 timeouts" in summary["notes"]
    # gout, frostbite's "inconclusive", and stroke if it was shown
    right_at_k5 = 2 + by[(5, "e1")]["gold_retrieved"]
    assert summary["by_k"]["5"]["condition_accuracy"][0] == pytest.approx(right_at_k5 / 7)


def test_budget_forced_student_on_a_completions_endpoint(built, retriever, tmp_path):
    marker = "<|im_start|>answer"
    with FakeLLM() as server:
        server.on(".*", budget_student("the toe is hot", "(Gout, Urgent Primary Care)", marker))
        model = {
            "model": "t0-tiny",
            "backend": "completions",
            "api_base": server.api_base,
            "kind": "fine-tuned",
            "temperature": 0.0,
            "budget": BudgetConfig(thinking_budget=10, max_waits=1, min_tokens=2),
        }
        cfg, paths = configure(
            built, tmp_path, {"t0-tiny": model}, runs=1, ks=[5], queries=QUERIES[1:2]
        )
        df, summary = run_evaluation(
            paths, EvaluationInputs.resolve(cfg, paths, retriever), "t0-tiny"
        )
        sent = list(server.state.requests)
        run_evaluation(paths, EvaluationInputs.resolve(cfg, paths, retriever), "t0-tiny")
        assert len(server.state.requests) == len(sent)  # cached by (model, prompt, seed)
    thinking = [r for r in sent if marker in r["stop"]]
    assert thinking[0]["prompt"].endswith("<|im_start|>assistant\n<|im_start|>think\n")
    assert "<|im_start|>system\n" in thinking[0]["prompt"]
    # less the 6 tokens generated (4 words, the newline, the turn token it stopped on) and the
    # 1-token " Wait"
    assert [r["max_tokens"] for r in thinking] == [10, 3]
    assert all(r["min_tokens"] == 2 for r in thinking)
    row = df.row(0, named=True)
    assert row["status"] == "ok" and row["condition_correct"] and row["disposition_correct"]
    # the Wait counts, and the budget holds
    assert row["thinking"] == "the toe is hot\n Wait the toe is" and row["completion_tokens"] == 10


def test_retrieval_baseline_reads_urgency_off_the_top_page(built, retriever, tmp_path):
    cfg, paths = configure(
        built,
        tmp_path,
        {"baseline": {"backend": "retrieval", "kind": "baseline", "model": "retrieval"}},
        mode="hybrid",
    )
    df, summary = run_evaluation(paths, EvaluationInputs.resolve(cfg, paths, retriever), "baseline")
    # no k=0 row; deterministic: one run
    assert summary["ks"] == [5] and summary["runs"] == 1 and df.height == 6
    for row in df.iter_rows(named=True):
        assert row["pred_condition"] == row["retrieved_slugs"][0]
    # the gout page: "urgent GP appointment if … hot, red"
    gout = df.filter(pl.col("query_id") == "e2").row(0, named=True)
    assert (
        gout["pred_condition"] == "gout"
        and gout["pred_severity"] == "Urgent Primary Care"
        and gout["disposition_correct"]
    )


PAGE = """Gout
Gout causes sudden severe joint pain.
Ask for an urgent GP appointment if:
- a joint is red, hot and swollen
- the pain in your big toe joint is severe
Call 999 or go to A&E if:
- you have chest pain and breathlessness
## Treatment
Rest and raise the joint."""


@pytest.mark.parametrize(
    "query, expected",
    [
        ("my big toe joint is swollen and red", "Urgent Primary Care"),
        ("crushing chest pain and breathlessness", "A&E"),
        ("I want to know about diet", "Self-care"),
    ],
)
def test_disposition_rules(query, expected):
    assert [level for level, _ in urgency_passages(PAGE)] == ["Urgent Primary Care", "A&E"]
    assert disposition_from_page(query, PAGE) == expected


def test_a_query_set_with_no_usable_query_is_one_error_naming_why(built, retriever, tmp_path):
    """An evaluation of nothing would report empty figures as if measured: it is refused, naming
    the first record's problem, before any model is asked or any report written."""
    from t0_pipeline.artifacts import T0Error

    with FakeLLM() as server:
        server.on(".*", "(Stroke, A&E)")
        cfg, paths = configure(
            built,
            tmp_path,
            {"empty": {"model": "openai/e", "api_base": server.api_base}},
            queries=[{"query": "", "slug": "x", "disposition": "A&E"}],
        )
        with pytest.raises(T0Error, match="no usable evaluation query .*record 1 has no query"):
            run_evaluation(paths, EvaluationInputs.resolve(cfg, paths, retriever), "empty")
        assert not server.state.requests
    assert not paths.accuracy_dir("empty").exists()


def answers_well(messages):
    text = user_query(messages)
    return {
        "face dropped": "(Stroke, A&E)",
        "big toe": "(Gout, Urgent Primary Care)",
        "Itchy eyes": "(Hay fever, Self-care)",
    }.get(
        next((k for k in ("face dropped", "big toe", "Itchy eyes") if k in text), ""),
        "(Common cold, Self-care)",
    )


def test_combined_report_plot_and_student_below_base(built, retriever, tmp_path):
    with FakeLLM() as server:
        server.on(".*", answers_well)
        base = {"model": "openai/base", "api_base": server.api_base, "kind": "base", "size": "1.5B"}
        student = {**base, "model": "openai/student", "kind": "fine-tuned", "base": "base-1.5b"}
        cfg, paths = configure(
            built,
            tmp_path,
            {"base-1.5b": base, "t0-1.5b": student, "not-run": {**base, "model": "openai/nothing"}},
            runs=2,
        )
        run_evaluation(paths, EvaluationInputs.resolve(cfg, paths, retriever), "base-1.5b")
        server.state.rules.clear()
        server.on(".*", "(Common cold, A&E)")  # the student answers everything wrongly
        run_evaluation(paths, EvaluationInputs.resolve(cfg, paths, retriever), "t0-1.5b")
    report = combine(paths, cfg.evaluation)
    assert report.models == ["base-1.5b", "t0-1.5b"] and report.missing == ["not-run"]
    assert {(b["student"], b["k"]) for b in report.below_base} == {("t0-1.5b", 0), ("t0-1.5b", 5)}
    assert (
        "| base-1.5b | base | 1.5B |" in report.markdown
        and "Not evaluated yet: not-run." in report.markdown
    )
    assert "## By query type" in report.markdown and "| t0-1.5b |" in report.markdown
    # one sentence on what the student learned, at the largest k both ran
    [learned] = report.learned
    assert learned.startswith("t0-1.5b against its base base-1.5b (k=5): answers in the format ")
    before, after = (float(x) for x in re.findall(r"accuracy (\S+) → (\S+) ", learned)[0])
    assert after < before and f"({after - before:+.2f})" in learned and learned in report.markdown
    assert report.png.read_bytes()[:4] == b"\x89PNG"
    table = pl.read_csv(report.csv)
    assert {"condition_k0", "disposition_k5_std", "under_share_k5"} <= set(table.columns)
    summaries = {
        n: json.loads((paths.accuracy_dir(n) / "summary.json").read_text()) for n in report.models
    }
    summaries["t0-1.5b"]["queries_hash"] = "other"  # different query sets are never compared
    assert students_below_base(summaries) == []


def test_query_files_accept_condition_lists_and_demographics(tmp_path):
    path = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {
                "query": "q",
                "condition": ["gout", "other"],
                "disposition": "a&e",
                "sex": "female",
                "age": 30,
            },
            {"query": "r", "slug": "stroke", "disposition": "Self-care", "id": "mine"},
        ],
    )
    queries, skipped = load_eval_queries(path)
    assert skipped == 0 and queries[0]["slug"] == "gout" and queries[0]["disposition"] == "A&E"
    assert json.loads(queries[0]["demographics"]) == {"age": 30, "sex": "female"}
    assert (
        queries[1]["id"] == "mine"
        and queries[1]["demographics"] == "not given"
        and queries[1]["query_type"] == "unspecified"
    )


def test_accuracy_assets_partitioned_by_model_and_the_below_base_check(built, tmp_path):
    import dagster as dg
    import yaml

    from t0_pipeline.defs.evaluation import (
        accuracy_comparison,
        build_accuracy_report,
        students_not_below_base,
    )
    from t0_pipeline.defs.resources import ModelServer, PipelineSettings

    _, paths = built
    with FakeLLM() as server:
        server.on(".*", answers_well)
        base = {
            "model": "openai/base-3b",
            "api_base": server.api_base,
            "kind": "base",
            "size": "3B",
        }
        config = tmp_path / "t0.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "llm": {"cache_path": str(tmp_path / "cache.sqlite"), "max_attempts": 1},
                    "evaluation": {
                        "models": {
                            "base-3b": base,
                            "mine-3b": {
                                **base,
                                "model": "openai/mine-3b",
                                "kind": "fine-tuned",
                                "base": "base-3b",
                            },
                        },
                        "queries": str(write_jsonl(tmp_path / "q.jsonl", QUERIES[:3])),
                        "runs": 2,
                        "mode": "hybrid",
                    },
                }
            )
        )
        resources = {
            "settings": PipelineSettings(data_dir=str(paths.root), config_file=str(config)),
            "model_server": ModelServer(),
        }
        report = build_accuracy_report(dg.StaticPartitionsDefinition(["base-3b", "mine-3b"]))
        instance = dg.DagsterInstance.ephemeral()
        first = dg.materialize(
            [report], partition_key="base-3b", resources=resources, instance=instance
        )
        server.state.rules.clear()
        server.on(".*", "(Common cold, A&E)")
        dg.materialize([report], partition_key="mine-3b", resources=resources, instance=instance)
    meta = first.get_asset_materialization_events()[
        0
    ].step_materialization_data.materialization.metadata
    assert meta["condition_accuracy_k0"].value == "1.00 ± 0.00" and meta["runs"].value == 2
    assert (
        meta["dagster/row_count"].value == 3 * 2 * 2
        and "## Severity confusion" in meta["table"].value
    )

    result = dg.materialize(
        [accuracy_comparison, students_not_below_base], resources=resources, instance=instance
    )
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert {(b["student"], b["k"]) for b in check.metadata["below_base"].value} == {
        ("mine-3b", 0),
        ("mine-3b", 5),
    }
    table = (
        result.get_asset_materialization_events()[0]
        .step_materialization_data.materialization.metadata["table"]
        .value
    )
    assert "| mine-3b | fine-tuned | 3B |" in table and "data:image/png;base64," in table


def test_the_code_location_partitions_accuracy_by_the_configured_models():
    import dagster as dg

    from t0_pipeline.config import PipelineConfig
    from t0_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey("accuracy_report"))
    assert node.partitions_def.get_partition_keys() == list(PipelineConfig().evaluation.models)
    # hybrid search of the summaries fuses the full pages' dense and BM25 rankings: all four
    # indexes
    assert {k.to_user_string() for k in node.parent_keys} == {
        "synthetic_queries",
        "summary_index",
        "summary_bm25",
        "full_page_index",
        "full_page_bm25",
        "student_checkpoint",
    }
    # each size → its student and its base
    mapping = node.partition_mappings[dg.AssetKey("student_checkpoint")]
    assert mapping.downstream_partition_keys_by_upstream_partition_key["7B"] == {
        "t0-7b",
        "qwen2.5-7b",
    }
    assert node.automation_condition is not None
    assert node.pools == {"llm"} and defs.resolve_job_def("evaluation") is not None


def test_cli_evaluates_the_baseline_and_prints_the_combined_report(built, tmp_path):
    from typer.testing import CliRunner

    from t0_pipeline.cli import app

    _, paths = built
    queries = write_jsonl(tmp_path / "q.jsonl", QUERIES)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            "retrieval-baseline",
            "--queries",
            str(queries),
            "--data-dir",
            str(paths.root),
            "--ks",
            "0,3,5",  # 5: the k the traces were collected at, the others measured beside it
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        "retrieval-baseline k=3: condition " in result.output
        and "(6 queries × 1 runs)" in result.output
    )
    assert "2 query records skipped" in result.output
    result = runner.invoke(app, ["accuracy-report", "--data-dir", str(paths.root)])
    assert result.exit_code == 0 and "| retrieval-baseline | baseline | — |" in result.output
    missing = next(
        line for line in result.output.splitlines() if line.startswith("Not evaluated yet:")
    )
    assert (
        "qwen2.5-1.5b" in missing
        and "t0-32b" in missing
        and "accuracy_by_size.png" in result.output
    )


def test_transformers_backend_budget_forces_a_local_checkpoint(built, retriever, tmp_path):
    import shutil

    from t0_pipeline_tests.test_budget import MARKER, pinned_model

    # a saved checkpoint that always tries to end its thinking at once
    pinned_model(tmp_path, MARKER)
    # its tokenizer on its own, so AutoTokenizer does not swap in the Qwen2 class
    (tmp_path / "tok").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tmp_path / "m" / name, tmp_path / "tok" / name)
    model = {
        "model": str(tmp_path / "m"),
        "tokenizer": str(tmp_path / "tok"),
        "backend": "transformers",
        "kind": "fine-tuned",
        "budget": BudgetConfig(thinking_budget=16, max_waits=2, answer_tokens=3),
        "temperature": 0.0,
    }
    cfg, paths = configure(built, tmp_path, {"local": model}, runs=3, ks=[0], queries=QUERIES[:1])
    df, summary = run_evaluation(paths, EvaluationInputs.resolve(cfg, paths, retriever), "local")
    # greedy: one run computed and reported as one, not three identical ones
    assert (
        summary["runs"] == 1
        and df["thinking"].to_list() == ["Wait <unk> Wait <unk>"]  # a token after each Wait
        and df["completion_tokens"].to_list() == [4]
    )
    # the answer starts another marker, where it stops: nothing to parse, counted
    assert df["status"].to_list() == ["empty"]
    assert summary["notes"] == [
        "1 empty replies",
        "greedy decoding (temperature 0): one run, not repeated",
    ]
    _, again = run_evaluation(paths, EvaluationInputs.resolve(cfg, paths, retriever), "local")
    assert again["usage"]["cache_hits"] == 1 and again["usage"]["completed"] == 0
    assert again["weights"] == summary["weights"] and summary["weights"].startswith("sha256:")
    assert f"weights {summary['weights']}" in (paths.accuracy_dir("local") / "table.md").read_text()

    # "retrained": the same folder with other weights is asked afresh, not read from the cache
    from transformers import AutoModelForCausalLM

    retrained = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    with __import__("torch").no_grad():
        retrained.model.embed_tokens.weight.add_(0.01)  # the output is pinned: same answers
    retrained.save_pretrained(tmp_path / "m")
    _, fresh = run_evaluation(paths, EvaluationInputs.resolve(cfg, paths, retriever), "local")
    assert fresh["usage"]["completed"] == 1 and fresh["usage"]["cache_hits"] == 0
    assert fresh["weights"] != summary["weights"]

    # with a temperature, each run samples with its own seed: the runs differ, and a seed reproduces
    # its run
    sampled = {
        **model,
        "temperature": 1.0,
        "budget": BudgetConfig(thinking_budget=12, max_waits=0, answer_tokens=2),
    }
    for sub in ("sampled", "again"):
        (tmp_path / sub).mkdir()
    cfg, paths = configure(
        built, tmp_path / "sampled", {"local": sampled}, runs=3, ks=[0], queries=QUERIES[:1]
    )
    df, summary = run_evaluation(paths, EvaluationInputs.resolve(cfg, paths, retriever), "local")
    assert summary["runs"] == 3 and df["thinking"].n_unique() == 3
    cfg, paths = configure(
        built, tmp_path / "again", {"local": sampled}, runs=3, ks=[0], queries=QUERIES[:1]
    )
    assert (
        run_evaluation(paths, EvaluationInputs.resolve(cfg, paths, retriever), "local")[0][
            "thinking"
        ].to_list()
        == df["thinking"].to_list()
    )


def test_a_retrained_served_checkpoint_is_asked_afresh_and_an_unchanged_one_costs_no_call(
    built, retriever, tmp_path
):
    """The pipeline serves a checkpoint (the loopback server standing in for vLLM, started by the
    model-server resource) and evaluates it twice: the second run is all cache hits. New weights in
    the same folder (a retrained student) are asked again, and the summary names each digest."""
    from t0_pipeline.config import LaunchConfig
    from t0_pipeline.evaluation.accuracy import run_served_evaluation
    from t0_pipeline.servers.model_server import local_servers
    from t0_pipeline_tests.test_model_server import servers

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors").write_bytes(b"first weights")
    model = {
        "model": "openai/t0-tiny",
        "answer": "text",
        "kind": "fine-tuned",
        "serve": LaunchConfig(checkpoint=str(ckpt)),
    }
    cfg, paths = configure(built, tmp_path, {"t0-tiny": model}, runs=1, ks=[0], queries=QUERIES[:2])
    make_server = local_servers(servers("--reply", "(Stroke, A&E)"), DataPaths(tmp_path / "d"))

    def evaluate() -> dict:
        inputs = EvaluationInputs.resolve(cfg, paths, retriever)
        return run_served_evaluation(paths, inputs, "t0-tiny", make_server)[1]

    first, same = evaluate(), evaluate()
    assert first["usage"]["completed"] == 2 and first["usage"]["cache_hits"] == 0
    assert same["usage"]["completed"] == 0 and same["usage"]["cache_hits"] == 2
    assert same["weights"] == first["weights"] and first["served_checkpoint"] == str(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"retrained weights")
    retrained = evaluate()
    assert retrained["usage"]["completed"] == 2 and retrained["usage"]["cache_hits"] == 0
    assert retrained["weights"] != first["weights"]
