"""The one LLM client: every model call in the pipeline goes through here, on litellm.

Roles (``summariser``, ``query_writer``, ``teacher``; later ``agent``, ``reasoner``) each
name a model and its parameters (:class:`~t0_pipeline.config.RoleConfig`); any litellm
provider works: a local vLLM or Ollama OpenAI-compatible server (``openai/<name>`` with
``api_base``), OpenAI, Azure.

- **Cache**: SQLite, keyed by a hash of (model, messages, parameters). Only successful
  replies are stored, so an interrupted run resumes where it stopped, a re-run costs
  nothing, and failed items are retried next time. One cache file can be shared by runs.
- **Throughput**: bounded async concurrency and an optional requests-per-minute limit.
- **Failures**: 429 / 5xx / timeouts / connection errors are retried with exponential
  backoff and jitter, honouring ``Retry-After``, up to ``max_attempts``; then the item is
  recorded as failed (never dropped silently, never retried forever).
- **Structured output**: JSON validated with pydantic; one repair attempt, then failed.
- **Reasoning**: thinking is captured whether the provider returns ``reasoning_content``
  or inline ``<think>…</think>``.
- **Accounting**: calls, cache hits, retries, failures, tokens and cost (litellm's price
  table, or per-token prices set on the role for self-hosted models).

The parts live beside it: :mod:`t0_pipeline.llm.calls` (one call, replies, accounting, endpoint
errors), :mod:`t0_pipeline.llm.batch` (many calls, endpoint faults, the failure budget),
:mod:`t0_pipeline.llm.stream` (streamed answers), :mod:`t0_pipeline.llm.cache`,
:mod:`t0_pipeline.llm.structured` (tools, schemas, parsing) and :mod:`t0_pipeline.llm.thinking`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

from pydantic import BaseModel

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import LLMConfig, RoleConfig
from t0_pipeline.llm.batch import BatchRunner
from t0_pipeline.llm.cache import LLMCache, cache_key
from t0_pipeline.llm.calls import (
    RETRYABLE,
    EndpointError,
    LLMReply,
    Usage,
    attempt_once,
    litellm_module,
)
from t0_pipeline.llm.stream import Streaming
from t0_pipeline.llm.structured import json_schema_format, parse_json
from t0_pipeline.llm.thinking import split_thinking
from t0_pipeline.retry import RetryPolicy

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class LLMClient(BatchRunner, Streaming):
    """Calls for one role, sharing a cache, a concurrency cap and a rate limit."""

    def __init__(
        self,
        role: str,
        config: LLMConfig,
        cache: LLMCache | None,
        overrides: dict[str, Any] | None = None,
        setting: str | None = None,
    ):
        if role not in config.roles:
            raise T0Error(
                f"no LLM role {role!r} configured; add llm.roles.{role} (model, api_base, ...) to "
                "the config."
            )
        self.role = role
        # where a user fixes this model's endpoint (for messages)
        self.setting = setting or f"llm.roles.{role}"
        # inside run(): an endpoint failure stops every item (see check_endpoint)
        self._batch = False
        self._fatal: EndpointError | None = None
        self._down_since: float | None = None
        self._last_unreachable = ""
        self._bar = None  # the stage's progress bar, across several run() calls (stage)
        self._stage: tuple[str, int] | None = None
        self._done = 0
        self.config = config
        self.retry = RetryPolicy(config.max_attempts, config.backoff_s, config.max_backoff_s)
        self.settings: RoleConfig = config.roles[role].model_copy(update=overrides or {})
        self.cache = cache
        self.usage = Usage()
        self._pace_lock: asyncio.Lock | None = None
        self._last_start = 0.0
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._rehearsed = False

    # --- one call ------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The sampling parameters, and the weights behind the endpoint when known: both are part
        of every cache key (a retrained checkpoint is asked afresh)."""
        s = self.settings
        params = {
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "seed": s.seed,
            "extra_body": s.extra_body,
            "top_p": s.top_p,
        }
        if s.weights:  # absent otherwise: API models' cached replies keep their keys
            params["weights"] = s.weights
        return params

    async def _pace(self) -> None:
        if not self.config.requests_per_minute:
            return
        async with self._pace_lock:  # type: ignore[union-attr]
            wait = self._last_start + 60.0 / self.config.requests_per_minute - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_start = time.monotonic()

    def _price_entry(self) -> dict:
        """This model's price for litellm's table, when litellm lacks it or the role sets one
        (default 0).

        Besides right costs, a known model keeps litellm's per-reply cost lookup a fast hit
        instead of a chain of failing fallbacks, which costs more CPU than the HTTP call itself.
        """
        litellm = litellm_module()
        s = self.settings
        name = s.served_name
        known = s.model in litellm.model_cost or name in litellm.model_cost
        if known and s.input_cost_per_token is None and s.output_cost_per_token is None:
            return {}
        return {
            name: {
                "input_cost_per_token": s.input_cost_per_token or 0.0,
                "output_cost_per_token": s.output_cost_per_token or 0.0,
                "litellm_provider": "openai" if s.model.startswith("openai/") else "custom",
                "mode": "chat",
            }
        }

    def start(self) -> None:
        """Prepare to call (import litellm, register the price). Done on the first call anyway."""
        if self._started:
            return
        prices = self._price_entry()
        if prices:
            litellm_module().register_model(prices)
        self._started = True

    def _loop_state(self) -> asyncio.Semaphore:
        """The concurrency gate for the running event loop (asyncio primitives belong to one
        loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._slots, self._pace_lock = (
                loop,
                asyncio.Semaphore(self.config.concurrency),
                asyncio.Lock(),
            )
        return self._slots  # type: ignore[return-value]

    async def complete(
        self,
        messages: Sequence[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        seed: int | None = None,
        accept: Callable[[LLMReply], bool] | None = None,
        response_format: dict[str, Any] | None = None,
        tool_choice: str = "auto",
    ) -> LLMReply:
        """One chat completion, from the cache when possible; failures come back with ``error`` set.

        ``tools`` (OpenAI function schemas) are offered with ``tool_choice`` ("auto", or "required"
        for a call the model must make); ``seed``
        overrides the role's seed (repeated runs). Both are part of the cache key. A reply is cached
        only when it succeeded and ``accept`` (if given) takes it, so a reply the caller cannot use
        is asked for again on the next run. ``response_format`` (a JSON schema) constrains the
        reply.
        """
        key, kwargs = self._request(messages, tools, seed, response_format, tool_choice)
        return await self.cached(key, lambda: self._call_with_retries(kwargs), accept)

    def _request(
        self,
        messages: Sequence[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        seed: int | None = None,
        response_format: dict[str, Any] | None = None,
        tool_choice: str = "auto",
    ) -> tuple[str, dict[str, Any]]:
        """(cache key, litellm arguments) of one chat request."""
        params = self.params()
        if seed is not None:
            params["seed"] = seed
        if tools:
            params["tools"] = tools
            if tool_choice != "auto":
                params["tool_choice"] = tool_choice
        if response_format:
            params["response_format"] = response_format
        kwargs = self._kwargs(messages, tools, params["seed"])
        if tools:
            kwargs["tool_choice"] = tool_choice
        if response_format:
            kwargs["response_format"] = response_format
        return cache_key(self.settings.model, messages, params), kwargs

    def _kwargs(
        self,
        messages: Sequence[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        seed: int | None,
    ) -> dict:
        s = self.settings
        return {
            "model": s.model,
            "messages": list(messages),
            "api_base": s.api_base,
            "api_key": s.api_key() or "none",
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "seed": seed,
            "top_p": s.top_p,
            "timeout": s.timeout_s,
            "num_retries": 0,
            "max_retries": 0,
            **({"extra_body": s.extra_body} if s.extra_body else {}),
            **({"tools": tools, "tool_choice": "auto"} if tools else {}),
        }

    async def rehearse(
        self, tools: list[dict[str, Any]] | None = None, stream: bool = False
    ) -> None:
        """Go through litellm's request path once without calling the model (its ``mock_response``):
        its lazy imports and set-up then happen at start-up instead of in a waiting person's first
        turn."""
        kwargs = {
            **self._kwargs([{"role": "user", "content": "warm-up"}], tools, None),
            "mock_response": "ok",
        }
        response = await litellm_module().acompletion(
            **kwargs, **({"stream": True} if stream else {})
        )
        if stream:
            async for _ in response:  # type: ignore[union-attr]
                pass
        # what a mock leaves cold: the OpenAI SDK imports its API resources (~1 s) on the first real
        # request
        try:
            importlib.import_module("openai.resources")
        except ImportError:
            pass

    async def cached(
        self,
        key: str,
        produce: Callable[[], Awaitable[LLMReply]],
        accept: Callable[[LLMReply], bool] | None = None,
    ) -> LLMReply:
        """The cached reply under ``key``, or ``produce()``'s (stored when it succeeded and
        ``accept`` takes it); counted in usage.

        The one caching mechanism for every kind of model call (chat here; budget-forced
        generation in :mod:`t0_pipeline.evaluation.predictors`).
        """
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            reply = LLMReply(**{**hit, "cached": True, "attempts": 0})
            self.usage.add(reply)
            return reply
        self.start()
        reply = await produce()
        if reply.ok and (accept is None or accept(reply)):
            self.store(key, reply)
        self.usage.add(reply)
        return reply

    def store(self, key: str, reply: LLMReply) -> None:
        if self.cache is not None:
            self.cache.put(
                key,
                self.settings.model,
                {
                    k: v
                    for k, v in asdict(reply).items()
                    if k not in ("cached", "attempts", "error")
                },
            )

    async def _call_with_retries(self, kwargs: dict[str, Any]) -> LLMReply:
        slots = self._loop_state()
        error = "no attempt"
        for attempt in range(1, self.retry.max_attempts + 1):
            if self._fatal is not None:
                raise self._fatal
            async with slots:
                await self._pace()
                self.usage.requests += 1
                outcome = await attempt_once(kwargs)
            if outcome["ok"]:
                self.endpoint_ok()
                thinking, answer = split_thinking(outcome["content"], outcome["reasoning"])
                return LLMReply(
                    content=answer,
                    thinking=thinking,
                    prompt_tokens=outcome["prompt_tokens"],
                    completion_tokens=outcome["completion_tokens"],
                    cost=outcome["cost"],
                    attempts=attempt,
                    finish_reason=outcome["finish_reason"],
                    tool_calls=outcome["tool_calls"],
                )
            kind, status = outcome["kind"], outcome["status"]
            error = f"{kind}: {outcome['message']}"
            self.check_endpoint(outcome.get("trouble"), error)
            if kind not in RETRYABLE or (kind == "APIError" and status and int(status) < 500):
                break
            if self.retry.another(attempt):
                self.usage.retries += 1
                wait = self.retry.delay(attempt, outcome["retry_after"])
                if self._down_since is not None:  # look again before the unreachable window closes
                    wait = min(
                        wait,
                        max(
                            0.5,
                            self._down_since + self.config.unreachable_after_s - time.monotonic(),
                        ),
                    )
                log.debug("%s: retry %d in %.1fs after %s", self.role, attempt, wait, error)
                await asyncio.sleep(wait)
        return LLMReply(error=error, attempts=attempt, trouble=outcome.get("trouble"))

    async def complete_json(
        self,
        messages: Sequence[dict[str, Any]],
        schema: type[M],
        seed: int | None = None,
        response_schema: dict[str, Any] | None = None,
    ) -> tuple[M | None, LLMReply]:
        """A reply parsed into ``schema``; one repair round on malformed JSON, then (None, reply
        with error).

        With the role's ``structured_output`` the server is asked for JSON of ``response_schema``
        (default: ``schema``'s own JSON schema) and can produce nothing else.

        Only a reply that parses is cached: a repaired one under the original request too (a re-run
        makes no call), an unusable one not at all (a re-run asks again).
        """

        def valid(r: LLMReply) -> bool:
            return parse_json(r.content, schema)[0] is not None

        fmt = (
            json_schema_format(schema.__name__, response_schema or schema.model_json_schema())
            if self.settings.structured_output
            else None
        )
        reply = await self.complete(messages, seed=seed, accept=valid, response_format=fmt)
        if not reply.ok:
            return None, reply
        parsed, problem = parse_json(reply.content, schema)
        if parsed is not None:
            return parsed, reply
        self.usage.repairs += 1
        repair = [
            *messages,
            {"role": "assistant", "content": reply.content},
            {
                "role": "user",
                "content": f"That reply was not valid JSON for the requested format ({problem}). "
                "Reply again with only the corrected JSON object and nothing else.",
            },
        ]
        second = await self.complete(repair, seed=seed, accept=valid, response_format=fmt)
        if not second.ok:
            return None, second
        parsed, problem = parse_json(second.content, schema)
        if parsed is None:
            self.usage.invalid_json += 1
            second.error = f"InvalidJSON: {problem}"
            self.usage.errors["InvalidJSON"] = self.usage.errors.get("InvalidJSON", 0) + 1
            self.usage.first_error = self.usage.first_error or second.error
        else:
            self.store(self._request(messages, seed=seed, response_format=fmt)[0], second)
        return parsed, second
