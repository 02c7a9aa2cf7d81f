"""Budget forcing against a vLLM OpenAI-compatible ``/v1/completions`` endpoint (greedy unless a
temperature is given): the same rules as :mod:`t0_pipeline.evaluation.budget` (budget never
exceeded, a "Wait" only when a thinking token can follow it, at least one token after it, the end
marker forced after what training put before it), in requests: each thinking request stops at the
end-of-thinking marker or a turn token and asks only for the budget left; the turn tokens are also
sent as ``stop_token_ids`` where the server's ``/tokenize`` names them, so ``min_tokens`` bars them.
"""

from __future__ import annotations

from t0_pipeline.artifacts import T0Error
from t0_pipeline.chat import BEFORE_THINK_END
from t0_pipeline.evaluation.budget import BudgetConfig, ForcedGeneration


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

        from t0_pipeline.llm.calls import endpoint_trouble
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

    def complete(
        self,
        text: str,
        max_tokens: int,
        stop: list[str],
        min_tokens: int,
        stop_token_ids: list[int] | None = None,
        **sampling,
    ):
        """(text, completion tokens, prompt tokens, finish reason) of one completion. Special tokens
        stay in the text (vLLM drops them by default, and a marker such as ``<|im_start|>answer``
        could then never be found); ``stop_token_ids`` are barred before ``min_tokens``."""
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
        if stop_token_ids:
            body["stop_token_ids"] = stop_token_ids
        reply = self.post(body)
        choice, usage = reply["choices"][0], reply.get("usage") or {}
        return (
            choice.get("text") or "",
            int(usage.get("completion_tokens") or 0),
            int(usage.get("prompt_tokens") or 0),
            choice.get("finish_reason") or "stop",
        )

    def token_ids(self, text: str) -> list[int] | None:
        """``text`` as the server's tokenizer reads it (vLLM's ``/tokenize``), or None where there
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
            return [int(t) for t in resp.json()["tokens"]] if resp.status_code < 400 else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` by the server's own tokenizer: ``/tokenize``; else the prompt tokens
        of a one-token completion of it; else its bytes (no tokenizer spends fewer tokens than
        bytes, so the budget still holds)."""
        ids = self.token_ids(text)
        if ids is not None:
            return len(ids)
        try:
            counted = self.complete(text, 1, [], 0, temperature=0.0)[2]
        except T0Error:
            counted = 0
        return counted or len(text.encode("utf-8"))

    def single_token_ids(self, texts: list[str]) -> list[int]:
        """The ids of those ``texts`` that are one token each (the template's turn tokens), to
        stop on and to bar before ``min_tokens``; none without ``/tokenize``."""
        out = []
        for text in texts:
            ids = self.token_ids(text)
            if ids is not None and len(ids) == 1:
                out.append(ids[0])
        return out


def _think_remotely(endpoint: CompletionsEndpoint, prompt: str, config: BudgetConfig, sampling):
    """The thinking loop on a completions endpoint: (thinking text, tokens used, waits, whether the
    budget ended it)."""
    wait = " " + config.wait_text
    # known up front, so no request is sent for more than the budget left
    wait_tokens = endpoint.count_tokens(wait)
    ends = [config.think_end, *config.turn_tokens]
    turn_ids = endpoint.single_token_ids(list(config.turn_tokens))
    thinking, used, waits = "", 0, 0
    while True:
        remaining = config.thinking_budget - used
        if remaining <= 0:
            return thinking, used, waits, True
        # after a "Wait" the model must write at least one token before it may stop (s1)
        least = max(1, config.min_tokens) if waits else config.min_tokens
        text, n, _, finish = endpoint.complete(
            prompt + thinking, remaining, ends, least, turn_ids, **sampling
        )
        thinking += text
        used += n
        if finish == "length" or used >= config.thinking_budget:  # the budget ran out mid-thought
            return thinking, used, waits, True
        # a "Wait" only when at least one thinking token can follow it
        if waits >= config.max_waits or used + wait_tokens >= config.thinking_budget:
            return thinking, used, waits, False
        waits += 1
        thinking += wait
        used += wait_tokens


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
    "not_found" or None, see :func:`t0_pipeline.llm.calls.endpoint_trouble`, and may raise to stop
    the whole stage). The "Wait" tokens count against the budget, counted before they are sent.
    """
    from t0_pipeline.retry import RetryPolicy

    config = config.with_format()  # markers not set by the pipeline's chat_format: the s1 defaults
    retry = RetryPolicy(max(1, max_attempts), backoff_s, max_backoff_s)
    endpoint = CompletionsEndpoint(api_base, model, api_key, timeout_s, retry, on_failure)
    sampling = {"temperature": temperature, "seed": seed}
    thinking, used, waits, exhausted = _think_remotely(endpoint, prompt, config, sampling)
    # the marker after exactly what training put before it
    before = "" if thinking.endswith(BEFORE_THINK_END) else BEFORE_THINK_END
    closing = before + config.think_end + config.answer_start
    turns = list(config.turn_tokens)
    answer = endpoint.complete(
        prompt + thinking + closing,
        config.answer_tokens,
        turns,
        0,
        endpoint.single_token_ids(turns),
        **sampling,
    )[0]
    return ForcedGeneration(
        thinking=thinking.strip(),
        answer=answer.strip(),
        thinking_tokens=used,
        waits=waits,
        budget_exhausted=exhausted,
        text=thinking + closing + answer,
    )
