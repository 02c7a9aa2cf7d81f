"""Budget forcing for reasoning models (s1-style): local transformers generation, or a vLLM server.

Thinking is capped at ``thinking_budget`` tokens. Each time the model tries to end its
thinking early, the end-of-thinking marker is dropped and ``wait_text`` ("Wait") is
appended instead, up to ``max_waits`` times. When the waits are spent, the budget runs
out (even mid-thought) or the model stops on its own, the end-of-thinking and answer
markers are forced and the answer is generated. Markers come from configuration (or the
tokenizer), never from the model's name.

Input: a causal LM + tokenizer, or a vLLM OpenAI-compatible ``/v1/completions`` endpoint,
and a rendered prompt (ending where thinking starts). Output: :class:`ForcedGeneration`
with the thinking, the answer and the counts. On vLLM the thinking request stops at the
end-of-thinking marker, sends ``min_tokens``, and each resubmission (prompt + thinking +
"Wait") asks only for the budget left after the tokens actually generated.
"""

from __future__ import annotations

from dataclasses import dataclass

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import BudgetConfig  # noqa: F401  (re-exported: callers import it from here)


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
    if not wait_ids:
        raise T0Error(f"the wait text {config.wait_text!r} is no tokens for this tokenizer; set budget.wait_text to a word "
                      "the model's tokenizer knows.")
    stop_ids = [end_id] + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]], dtype=torch.long, device=device)
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
        ids = torch.tensor([ids[0].tolist() + new], dtype=torch.long, device=device)
        if not stopped:  # ran out of budget mid-thought
            exhausted = len(thinking) >= config.thinking_budget
            break
        if waits >= config.max_waits or len(thinking) + len(wait_ids) > config.thinking_budget:
            break
        waits += 1
        thinking.extend(wait_ids)
        ids = torch.tensor([ids[0].tolist() + wait_ids], dtype=torch.long, device=device)
    forced = [end_id] + tokenizer(config.answer_start, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ids[0].tolist() + forced], dtype=torch.long, device=device)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=config.answer_tokens,
                         do_sample=False, eos_token_id=stop_ids[1:] or None, pad_token_id=pad)
    answer = out[0, ids.shape[1]:].tolist()
    generated = out[0, prompt_len:].tolist()
    return ForcedGeneration(thinking=tokenizer.decode(thinking), answer=tokenizer.decode(answer, skip_special_tokens=True),
                            thinking_tokens=len(thinking), waits=waits, budget_exhausted=exhausted,
                            text=tokenizer.decode(generated))


def complete_with_budget(api_base: str, model: str, prompt: str, config: BudgetConfig, timeout_s: float = 600.0,
                         api_key: str | None = None, temperature: float = 0.0,
                         seed: int | None = None) -> ForcedGeneration:
    """Budget forcing against a vLLM OpenAI-compatible completions endpoint (greedy unless a temperature is given)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def complete(text: str, max_tokens: int, stop: list[str], min_tokens: int) -> tuple[str, int, str]:
        body = {"model": model, "prompt": text, "max_tokens": max_tokens, "temperature": temperature, "seed": seed,
                "stop": stop,
                "min_tokens": min_tokens, "skip_special_tokens": False, "include_stop_str_in_output": False}
        try:
            resp = httpx.post(f"{api_base.rstrip('/')}/completions", json=body, headers=headers, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise T0Error(f"cannot reach the completions endpoint at {api_base} ({exc.__class__.__name__}); "
                          "start the vLLM server or fix api_base.") from None
        if resp.status_code >= 400:
            raise T0Error(f"the completions endpoint at {api_base} answered HTTP {resp.status_code}: {resp.text[:200]}")
        choice = resp.json()["choices"][0]
        used = int(resp.json().get("usage", {}).get("completion_tokens") or 0)
        return choice.get("text") or "", used, choice.get("finish_reason") or "stop"

    thinking, used, waits, exhausted = "", 0, 0, False
    while True:
        remaining = config.thinking_budget - used
        if remaining <= 0:
            exhausted = True
            break
        text, n, finish = complete(prompt + thinking, remaining, [config.think_end], config.min_tokens)
        thinking += text
        used += n
        if finish == "length":  # the budget ran out mid-thought
            exhausted = True
            break
        if waits >= config.max_waits or used >= config.thinking_budget:
            break
        waits += 1
        thinking += " " + config.wait_text
    forced = prompt + thinking + config.think_end + config.answer_start
    answer, _, _ = complete(forced, config.answer_tokens, [], 0)
    return ForcedGeneration(thinking=thinking.strip(), answer=answer.strip(), thinking_tokens=used, waits=waits,
                            budget_exhausted=exhausted, text=thinking + config.think_end + config.answer_start + answer)
