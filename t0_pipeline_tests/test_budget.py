"""Budget forcing on a tiny random Qwen2 whose greedy choice is pinned to one token.

With the final norm zeroed every logit is 0, so greedy decoding always picks token id 0.
Making id 0 the end-of-thinking marker gives a model that always tries to stop thinking;
making it an ordinary word gives one that never stops. Both are real transformers
generation through the same code users run.
"""

from __future__ import annotations

import pytest

from t0_pipeline.chat import ChatFormat, generation_prompt
from t0_pipeline.evaluation.budget import BudgetConfig, generate_with_budget

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
    # after each "Wait" the ends of thinking are barred for one token (s1's min_tokens 1): the
    # pinned model's next choice, <unk>, comes instead
    assert out.waits == 3 and out.thinking.split() == ["Wait", "<unk>"] * 3
    assert out.thinking_tokens == 6 and not out.budget_exhausted
    # then the forced answer marker (the newline before it: in the real tokenizer's test below)
    assert out.text.split()[6] == MARKER


def test_a_model_that_never_stops_is_cut_at_the_budget_and_the_answer_is_forced(tmp_path):
    model, tok = pinned_model(tmp_path, "the")  # never emits the end-of-thinking marker
    out = generate_with_budget(
        model, tok, "question", BudgetConfig(thinking_budget=7, max_waits=3, answer_tokens=2)
    )
    assert out.thinking_tokens == 7 and out.budget_exhausted and out.waits == 0
    assert out.text.split()[7] == MARKER and out.answer.split() == ["the", "the"]


def test_thinking_never_exceeds_the_budget_and_a_wait_never_takes_its_last_token(tmp_path):
    model, tok = pinned_model(tmp_path, MARKER)
    for budget in (1, 2, 3, 4, 5):
        out = generate_with_budget(
            model,
            tok,
            "question",
            BudgetConfig(thinking_budget=budget, max_waits=10, answer_tokens=1),
        )
        assert out.thinking_tokens <= budget and MARKER in out.text
        # every "Wait" is followed by a thinking token: never "Wait" then the forced marker
        assert out.waits == budget // 2 and not out.thinking.endswith("Wait"), (budget, out)


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
    # the two-token marker, forced after the newline the training text puts before it
    assert out.text.startswith(out.thinking) and after.startswith("\n" + MARKER + "\n")
    assert not out.thinking.rstrip().endswith("Wait")  # a token of thinking after each Wait
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


def budget_requests(config: BudgetConfig, tokenize: bool = True):
    """Budget forcing against the completions double (which honours stop, stop_token_ids,
    min_tokens and skip_special_tokens as vLLM does) for a student that thinks "the toe is hot",
    then ends its thinking as it was trained to; (result, thinking requests, every request)."""
    from t0_pipeline.evaluation.budget_endpoint import complete_with_budget
    from t0_pipeline_tests.fake_llm import FakeLLM, budget_student

    with FakeLLM() as server:
        server.state.tokenize = tokenize
        server.on(".*", budget_student("the toe is hot", "(Gout, Urgent Primary Care)", MARKER))
        out = complete_with_budget(server.api_base, "student", "question:", config)
        sent = list(server.state.requests)
    return out, [r for r in sent if MARKER in (r.get("stop") or [])], sent


def test_vllm_path_stops_at_the_marker_and_resubmits_with_the_remaining_budget():
    config = BudgetConfig(thinking_budget=10, max_waits=3, answer_tokens=20)
    out, thinking, sent = budget_requests(config)
    # 4 words, the newline, then the turn token that starts the marker (6 tokens, the stop counted
    # as vLLM counts it); " Wait" (1 token by /tokenize); then the 3 tokens left: the cap
    assert [r["max_tokens"] for r in thinking] == [10, 3]
    assert [r["min_tokens"] for r in thinking] == [0, 1]  # at least one token after a Wait (s1)
    assert thinking[1]["prompt"] == "question: the toe is hot\n Wait"
    assert all(r["stop"] == [MARKER, "<|im_start|>", "<|im_end|>"] for r in thinking)
    # the turn tokens as ids too (from /tokenize), so that min_tokens bars them; special tokens kept
    # in the text, or the marker could never be found
    assert all(len(r["stop_token_ids"]) == 2 and r["skip_special_tokens"] is False for r in sent)
    assert out.waits == 1 and out.thinking_tokens == 10 and out.budget_exhausted
    answer_call = sent[-1]
    # the marker forced after the newline its training text has before it, then the answer marker
    assert answer_call["prompt"].endswith(" Wait the toe is\n" + MARKER + "\n")
    assert answer_call["stop"] == ["<|im_start|>", "<|im_end|>"]  # the answer ends with its turn
    assert out.answer == "(Gout, Urgent Primary Care)"


def test_vllm_path_never_lets_a_wait_take_the_last_token_and_keeps_the_trained_newline():
    # 6 tokens thought: a " Wait" would leave no token to think with, so the answer is forced
    out, thinking, sent = budget_requests(BudgetConfig(thinking_budget=7, max_waits=3))
    assert len(thinking) == 1 and out.waits == 0 and not out.budget_exhausted
    assert out.thinking_tokens == 6
    # the thinking already ends with the newline: none is added
    assert sent[-1]["prompt"] == "question: the toe is hot\n" + MARKER + "\n"


def test_vllm_path_without_tokenize_counts_the_wait_before_sending_it():
    """A completions server without /tokenize: the wait text is measured by a one-token completion
    before any thinking request, so no request asks for more than the budget left."""
    config = BudgetConfig(thinking_budget=10, max_waits=3, answer_tokens=20)
    out, thinking, sent = budget_requests(config, tokenize=False)
    assert sent[0]["prompt"] == " Wait" and sent[0]["max_tokens"] == 1
    assert [r["max_tokens"] for r in thinking] == [10, 3] and out.thinking_tokens == 10
    assert all("stop_token_ids" not in r for r in thinking)  # no ids known: text stops only


def test_the_completions_double_honours_stop_min_tokens_and_special_tokens():
    """The double the vLLM-path tests run against: without skip_special_tokens=False the marker's
    special token is dropped from the text and its stop string never matches (vLLM's default)."""
    from t0_pipeline_tests.fake_llm import SPECIAL_IDS, complete_script

    script = f"the toe is hot\n{MARKER}\n(Gout, A&E)<|im_end|>"
    assert complete_script(script, {"stop": [MARKER]})[0] == " the toe is hot\nanswer\n(Gout, A&E)"
    kept = {"stop": [MARKER], "skip_special_tokens": False}
    assert complete_script(script, kept) == (" the toe is hot\n", 7, "stop")  # <|im_start|>, answer
    assert complete_script(script, {**kept, "max_tokens": 2}) == (" the toe", 2, "length")
    # before min_tokens a stop token id is not sampled: the script's next token comes instead
    barred = {**kept, "stop_token_ids": list(SPECIAL_IDS.values()), "min_tokens": 1}
    assert complete_script(f"{MARKER} more", barred) == ("answer more", 2, "stop")
