"""Budget forcing for reasoning models (s1-style), on local transformers generation.

Thinking is capped at ``thinking_budget`` tokens. Each time the model tries to end its
thinking early, the end-of-thinking marker is dropped and ``wait_text`` ("Wait") is
appended instead, up to ``max_waits`` times. When the waits are spent, the budget runs
out (even mid-thought) or the model stops on its own, the end-of-thinking and answer
markers are forced and the answer is generated. Markers come from configuration (or the
tokenizer), never from the model's name.

Input: a causal LM + tokenizer and a rendered prompt (ending where thinking starts).
Output: :class:`ForcedGeneration` with the thinking, the answer and the counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from t0_pipeline.artifacts import T0Error


class BudgetConfig(BaseModel):
    thinking_budget: int = 1024  # tokens of thinking at most (report)
    max_waits: int = 3  # times an early end of thinking is replaced by wait_text (report)
    answer_tokens: int = 256  # tokens for the answer after the forced answer marker
    think_end: str = "<|im_start|>answer"  # s1/Qwen style; "</think>" for <think> models
    answer_start: str = "\n"  # text forced after think_end, before the answer
    wait_text: str = "Wait"


@dataclass
class ForcedGeneration:
    thinking: str
    answer: str
    thinking_tokens: int
    waits: int
    budget_exhausted: bool  # the cap, not the model, ended the thinking
    text: str = ""  # everything after the prompt, markers included


def _single_token(tokenizer, text: str, what: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise T0Error(f"the {what} marker {text!r} is {len(ids)} tokens for this tokenizer; budget forcing needs it "
                      "to be one token (add it as a special token, or set the marker the model really uses).")
    return ids[0]


def generate_with_budget(model, tokenizer, prompt: str, config: BudgetConfig) -> ForcedGeneration:
    """Greedy generation with the thinking budget and wait insertions described above."""
    import torch

    end_id = _single_token(tokenizer, config.think_end, "end-of-thinking")
    wait_ids = tokenizer(" " + config.wait_text, add_special_tokens=False)["input_ids"]
    stop_ids = [end_id] + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=device)
    prompt_len = ids.shape[1]
    thinking: list[int] = []
    waits = 0
    exhausted = False
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[-1]
    while True:
        remaining = config.thinking_budget - len(thinking)
        if remaining <= 0:
            exhausted = True
            break
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=remaining, do_sample=False,
                             eos_token_id=stop_ids, pad_token_id=pad)
        new = out[0, ids.shape[1]:].tolist()
        stopped = bool(new) and new[-1] in stop_ids
        if stopped:
            new = new[:-1]  # the marker itself is not thinking; it is re-added when the answer is forced
        thinking.extend(new)
        ids = torch.tensor([ids[0].tolist() + new], device=device)
        if not stopped:  # ran out of budget mid-thought
            exhausted = len(thinking) >= config.thinking_budget
            break
        if waits >= config.max_waits or len(thinking) + len(wait_ids) > config.thinking_budget:
            break
        waits += 1
        thinking.extend(wait_ids)
        ids = torch.tensor([ids[0].tolist() + wait_ids], device=device)
    forced = [end_id] + tokenizer(config.answer_start, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ids[0].tolist() + forced], device=device)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=config.answer_tokens,
                         do_sample=False, eos_token_id=stop_ids[1:] or None, pad_token_id=pad)
    answer = out[0, ids.shape[1]:].tolist()
    generated = out[0, prompt_len:].tolist()
    return ForcedGeneration(thinking=tokenizer.decode(thinking), answer=tokenizer.decode(answer, skip_special_tokens=True),
                            thinking_tokens=len(thinking), waits=waits, budget_exhausted=exhausted,
                            text=tokenizer.decode(generated))
