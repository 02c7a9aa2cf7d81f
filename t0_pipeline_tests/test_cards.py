"""Cards: the facts they take from a config, the names they give models, and the evaluation
section a student's card gains only from an evaluation of its very weights."""

from __future__ import annotations

import json

import pytest

from t0_pipeline.cards import provenance, read_front_matter
from t0_pipeline.config import DataPaths, EvaluationConfig, PipelineConfig, TrainConfig
from t0_pipeline.config.models import size_entries
from t0_pipeline.servers.base_models import SOURCE_FILE, public_name
from t0_pipeline.training.model_card import (
    CardContext,
    model_card,
    record_evaluation,
    refresh_cards,
)
from t0_pipeline.training.result import TrainResult
from t0_pipeline.weights import weights_digest


def test_the_corpus_licence_comes_from_the_setting_else_the_site_else_is_unknown():
    nhs = provenance(PipelineConfig())
    assert nhs.licence == "ogl-uk-3.0" and "open-government-licence" in nhs.licence_link
    assert nhs.front_matter() == {
        "license": "other",
        "license_name": "ogl-uk-3.0",
        "license_link": nhs.licence_link,
    }
    assert nhs.stand_in is None and "Not medical advice" in nhs.caution
    own = provenance(PipelineConfig(source={"kind": "documents", "location": "docs"}))
    assert own.licence == "unknown" and "set source.license" in own.licence_words()
    mit = provenance(
        PipelineConfig(
            source={"kind": "documents", "location": "docs", "license": "mit"},
            base_models={"tiny": "bundled:smollm2-135m-instruct"},
        )
    )
    assert mit.front_matter() == {"license": "mit"}
    assert "(smollm2-135m-instruct) standing in" in mit.stand_in


def test_a_card_names_a_model_by_its_public_name_never_its_path(tmp_path):
    bundled, hub, linked = tmp_path / "a", tmp_path / "b", tmp_path / "my-model"
    for folder, source in ((bundled, "bundled:smollm2-135m-instruct"), (hub, "Qwen/Qwen2.5-7B")):
        folder.mkdir()
        (folder / SOURCE_FILE).write_text(json.dumps({"source": source}))
    linked.mkdir()
    assert public_name(bundled) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert public_name(hub) == "Qwen/Qwen2.5-7B"
    assert public_name(linked) == "my-model"
    assert public_name("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"


def _summary(model: str, weights: str | None, condition: float, queries_hash="h1") -> dict:
    return {
        "model": model,
        "queries": 12,
        "queries_hash": queries_hash,
        "runs": 1,
        "scoring": "tolerant",
        "weights": weights,
        "labels": ["condition", "disposition"],
        "by_k": {
            "0": {"condition_accuracy": [condition, 0.0], "disposition_accuracy": [0.25, 0.0]},
            "5": {"condition_accuracy": [condition + 0.5, 0.1], "disposition_accuracy": None},
        },
    }


@pytest.fixture
def trained(tmp_path):
    """A student's final/ with weights and its fresh card, in a data dir with train size 135M."""
    paths = DataPaths(tmp_path / "data")
    final = paths.student_dir("135M") / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    (final / "model.safetensors").write_bytes(b"weights")
    result = TrainResult(final_dir=final, global_step=3, train_loss=[(1, 2.0), (3, 1.0)])
    ctx = CardContext(size="135M", base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    card = model_card(ctx, TrainConfig(), result, None, weights_digest(final))
    (final / "README.md").write_text(card)
    evaluation = EvaluationConfig(models=size_entries("135M", "org/smollm2-135m-instruct"))
    return paths, final, evaluation


def test_the_evaluation_fills_in_the_card_only_for_the_weights_it_measured(trained):
    paths, final, evaluation = trained
    before = (final / "README.md").read_text()
    assert "Not evaluated yet" in before
    assert read_front_matter(before)["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    stale = _summary("t0-135m", "sha256:00000000000000000000", 0.25)
    assert not record_evaluation(final, stale, None)
    assert (final / "README.md").read_text() == before
    # the student evaluated with these weights, then its base: both rows, the rest untouched
    for name, summary in (
        ("t0-135m", _summary("t0-135m", weights_digest(final), 0.25)),
        ("smollm2-135m", _summary("smollm2-135m", None, 0.0)),
    ):
        (paths.accuracy_dir(name)).mkdir(parents=True, exist_ok=True)
        (paths.accuracy_dir(name) / "summary.json").write_text(json.dumps(summary))
        assert refresh_cards(paths, evaluation, name) == [final / "README.md"]
    after = (final / "README.md").read_text()
    assert "Not evaluated yet" not in after
    assert "| t0-135m (this model) | 0 | 0.25 ± 0.00 | 0.25 ± 0.00 |" in after
    assert "| t0-135m (this model) | 5 | 0.75 ± 0.10 | — |" in after
    assert "| smollm2-135m (its base) | 0 | 0.00 ± 0.00 | 0.25 ± 0.00 |" in after
    assert after.split("## Evaluation")[0] == before.split("## Evaluation")[0]
    assert after.split("## Intended use")[1] == before.split("## Intended use")[1]
    # a base evaluated on other queries is left out, and another model's evaluation changes nothing
    other = _summary("smollm2-135m", None, 0.0, queries_hash="h2")
    (paths.accuracy_dir("smollm2-135m") / "summary.json").write_text(json.dumps(other))
    assert refresh_cards(paths, evaluation, "smollm2-135m") == [final / "README.md"]
    assert "its base" not in (final / "README.md").read_text()
    assert refresh_cards(paths, evaluation, "gpt-4o") == []


def test_only_the_first_rank_makes_the_tracker_folder_and_the_environment_is_restored(
    tmp_path, monkeypatch
):
    """Ranks start a second apart, so their run names can differ; only rank 0 (which alone
    writes) makes a folder, and the variables set for the block are taken away after it."""
    import os

    from t0_pipeline.trackers import tracking

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    for rank, name in (("1", "t0-tiny-later"), ("0", "t0-tiny-first")):
        monkeypatch.setenv("RANK", rank)
        with tracking(["tensorboard"], tmp_path, name, "train.report_to") as report_to:
            assert report_to == ["tensorboard"]
            assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path.resolve() / "runs" / name)
        assert "TENSORBOARD_LOGGING_DIR" not in os.environ
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["t0-tiny-first"]
