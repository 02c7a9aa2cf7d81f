"""SFT examples render exactly through a (tiny, test-built) tokenizer's chat template."""

from __future__ import annotations

import json

import polars as pl
import pytest

from t0_pipeline.chat import ChatFormat
from t0_pipeline.config import BudgetConfig, SFTConfig
from t0_pipeline.synthetic.sft import build_sft, messages_for
from t0_pipeline_tests.conftest import build_tiny_tokenizer

TRACE = {
    "id": "t1",
    "query": "face dropped",
    "demographics": '{"age": 70}',
    "retrieved_titles": ["Stroke", "Migraine"],
    "retrieved_texts": ["Call 999.", "Lie down."],
    "scores": [-0.5, -0.9],
    "retrieved_slugs": ["stroke", "migraine"],
    "thinking": "Face droop is FAST.",
    "answer": "(Stroke, A&E)",
    "kept": True,
    "model": "openai/teacher",
    "prompt_hash": "abc123",
}


@pytest.fixture
def tiny_tokenizer(tmp_path):
    return build_tiny_tokenizer(
        tmp_path / "tok",
        "system user assistant think answer Stroke Migraine A&E ( ) , . : [ ] 1 2 Call 999 Lie "
        "down face dropped Face droop is FAST About me age 70 score -0.500 -0.900",
    )


def test_example_renders_exactly_the_expected_chat_text(tiny_tokenizer):
    config = SFTConfig(tokenizer="tiny")
    df, stats = build_sft(pl.DataFrame([TRACE]), config, tiny_tokenizer)
    system = json.loads(df["messages"][0])[0]["content"]
    # the evaluation prompt at k > 0: the teacher's documents, their titles (or inconclusive)
    # allowed
    assert (
        "\n[1] Stroke (score -0.500)\nCall 999.\n\n[2] Migraine (score -0.900)\nLie down.\n"
        in system
    )
    assert "- Stroke\n- Migraine\n- inconclusive" in system and "(condition, severity)" in system
    expected = (
        f"<|im_start|>system\n{system}<|im_end|>\n"
        '<|im_start|>user\nAbout me: {"age": 70}\n\nface dropped<|im_end|>\n'
        "<|im_start|>assistant\n<|im_start|>think\nFace droop is "
        "FAST.\n<|im_start|>answer\n(Stroke, A&E)<|im_end|>\n"
    )
    assert df["text"][0] == expected
    assert df["n_tokens"][0] == len(tiny_tokenizer(expected, add_special_tokens=False)["input_ids"])
    assert stats["examples"] == 1 and stats["token_counts"] == "tokenizer"


def test_a_real_chatml_tokenizer_renders_the_example_and_learns_only_the_answer_turn(smollm2_gguf):
    """SmolLM2's own tokenizer and chat template (not one built here): the text is the ChatML we
    expect, and the trainer's labels cover exactly the assistant turn."""
    from transformers import AutoTokenizer

    from t0_pipeline.training.data import IGNORE, tokenize_example

    tok = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    df, stats = build_sft(pl.DataFrame([TRACE]), SFTConfig(tokenizer="smollm2"), tok)
    messages = json.loads(df["messages"][0])
    assistant = "<|im_start|>think\nFace droop is FAST.\n<|im_start|>answer\n(Stroke, A&E)"
    assert messages[-1]["content"] == assistant
    assert df["text"][0].endswith(f"<|im_start|>assistant\n{assistant}<|im_end|>\n")
    assert df["n_tokens"][0] == len(tok(df["text"][0], add_special_tokens=False)["input_ids"])
    example = tokenize_example(messages, tok, 4096)
    learned = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE]
    assert tok.decode(learned).startswith(assistant) and "face dropped" not in tok.decode(learned)


def test_the_chat_format_is_one_setting_for_sft_budget_forcing_and_serving():
    from t0_pipeline.config import load_config
    from t0_pipeline.task import prompt as triage_prompt

    think = ChatFormat(think_start="<think>\n", think_end="</think>", answer_start="\n\n")
    assistant = messages_for(TRACE, think, triage_prompt.load()[0])[-1]["content"]
    assert assistant == "<think>\nFace droop is FAST.\n</think>\n\n(Stroke, A&E)"

    default = messages_for(TRACE, ChatFormat(), triage_prompt.load()[0])[-1]["content"]
    # what budget forcing stops on and forces, from the same defaults
    budget = BudgetConfig().with_format()
    assert (
        default == f"{budget.think_start}Face droop is "
        f"FAST.\n{budget.think_end}{budget.answer_start}(Stroke, A&E)"
    )

    import tempfile

    # set once in a config file: every budget follows
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(
            'chat_format: {think_start: "<think>\\n", think_end: "</think>", answer_start: '
            '"\\n\\n"}\n'
            "serve: {profiles: {t0: {budget: {thinking_budget: 64}}}}\n"
        )
        f.flush()
        cfg = load_config(f.name)
    assert cfg.evaluation.models["t0-7b"].budget.think_end == "</think>"
    assert (
        cfg.serve.profiles["t0"].budget.think_start == "<think>\n"
        and cfg.serve.profiles["t0"].budget.thinking_budget == 64
    )


def test_overlong_examples_are_dropped_or_truncated_by_policy(tiny_tokenizer):
    traces = pl.DataFrame([TRACE, {**TRACE, "id": "t2", "kept": False}])
    dropped, stats = build_sft(traces, SFTConfig(block_size=20), tiny_tokenizer)
    assert dropped.is_empty() and stats["dropped_overlong"] == 1 and stats["kept_traces"] == 1
    cut, stats = build_sft(traces, SFTConfig(block_size=20, overlong="truncate"), tiny_tokenizer)
    assert cut["n_tokens"].to_list() == [20] and stats["truncated_overlong"] == 1


def _scored(i: int, **fields) -> dict:
    """A trace as the traces stage writes it: kept, unless ``fields`` make it fail a filter."""
    row = {
        **TRACE,
        "id": f"q{i // 2}",
        "sample": i % 2,
        "error": None,
        "parsable": True,
        "condition_in_retrieved": True,
        "correct_condition": True,
        "correct_disposition": True,
        **fields,
    }
    row["kept"] = fields.get("kept", True)
    return row


def test_the_dataset_card_counts_what_the_dataset_holds_and_names_no_path(tiny_tokenizer, tmp_path):
    from t0_pipeline.artifacts import file_digest
    from t0_pipeline.cards import Provenance, read_front_matter
    from t0_pipeline.config import DataPaths
    from t0_pipeline.synthetic.sft import run_sft

    rejected = [
        {"error": "timeout", "thinking": "", "kept": False},
        {"thinking": "  ", "kept": False},
        {"parsable": False, "kept": False},
        {"condition_in_retrieved": False, "kept": False},
        {"correct_condition": False, "kept": False},
        {"correct_condition": False, "kept": False},
        {"correct_disposition": False, "kept": False},
    ]
    rows = [_scored(i, **f) for i, f in enumerate([{}, {}, {}, *rejected])]
    paths = DataPaths(tmp_path / "data")
    paths.traces.parent.mkdir(parents=True)
    pl.DataFrame(rows).write_parquet(paths.traces)
    pl.DataFrame({"query": ["a", "b"]}).write_parquet(paths.synthetic_queries("eval"))
    facts = Provenance(licence="ogl-uk-3.0", licence_link="https://example.org/ogl")
    tokenizer = tiny_tokenizer.name_or_path
    df, _ = run_sft(paths, SFTConfig(tokenizer=tokenizer, block_size=400), facts=facts)
    info = json.loads((paths.sft_dir / "dataset.json").read_text())
    stored = pl.read_parquet(paths.sft_dir / "train.parquet")
    assert info["examples"] == stored.height == df.height == 3
    assert info["sha256"] == file_digest(paths.sft_dir / "train.parquet")
    traces = info["traces"]
    assert traces["generated"] == len(rows) and traces["kept"] == 3 and traces["queries"] == 5
    assert traces["rejected"] == {
        "failed": 1,
        "no_thinking": 1,
        "unparsable_or_outside": 2,
        "wrong_topic": 2,
        "wrong_answer": 1,
    }
    assert sum(traces["rejected"].values()) == traces["generated"] - traces["kept"]
    assert info["teacher"] == ["openai/teacher"] and info["tokenizer"] == "tok"
    assert info["evaluation_queries"] == 2
    card = (paths.sft_dir / "README.md").read_text()
    head = read_front_matter(card)
    assert head["license"] == "other" and head["license_name"] == "ogl-uk-3.0"
    assert head["license_link"] == "https://example.org/ogl"
    for line in (
        f"| traces generated | {len(rows)} |",
        "| traces kept | 3 |",
        "| rejected: wrong topic | 2 |",
        "| examples | 3 |",
        "| tokenizer and chat template | tok |",
    ):
        assert line in card
    assert str(tmp_path) not in card and "Not medical advice" in card
