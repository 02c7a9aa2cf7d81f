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
    ``marker``.

    Matching text, not token ids, works whatever tokens the model spells the marker with.
    """

    def __init__(self, tokenizer, marker: str, start: int, window: int):
        self.tokenizer, self.marker, self.start, self.window = tokenizer, marker, start, window

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        tail = input_ids[0, max(self.start, input_ids.shape[1] - self.window) :].tolist()
        done = self.marker in self.tokenizer.decode(tail)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def _before_marker(tokenizer, new: list[int], marker: str) -> list[int] | None:
    """The tokens of ``new`` before the first occurrence of ``marker`` in their text, or None when
    it is absent.

    The marker may be several tokens, and the model may spell it with other tokens than the
    tokenizer would, so it is found in the decoded text; the kept tokens are the longest prefix that
    decodes to text before it.
    """
    text = tokenizer.decode(new)
    at = text.find(marker)
    if at < 0:
        return None
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
    """``model.generate`` on token ids, optionally stopping on the end-of-thinking marker's text."""

    def __init__(self, model, tokenizer, config: BudgetConfig, marker_len: int, sampling: dict):
        self.model, self.tokenizer, self.config, self.sampling = model, tokenizer, config, sampling
        self.window = marker_len + 8
        self.eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        pad = tokenizer.pad_token_id
        self.pad = pad if pad is not None else (self.eos[0] if self.eos else 0)
        self.device = next(model.parameters()).device

    def __call__(self, context: list[int], max_new: int, stop_on_marker: bool) -> list[int]:
        import torch
        from transformers import StoppingCriteriaList

        tensor = torch.tensor([context], dtype=torch.long, device=self.device)
        marker = MarkerStop(self.tokenizer, self.config.think_end, len(context), self.window)
        out = self.model.generate(
            tensor,
            attention_mask=torch.ones_like(tensor),
            max_new_tokens=max_new,
            eos_token_id=self.eos or None,
            pad_token_id=self.pad,
            stopping_criteria=StoppingCriteriaList([marker] if stop_on_marker else []),
            **self.sampling,
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
    generate = _LocalGenerator(model, tokenizer, config, len(marker_ids), sampling)
    eos = generate.eos
    ids = _ids(tokenizer, prompt)
    prompt_len = len(ids)
    thinking: list[int] = []
    waits = 0
    exhausted = False
    while True:
        remaining = config.thinking_budget - len(thinking)
        if remaining <= 0:
            exhausted = True
            break
        new = generate(ids, remaining, stop_on_marker=True)
        kept = _before_marker(tokenizer, new, config.think_end)
        ended = kept is not None or (bool(new) and bool(eos) and new[-1] in eos)
        if kept is None:
            kept = new[:-1] if ended else new
        thinking.extend(kept)
        ids = ids + kept
        if not ended:  # ran out of budget mid-thought
            exhausted = len(thinking) >= config.thinking_budget
            break
        if waits >= config.max_waits or len(thinking) + len(wait_ids) > config.thinking_budget:
            break
        waits += 1
        thinking.extend(wait_ids)
        ids = ids + wait_ids
    ids = ids + marker_ids + _ids(tokenizer, config.answer_start)
    answer = generate(ids, config.answer_tokens, stop_on_marker=False)
    return ForcedGeneration(
        thinking=tokenizer.decode(thinking),
        answer=tokenizer.decode(answer, skip_special_tokens=True),
        thinking_tokens=len(thinking),
        waits=waits,
        budget_exhausted=exhausted,
        text=tokenizer.decode(ids[prompt_len:] + answer),
    )


class CompletionsEndpoint:
    """A vLLM OpenAI-compatible ``/completions`` endpoint; each request is retried like every other
    model call (429/5xx/timeouts, exponential backoff), and ``on_failure(trouble, detail)`` hears
    every failed attempt."""

    def __init__(
        self,
        api_base: str,
        model: str,
        api_key: str | None,
        timeout_s: float,
        retry,
        on_failure=None,
    ):
        self.api_base, self.model, self.timeout_s = api_base, model, timeout_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retry, self.on_failure = retry, on_failure

    def post(self, body: dict) -> dict:
        import time

        import httpx

        from t0_pipeline.llm_calls import endpoint_trouble
        from t0_pipeline.retry import RETRYABLE_STATUS, parse_retry_after

        problem, where = "no attempt", self.api_base
        for attempt in range(1, self.retry.max_attempts + 1):
            retry_after, trouble, resp = None, None, None
            try:
                resp = httpx.post(
                    f"{where.rstrip('/')}/completions",
                    json=body,
                    headers=self.headers,
                    timeout=self.timeout_s,
                )
            except httpx.HTTPError as exc:
                name = exc.__class__.__name__
                problem = f"cannot reach the completions endpoint at {where} ({name})"
                trouble = endpoint_trouble(name, None, [name])
            else:
                if resp.status_code < 400:
                    return resp.json()
                problem = (
                    f"the completions endpoint at {where} answered HTTP {resp.status_code}: "
                    f"{resp.text[:200]}"
                )
                trouble = endpoint_trouble("", resp.status_code)
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if self.on_failure:
                self.on_failure(trouble, problem)
            if resp is not None and resp.status_code not in RETRYABLE_STATUS:
                break
            if self.retry.another(attempt):
                time.sleep(self.retry.delay(attempt, retry_after))
        raise T0Error(
            f"{problem}, after {self.retry.max_attempts} attempt(s); start the vLLM server or fix "
            "api_base."
        )

    def complete(self, text: str, max_tokens: int, stop: list[str], min_tokens: int, **sampling):
        """(text, completion tokens, prompt tokens, finish reason) of one completion."""
        body = {
            "model": self.model,
            "prompt": text,
            "max_tokens": max_tokens,
            **sampling,
            "stop": stop,
            "min_tokens": min_tokens,
            "skip_special_tokens": False,
            "include_stop_str_in_output": False,
        }
        reply = self.post(body)
        choice, usage = reply["choices"][0], reply.get("usage") or {}
        return (
            choice.get("text") or "",
            int(usage.get("completion_tokens") or 0),
            int(usage.get("prompt_tokens") or 0),
            choice.get("finish_reason") or "stop",
        )

    def count_tokens(self, text: str) -> int | None:
        """Tokens of ``text`` by the server's own tokenizer (vLLM's /tokenize), or None where there
        is none."""
        import httpx

        root = self.api_base.rstrip("/").removesuffix("/v1")
        try:
            resp = httpx.post(
                f"{root}/tokenize",
                json={"model": self.model, "prompt": text, "add_special_tokens": False},
                headers=self.headers,
                timeout=min(self.timeout_s, 30.0),
            )
            return int(resp.json()["count"]) if resp.status_code < 400 else None
        except (httpx.HTTPError, ValueError, KeyError):
            return None


def _think_remotely(endpoint: CompletionsEndpoint, prompt: str, config: BudgetConfig, sampling):
    """The thinking loop on a completions endpoint: (thinking text, tokens used, waits, whether the
    budget ended it)."""
    wait = " " + config.wait_text
    # known up front, so no request is sent for more than the budget left
    wait_tokens = endpoint.count_tokens(wait)
    thinking, used, waits, exhausted = "", 0, 0, False
    last_prompt = last_completion = None
    while True:
        remaining = config.thinking_budget - used
        if remaining <= 0:
            exhausted = True
            break
        text, n, prompt_tokens, finish = endpoint.complete(
            prompt + thinking, remaining, [config.think_end], config.min_tokens, **sampling
        )
        if wait_tokens is None and last_prompt is not None and prompt_tokens:
            # no /tokenize: what the wait text added to the prompt, counted by the server, after
            # the fact
            used += max(0, prompt_tokens - last_prompt - last_completion)
        last_prompt, last_completion = prompt_tokens, n
        thinking += text
        used += n
        if finish == "length" or used >= config.thinking_budget:  # the budget ran out mid-thought
            exhausted = True
            break
        if waits >= config.max_waits or used + (wait_tokens or 1) > config.thinking_budget:
            break
        waits += 1
        thinking += wait
        used += wait_tokens or 0
    return thinking, used, waits, exhausted


def complete_with_budget(
    api_base: str,
    model: str,
    prompt: str,
    config: BudgetConfig,
    timeout_s: float = 600.0,
    api_key: str | None = None,
    temperature: float = 0.0,
    seed: int | None = None,
    max_attempts: int = 4,
    backoff_s: float = 1.0,
    max_backoff_s: float = 60.0,
    on_failure=None,
) -> ForcedGeneration:
    """Budget forcing against a vLLM OpenAI-compatible completions endpoint (greedy unless a
    temperature is given).

    Requests go through :class:`CompletionsEndpoint` (``on_failure`` hears "unreachable", "auth",
    "not_found" or None, see :func:`t0_pipeline.llm_calls.endpoint_trouble`, and may raise to stop
    the whole stage). The "Wait" tokens count against the budget: the server's own prompt-token
    counts give their number exactly.
    """
    from t0_pipeline.retry import RetryPolicy

    config = config.with_format()  # markers not set by the pipeline's chat_format: the s1 defaults
    retry = RetryPolicy(max(1, max_attempts), backoff_s, max_backoff_s)
    endpoint = CompletionsEndpoint(api_base, model, api_key, timeout_s, retry, on_failure)
    sampling = {"temperature": temperature, "seed": seed}
    thinking, used, waits, exhausted = _think_remotely(endpoint, prompt, config, sampling)
    forced = prompt + thinking + config.think_end + config.answer_start
    answer = endpoint.complete(forced, config.answer_tokens, [], 0, **sampling)[0]
    return ForcedGeneration(
        thinking=thinking.strip(),
        answer=answer.strip(),
        thinking_tokens=used,
        waits=waits,
        budget_exhausted=exhausted,
        text=thinking + config.think_end + config.answer_start + answer,
    )
