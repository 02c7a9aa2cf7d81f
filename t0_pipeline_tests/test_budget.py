"""Budget forcing on a tiny random Qwen2 whose greedy choice is pinned to one token.

With the final norm zeroed every logit is 0, so greedy decoding always picks token id 0.
Making id 0 the end-of-thinking marker gives a model that always tries to stop thinking;
making it an ordinary word gives one that never stops. Both are real transformers
generation through the same code users run.
"""

from __future__ import annotations

import pytest

from t0_pipeline.budget import BudgetConfig, generate_with_budget
from t0_pipeline.chat import ChatFormat, generation_prompt

MARKER = "<|im_start|>answer"


def pinned_model(tmp_path, first_token: str):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

    words = [first_token] + [
        w
        for w in [
            MARKER,
            "<eos>",
            "<unk>",
            "Wait",
            "the",
            "toe",
            "is",
            "hot",
            "question",
            "(",
            ")",
            ",",
        ]
        if w != first_token
    ]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<eos>",
        unk_token="<unk>",
        additional_special_tokens=[MARKER],
    )
    tok.save_pretrained(tmp_path / "m")
    config = Qwen2Config(
        vocab_size=len(words),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        eos_token_id=tok.eos_token_id,
    )
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.model.norm.weight.zero_()  # all logits 0: greedy picks id 0
    model.save_pretrained(tmp_path / "m")
    return AutoModelForCausalLM.from_pretrained(
        tmp_path / "m"
    ), PreTrainedTokenizerFast.from_pretrained(tmp_path / "m")


def test_early_ends_of_thinking_become_exactly_max_waits_waits(tmp_path):
    model, tok = pinned_model(tmp_path, MARKER)  # always tries to end thinking at once
    out = generate_with_budget(
        model, tok, "question", BudgetConfig(thinking_budget=50, max_waits=3, answer_tokens=3)
    )
    assert out.waits == 3 and out.thinking.split() == ["Wait"] * 3
    assert out.thinking_tokens == 3 and not out.budget_exhausted
    assert out.text.split()[:4] == ["Wait", "Wait", "Wait", MARKER]  # then the forced answer marker


def test_a_model_that_never_stops_is_cut_at_the_budget_and_the_answer_is_forced(tmp_path):
    model, tok = pinned_model(tmp_path, "the")  # never emits the end-of-thinking marker
    out = generate_with_budget(
        model, tok, "question", BudgetConfig(thinking_budget=7, max_waits=3, answer_tokens=2)
    )
    assert out.thinking_tokens == 7 and out.budget_exhausted and out.waits == 0
    assert out.text.split()[7] == MARKER and out.answer.split() == ["the", "the"]


def test_thinking_never_exceeds_the_budget_even_while_waiting(tmp_path):
    model, tok = pinned_model(tmp_path, MARKER)
    for budget in (1, 2, 4):
        out = generate_with_budget(
            model,
            tok,
            "question",
            BudgetConfig(thinking_budget=budget, max_waits=10, answer_tokens=1),
        )
        assert out.thinking_tokens <= budget and out.waits == budget
        assert MARKER in out.text


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, name = str(smollm2_gguf.parent), smollm2_gguf.name
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    return AutoModelForCausalLM.from_pretrained(where, gguf_file=name).eval(), tokenizer


def real_prompt(tokenizer) -> str:
    chat = [
        {"role": "user", "content": "My big toe is suddenly hot, red and very painful. What is it?"}
    ]
    # through the pipeline's own chat rendering, as evaluation and serving build the prompt
    return generation_prompt(chat, tokenizer, ChatFormat().think_start)


def test_a_real_tokenizer_splits_the_marker_and_budget_forcing_still_works(smollm2):
    model, tok = smollm2
    # <|im_start|> + answer, as in Qwen2.5
    assert len(tok(MARKER, add_special_tokens=False)["input_ids"]) == 2
    out = generate_with_budget(
        model, tok, real_prompt(tok), BudgetConfig(thinking_budget=40, max_waits=2, answer_tokens=8)
    )
    # this chat model ends its turn (<|im_end|>) after a few words: each early end became a "Wait",
    # twice
    assert out.waits == 2 and out.thinking.count(" Wait") == 2 and out.thinking_tokens <= 40
    after = out.text[len(out.thinking) :]
    # the two-token marker, forced
    assert out.text.startswith(out.thinking) and after.startswith(MARKER + "\n")
    assert out.text.count(MARKER) == 1
    for budget in (3, 9):  # with waits to spare, the budget is what stops it, and it holds
        capped = generate_with_budget(
            model,
            tok,
            real_prompt(tok),
            BudgetConfig(thinking_budget=budget, max_waits=50, answer_tokens=2),
        )
        assert capped.thinking_tokens <= budget and capped.waits >= 1 and MARKER in capped.text


def test_a_real_model_gets_exactly_max_waits_and_the_budget_holds(smollm2):
    model, tok = smollm2
    # "." as the end-of-thinking marker: this model ends a sentence within a few tokens, so it tries
    # to stop often
    config = BudgetConfig(thinking_budget=60, max_waits=2, answer_tokens=4, think_end=".")
    out = generate_with_budget(model, tok, real_prompt(tok), config)
    assert out.waits == 2 and out.thinking.count(" Wait") == 2 and "." not in out.thinking
    assert out.thinking_tokens <= 60 and not out.budget_exhausted
    tight = generate_with_budget(
        model, tok, real_prompt(tok), config.model_copy(update={"thinking_budget": 6})
    )
    assert tight.thinking_tokens <= 6  # waits count against the budget too


def test_vllm_path_stops_at_the_marker_and_resubmits_with_the_remaining_budget():
    from t0_pipeline.budget import complete_with_budget
    from t0_pipeline_tests.fake_llm import FakeLLM, budget_student

    with FakeLLM() as server:
        # 4 tokens of thinking, then (by the stop string) the end of thinking
        server.on(".*", budget_student("the toe is hot", "(Gout, Urgent Primary Care)", MARKER))
        config = BudgetConfig(thinking_budget=10, max_waits=3, answer_tokens=20, min_tokens=1)
        out = complete_with_budget(server.api_base, "student", "question:", config)
        sent = server.state.requests
    thinking_calls = [r for r in sent if r.get("stop") == [MARKER]]
    # decremented by the tokens generated and by each inserted " Wait" (1 token, from the server's
    # /tokenize)
    assert [r["max_tokens"] for r in thinking_calls] == [10, 5]
    assert all(r["min_tokens"] == 1 and r["temperature"] == 0.0 for r in thinking_calls)
    assert thinking_calls[1]["prompt"] == "question: the toe is hot Wait"
    # 4 + 1 + 4 + 1: the cap
    assert out.waits == 2 and out.thinking_tokens == 10 and out.budget_exhausted
    answer_call = sent[-1]
    assert answer_call["prompt"] == f"question: the toe is hot Wait the toe is hot Wait{MARKER}\n"
    assert answer_call["stop"] == []
    assert out.answer == "(Gout, Urgent Primary Care)"
