"""base_models: the bundled model converted once into a checkpoint that loads, folders linked, names
resolved wherever a checkpoint is named, and each way a source can be wrong one clear error."""

from __future__ import annotations

import json

import pytest

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, load_config, with_base_models
from t0_pipeline.servers.base_models import materialise


def test_the_bundled_model_becomes_a_chat_checkpoint_made_once(smollm2_checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = json.loads((smollm2_checkpoint / "t0-source.json").read_text())
    assert source["source"] == "bundled:smollm2-135m-instruct"
    tokenizer = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>assistant\n")  # ChatML, as the SFT and budget code expect
    model = AutoModelForCausalLM.from_pretrained(smollm2_checkpoint)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    again = materialise(
        "smollm2-135m-instruct",
        "bundled:smollm2-135m-instruct",
        DataPaths(smollm2_checkpoint.parent.parent),
        lambda m: None,
    )
    assert again["made"] is False  # up to date: not converted twice


def test_a_local_folder_is_linked_and_names_resolve_everywhere_a_checkpoint_is_named(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    paths = DataPaths(tmp_path / "data")
    info = materialise("mine", str(folder), paths, lambda m: None)
    assert paths.base_model("mine").resolve() == folder.resolve() and info["made"]
    cfg = with_base_models(
        load_config(
            overrides={
                "base_models": {"mine": str(folder)},
                "train": {
                    "sizes": {
                        "1.5B": None,
                        "3B": None,
                        "7B": None,
                        "14B": None,
                        "32B": None,
                        "tiny": "mine",
                    }
                },
                "sft": {"tokenizer": "mine"},
                "llm": {"roles": {"teacher": {"serve": {"checkpoint": "mine"}}}},
            }
        ),
        paths,
    )
    local = str(paths.base_model("mine").resolve())
    assert cfg.train.sizes == {"tiny": local} and cfg.sft.tokenizer == local
    assert cfg.llm.roles["teacher"].serve.checkpoint == local
    # the size's base entry, named after the entry
    assert cfg.evaluation.models["mine"].serve.checkpoint == local
    assert cfg.llm.roles["summariser"].serve is None


@pytest.mark.parametrize(
    "source, says",
    [
        ("bundled:gpt-5", "no bundled model named 'gpt-5'"),
        ("Qwen/Qwen2.5-0.5B-Instruct", "HF_HUB_OFFLINE=1"),
    ],
)
def test_a_source_that_cannot_be_made_is_one_clear_error(tmp_path, monkeypatch, source, says):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(T0Error, match=says.replace("(", r"\(")):
        materialise("x", source, DataPaths(tmp_path), lambda m: None)
    assert not (tmp_path / "models" / "x").exists()  # nothing half-made


def test_a_folder_without_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(T0Error, match="holds no config.json"):
        materialise("x", str(tmp_path / "empty"), DataPaths(tmp_path / "data"), lambda m: None)


def test_a_role_given_an_address_in_a_later_layer_is_taken_as_running_there():
    cfg = load_config(
        overrides={"llm": {"roles": {"teacher": {"api_base": "http://gpu:8000/v1"}}}},
        environ={"T0_LLM__ROLES__TEACHER__SERVE": '{"checkpoint": "x"}'},
    )
    assert (
        cfg.llm.roles["teacher"].serve is None
        and cfg.llm.roles["teacher"].api_base == "http://gpu:8000/v1"
    )
