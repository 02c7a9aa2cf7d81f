"""The whole chain on a real model, as `make demo` runs it: every asset of the graph, each model
role the real SmolLM2-135M-Instruct served by the pipeline's model-server resource (the CPU server,
litellm's real client), a real fine-tune and budget-forced evaluation. Only the sizes are smaller
than the demo's."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

DEMO = Path(__file__).resolve().parents[1] / "t0_pipeline" / "demo.yaml"

# the smallest sizes that still exercise every stage (the demo's own are in demo.yaml)
TINY = {
    "T0_QUERIES__N_EVAL": "3",
    "T0_QUERIES__N_TRAIN": "4",
    "T0_QUERIES__MAX_PAGE_CHARS": "400",
    "T0_SUMMARY__MAX_PAGE_CHARS": "300",
    "T0_LLM__ROLES__SUMMARISER__MAX_TOKENS": "16",
    "T0_LLM__ROLES__QUERY_WRITER__MAX_TOKENS": "280",
    # every parsable trace trains (the demo keeps only correct ones, of which 4 queries may have
    # none), for steps enough that the student learns the answer format
    "T0_TRACES__KEEP": "parsable",
    # one looping message in four sets is 75%: the demo's 30 queries meet 0.8
    "T0_QUERIES__MIN_READABLE_SHARE": "0.5",
    "T0_TRAIN__MAX_STEPS": "6",
    "T0_TRAIN__LEARNING_RATE": "0.0003",
    "T0_TRAIN__SAVE_STEPS": "100",
    "T0_TRAIN__EVAL_STEPS": "100",
    "T0_EVALUATION__MAX_QUERIES": "2",
    "T0_EVALUATION__MODELS__SMOLLM2-135M__MAX_TOKENS": "24",
    "T0_EVALUATION__MODELS__T0-135M__BUDGET": json.dumps(
        {"thinking_budget": 128, "max_waits": 0, "answer_tokens": 16}
    ),
}
ASSETS = [
    "base_models",
    "condition_pages",
    "conditions",
    "summaries",
    "full_page_index",
    "summary_index",
    "full_page_bm25",
    "summary_bm25",
    "eval_queries",
    "retrieval_report",
    "llm_summaries",
    "llm_summary_index",
    "summary_comparison",
    "synthetic_queries",
    "reasoning_traces",
    "sft_dataset",
    "student_checkpoint[135M]",
    "accuracy_report[retrieval-baseline]",
    "accuracy_report[smollm2-135m]",
    "accuracy_report[t0-135m]",
    "accuracy_comparison",
]


# ~3.5 min on a quiet 2-core machine and past 10 on a loaded one: the bound only catches a hang
@pytest.mark.timeout(2400)
def test_every_asset_materialises_with_the_bundled_model_in_every_role(tmp_path, smollm2_gguf):
    home, data = tmp_path / "dagster", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        **TINY,
        "DAGSTER_HOME": str(home),
        "T0_DATA_DIR": str(data),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("T0_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "t0_pipeline.cli", "run-all", "--config", str(DEMO)],
        env=env,
        capture_output=True,
        text=True,
        timeout=2100,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    table = out[out.index("Time per stage") : out.index("Retrieval p@k")]
    for asset in ASSETS:  # each one a successful Dagster run, its checks evaluated
        assert f"| {asset} |" in table, f"{asset} missing from\n{table}"
    # no ERROR check fails (a WARN may: 16 summariser tokens sometimes give an empty summary,
    # reported per page)
    failed = [line for line in table.splitlines() if "(ERROR)" in line]
    assert not failed, failed
    assert (
        "| summaries | dense |" in out
        and "| t0-135m | fine-tuned | 135M |" in out
        and "Stand-in:" in out
    )

    # every role was served by the pipeline itself, from the converted checkpoint or the trained
    # student
    logs = sorted(p.name for p in (data / "servers").glob("*.log"))
    # summariser, writer, teacher, base
    assert sum(name.startswith("smollm2-135m-instruct-") for name in logs) == 4
    assert sum(name.startswith("t0-135m-") for name in logs) == 1  # the student, from its final/

    # structured output: every query and every trace parses (a 135M model writes valid JSON only
    # when constrained)
    queries = pl.read_parquet(data / "synthetic" / "queries_train.parquet")
    assert queries.height >= 1 and queries["query"].str.len_chars().min() >= 40
    traces = pl.read_parquet(data / "synthetic" / "traces.parquet")
    assert (
        traces["parsable"].all() and traces["condition_in_retrieved"].all() and traces["kept"].any()
    )

    # the student is a real fine-tune of the converted base, evaluated with budget forcing against
    # it
    metrics = json.loads((data / "students" / "135M" / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and metrics["config"]["model"].endswith(
        "models/smollm2-135m-instruct"
    )
    student = json.loads((data / "eval" / "accuracy" / "t0-135m" / "summary.json").read_text())
    base = json.loads((data / "eval" / "accuracy" / "smollm2-135m" / "summary.json").read_text())
    assert (
        student["served_checkpoint"].endswith("students/135M/final")
        and student["queries"] == base["queries"] == 2
    )
    predictions = pl.read_parquet(data / "eval" / "accuracy" / "t0-135m" / "predictions.parquet")
    assert (
        predictions.height == 2 * len(student["ks"])
        and predictions["thinking"].str.len_chars().max() > 0
    )
    # fine-tuning taught the answer format: more of the student's answers parse than its base's,
    # on the contexts it was trained on (the base SmolLM2 never writes "(condition, level)")
    from t0_pipeline.accuracy_tables import parsable_share

    def in_format(summary: dict) -> float:  # over every k measured (2 queries each)
        return sum(parsable_share(summary["by_k"][str(k)]) or 0.0 for k in summary["ks"])

    assert in_format(student) > in_format(base), (student["by_k"], base["by_k"])
    assert "What fine-tuning taught: t0-135m against its base smollm2-135m" in out
    # the synthetic data a person would read: first-person messages in words, thinking about them
    from t0_pipeline.config import DataPaths
    from t0_pipeline.content_checks import corpus_vocabulary, query_content, trace_content

    vocabulary = corpus_vocabulary(DataPaths(data))
    assert query_content(queries, vocabulary, 0.5)[0]["readable_first_person_share"] >= 0.5
    assert trace_content(traces, vocabulary, 0.8)[0]["readable_grounded_share"] >= 0.8
