"""Budget forcing for reasoning models (s1-style): local transformers generation, or a vLLM server.

Thinking is capped at ``thinking_budget`` tokens, never exceeded. Each time the model tries to
end its thinking early (the end-of-thinking marker, one of the template's turn tokens, or its end
of sequence), that end is dropped and ``wait_text`` ("Wait") is appended instead, up to
``max_waits`` times, and only while at least one thinking token can still follow it; after a
"Wait" the model must write at least one token before it may stop again (``min_tokens`` 1, as s1).
When the waits are spent, the budget runs out (even mid-thought) or the model stops on its own,
the end-of-thinking marker is forced after exactly the text training put before it
(:data:`~t0_pipeline.chat.BEFORE_THINK_END`), then the answer marker, and the answer is generated
until a turn token. Markers come from configuration (or the tokenizer), never from the model's
name.

Input: a causal LM + tokenizer, and a rendered prompt (ending where thinking starts). Output:
:class:`ForcedGeneration` with the thinking, the answer and the counts. The same on a vLLM
completions endpoint: :mod:`t0_pipeline.evaluation.budget_endpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass

from t0_pipeline.artifacts import T0Error
from t0_pipeline.chat import BEFORE_THINK_END

# re-exported: callers import it from here
from t0_pipeline.config import BudgetConfig  # noqa: F401


@dataclass
class ForcedGeneration:
    thinking: str
    answer: str
    thinking_tokens: int
    waits: int
    budget_exhausted: bool  # the cap, not the model, ended the thinking
    text: str = ""  # everything after the prompt, markers included


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class MarkerStop:
    """A transformers stopping criterion: the text generated so far (a short tail of it) contains
    one of ``markers``.

    Matching text, not token ids, works whatever tokens the model spells a marker with.
    """

    def __init__(self, tokenizer, markers: list[str], start: int, window: int):
        self.tokenizer, self.markers, self.start, self.window = tokenizer, markers, start, window

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        tail = input_ids[0, max(self.start, input_ids.shape[1] - self.window) :].tolist()
        text = self.tokenizer.decode(tail)
        done = any(m in text for m in self.markers)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def _before_marker(tokenizer, new: list[int], markers: list[str]) -> list[int] | None:
    """The tokens of ``new`` before the first occurrence of any of ``markers`` in their text, or
    None when none is there.

    A marker may be several tokens, and the model may spell it with other tokens than the
    tokenizer would, so it is found in the decoded text; the kept tokens are the longest prefix that
    decodes to text before it.
    """
    text = tokenizer.decode(new)
    found = [at for at in (text.find(m) for m in markers if m) if at >= 0]
    if not found:
        return None
    at = min(found)
    keep = len(new)
    while keep and len(tokenizer.decode(new[:keep])) > at:
        keep -= 1
    return new[:keep]


def _local_markers(tokenizer, config: BudgetConfig) -> tuple[list[int], list[int]]:
    """The end-of-thinking marker's and the wait text's token ids, or a clear error when either is
    unusable."""
    if not config.think_end:
        raise T0Error(
            "budget.think_end is empty; set the end-of-thinking marker the model uses "
            "(chat_format.think_end)."
        )
    wait_ids = _ids(tokenizer, " " + config.wait_text)
    if not wait_ids:
        raise T0Error(
            f"the wait text {config.wait_text!r} is no tokens for this tokenizer; set "
            "budget.wait_text to a word the model's tokenizer knows."
        )
    return _ids(tokenizer, config.think_end), wait_ids


class _LocalGenerator:
    """``model.generate`` on token ids, stopping on the text of any of the given markers; after a
    "Wait", the tokens that would end the thinking at once are barred from the first position."""

    def __init__(self, model, tokenizer, config: BudgetConfig, window: int, sampling: dict):
        self.model, self.tokenizer, self.config, self.sampling = model, tokenizer, config, sampling
        self.window = window + 8
        self.eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        pad = tokenizer.pad_token_id
        self.pad = pad if pad is not None else (self.eos[0] if self.eos else 0)
        self.device = next(model.parameters()).device
        # the first token of each way to end the thinking (that the tokenizer knows), and the end
        # of sequence
        firsts = (_ids(tokenizer, e)[:1] for e in (config.think_end, *config.turn_tokens) if e)
        known = {i[0] for i in firsts if i and i[0] != tokenizer.unk_token_id}
        self.enders = sorted(known | {*self.eos})

    def __call__(
        self, context: list[int], max_new: int, stops: list[str], after_wait: bool = False
    ) -> list[int]:
        import torch
        from transformers import StoppingCriteriaList

        tensor = torch.tensor([context], dtype=torch.long, device=self.device)
        marker = MarkerStop(self.tokenizer, stops, len(context), self.window)
        extra = {"begin_suppress_tokens": self.enders} if after_wait and self.enders else {}
        out = self.model.generate(
            tensor,
            attention_mask=torch.ones_like(tensor),
            max_new_tokens=max_new,
            eos_token_id=self.eos or None,
            pad_token_id=self.pad,
            stopping_criteria=StoppingCriteriaList([marker] if stops else []),
            **self.sampling,
            **extra,
        )
        return out[0, len(context) :].tolist()


def generate_with_budget(
    model,
    tokenizer,
    prompt: str,
    config: BudgetConfig,
    sample: bool = False,
    seed: int | None = None,
    temperature: float = 1.0,
) -> ForcedGeneration:
    """Generation with the thinking budget and wait insertions described above (greedy unless
    ``sample``).

    Markers may be any number of tokens (Qwen's ``<|im_start|>answer`` is two): generation stops on
    the marker's text, and every token, "Wait" insertions included, counts against the budget.
    """
    import torch

    config = config.with_format()  # markers not set by the pipeline's chat_format: the s1 defaults
    marker_ids, wait_ids = _local_markers(tokenizer, config)
    sampling = {"do_sample": True, "temperature": temperature} if sample else {"do_sample": False}
    if sample and seed is not None:
        torch.manual_seed(seed)
    ends = [config.think_end, *config.turn_tokens]
    window = max(len(_ids(tokenizer, e)) for e in ends if e)
    generate = _LocalGenerator(model, tokenizer, config, window, sampling)
    ids = _ids(tokenizer, prompt)
    prompt_len = len(ids)
    thinking, waits, exhausted = _think_locally(generate, tokenizer, ids, config, wait_ids)
    ids = ids + thinking
    ids = ids + _closing_ids(tokenizer, thinking, config, marker_ids)
    new = generate(ids, config.answer_tokens, list(config.turn_tokens))
    answer = _before_marker(tokenizer, new, list(config.turn_tokens))
    answer = new if answer is None else answer
    return ForcedGeneration(
        thinking=tokenizer.decode(thinking),
        answer=tokenizer.decode(answer, skip_special_tokens=True),
        thinking_tokens=len(thinking),
        waits=waits,
        budget_exhausted=exhausted,
        text=tokenizer.decode(ids[prompt_len:] + answer),
    )


def _think_locally(generate, tokenizer, ids: list[int], config: BudgetConfig, wait_ids):
    """(thinking token ids, waits, whether the budget ended it)."""
    ends = [config.think_end, *config.turn_tokens]
    thinking: list[int] = []
    waits, after_wait = 0, False
    while True:
        remaining = config.thinking_budget - len(thinking)
        if remaining <= 0:
            return thinking, waits, True
        new = generate(ids + thinking, remaining, ends, after_wait)
        kept = _before_marker(tokenizer, new, ends)
        ended = kept is not None or (bool(new) and bool(generate.eos) and new[-1] in generate.eos)
        if kept is None:
            kept = new[:-1] if ended else new
        thinking.extend(kept)
        if not ended:  # ran out of budget mid-thought
            return thinking, waits, len(thinking) >= config.thinking_budget
        # a "Wait" only when at least one thinking token can follow it
        if waits >= config.max_waits or len(thinking) + len(wait_ids) >= config.thinking_budget:
            return thinking, waits, False
        waits += 1
        thinking.extend(wait_ids)
        after_wait = True


def _closing_ids(tokenizer, thinking: list[int], config: BudgetConfig, marker_ids) -> list[int]:
    """What is forced after the thinking: the text training puts before the end marker (unless the
    thinking already ends with it), the marker, and the answer marker."""
    before = "" if tokenizer.decode(thinking).endswith(BEFORE_THINK_END) else BEFORE_THINK_END
    return _ids(tokenizer, before) + marker_ids + _ids(tokenizer, config.answer_start)
