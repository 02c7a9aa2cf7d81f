"""The whole chain on the second worked domain, as `t0 run-all --config examples/it-desk.yaml` runs
it: the Kestrel Logistics IT desk's help articles read from their folder, its domain file's words in
every prompt, the bundled SmolLM2-135M-Instruct in every model role behind the CPU server, a real
fine-tune and budget-forced evaluation. Every prompt the models were sent is read back from the
servers' request log: none speaks of patients, the NHS, A&E or conditions."""

import json
import re
from pathlib import Path

import polars as pl
import pytest

from t0_pipeline_tests.test_whole_chain import ASSETS, run_all

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "it-desk.yaml"
NHS_WORDS = re.compile(r"patient|\bNHS\b|A&E|condition", re.I)


@pytest.fixture(scope="module")
def it_chain(tmp_path_factory, smollm2_gguf):
    """The example's config at the whole-chain test's sizes, every request to a model logged:
    (data folder, request log, what `t0 run-all` printed)."""
    root = tmp_path_factory.mktemp("it-chain")
    requests = root / "requests.jsonl"
    data, _, out = run_all(root, CONFIG, T0_REQUEST_LOG=str(requests))
    return data, requests, out


# as long as the NHS whole chain: ~4 min on a quiet 2-core machine, past 10 on a loaded one
@pytest.mark.timeout(2400)
def test_the_it_desk_runs_the_whole_method_in_its_own_words(it_chain):
    data, requests, out = it_chain
    table = out[out.index("Time per stage") : out.index("Retrieval p@k")]
    for asset in ASSETS:
        assert f"| {asset} |" in table, f"{asset} missing from\n{table}"
    assert not [line for line in table.splitlines() if "(ERROR)" in line]

    # the corpus is the folder's 32 articles, slugged from their file names
    conditions = pl.read_parquet(data / "corpus" / "conditions.parquet")
    assert conditions.height == 32 and "vpn-wont-connect" in conditions["slug"].to_list()

    # what every model was asked, as it read it: the domain's words, none of the NHS task's
    sent = [json.loads(line) for line in requests.read_text(encoding="utf-8").splitlines()]
    endpoints = {line["endpoint"] for line in sent}
    assert endpoints == {"chat", "completions"} and len(sent) >= 20
    for line in sent:
        asked = line["prompt"] + json.dumps(line["response_format"] or {})
        assert not NHS_WORDS.search(asked), asked[:3000]
    prompts = "\n".join(line["prompt"] for line in sent)
    for words in ("IT service desk", "member of staff", "Call the urgent line", "next step"):
        assert words in prompts, words

    # the synthetic queries are in the domain's categories, styles and profile
    queries = pl.read_parquet(data / "synthetic" / "queries_train.parquet")
    categories = {"Fix it yourself", "Raise a ticket", "Call the urgent line"}
    assert set(queries["disposition"]) <= categories
    assert set(queries["query_type"]) <= {"plain", "rushed", "vague"}
    assert {"department", "device", "location", "years_at_company"} <= set(queries.columns)
    assert "occupation" not in queries.columns

    # evaluated and tabled in the domain's words
    student = json.loads((data / "eval" / "accuracy" / "t0-135m" / "summary.json").read_text())
    assert student["domain"] == "it-desk" and student["labels"] == ["issue", "next step"]
    assert set(student["by_k"]["3"]["confusion"]) == categories
    accuracy = data / "eval" / "accuracy"
    assert "| k | issue | next step |" in (accuracy / "t0-135m" / "table.md").read_text()
    report = (accuracy / "report.md").read_text()
    assert "# Issue and next step accuracy" in report and not NHS_WORDS.search(report), report
    # the cards say this task, this corpus's licence and the domain's caution, not the NHS's
    from t0_pipeline.cards import read_front_matter

    card = (data / "students" / "135M" / "final" / "README.md").read_text()
    assert read_front_matter(card)["license"] == "mit" and "# t0-135M (it-desk)" in card
    assert "| t0-135m (this model) | 3 |" in card and "issue accuracy" in card
    dataset_card = (data / "synthetic" / "sft" / "README.md").read_text()
    for text in (card, dataset_card):
        assert not NHS_WORDS.search(text) and "medical" not in text, text
