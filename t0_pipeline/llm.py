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

The parts live beside it: :mod:`t0_pipeline.llm_calls` (one call, replies, accounting, endpoint
errors), :mod:`t0_pipeline.llm_cache`, :mod:`t0_pipeline.llm_json` (tools, schemas, parsing) and
:mod:`t0_pipeline.thinking`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

from pydantic import BaseModel

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import LLMConfig, RoleConfig
from t0_pipeline.llm_cache import LLMCache, cache_key
from t0_pipeline.llm_calls import (
    RETRYABLE,
    EndpointError,
    LLMReply,
    ModelCallError,
    Usage,
    attempt_once,
    endpoint_trouble,
    exception_chain,
    litellm_module,
    retry_after_of,
    short_error,
)
from t0_pipeline.llm_json import json_schema_format, parse_json
from t0_pipeline.retry import RetryPolicy
from t0_pipeline.thinking import ThinkSplitter, split_thinking

log = logging.getLogger(__name__)
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class LLMClient:
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
        self.setting = (
            setting or f"llm.roles.{role}"
        )  # where a user fixes this model's endpoint (for messages)
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
        s = self.settings
        return {
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "seed": s.seed,
            "extra_body": s.extra_body,
            "top_p": s.top_p,
        }

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
    ) -> LLMReply:
        """One chat completion, from the cache when possible; failures come back with ``error`` set.

        ``tools`` (OpenAI function schemas) are offered with ``tool_choice="auto"``; ``seed``
        overrides the role's seed (repeated runs). Both are part of the cache key. A reply is cached
        only when it succeeded and ``accept`` (if given) takes it, so a reply the caller cannot use
        is asked for again on the next run. ``response_format`` (a JSON schema) constrains the
        reply.
        """
        key, kwargs = self._request(messages, tools, seed, response_format)
        return await self.cached(key, lambda: self._call_with_retries(kwargs), accept)

    def _request(
        self,
        messages: Sequence[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        seed: int | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """(cache key, litellm arguments) of one chat request."""
        params = self.params()
        if seed is not None:
            params["seed"] = seed
        if tools:
            params["tools"] = tools
        if response_format:
            params["response_format"] = response_format
        kwargs = self._kwargs(messages, tools, params["seed"])
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

    async def stream(
        self,
        messages: Sequence[dict[str, Any]],
        think_tags: tuple[str, str] = ("<think>", "</think>"),
    ) -> AsyncIterator[tuple[str, Any]]:
        """A streamed chat completion (never cached): ("thinking" | "answer", text) pieces, then
        ("usage", dict).

        Thinking is recognised in ``reasoning_content`` deltas and between inline ``think_tags``.
        Connection failures before the first piece are retried like :meth:`complete`; a failure
        raises :class:`T0Error` with one line naming the model and endpoint.
        """
        litellm = litellm_module()
        self.start()
        s = self.settings
        kwargs = {
            **self._kwargs(messages, None, s.seed),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        response = None
        for attempt in range(1, self.retry.max_attempts + 1):
            self.usage.requests += 1
            try:
                response = await litellm.acompletion(**kwargs)
                break
            except Exception as exc:  # litellm maps provider errors onto its own exception types
                kind = type(exc).__name__
                if kind not in RETRYABLE or not self.retry.another(attempt):
                    self.usage.failures += 1
                    first = str(exc).splitlines()[0][:200] if str(exc) else kind
                    raise ModelCallError(
                        f"{self.role} model {s.model} at {s.api_base or 'the provider default'} "
                        "failed "
                        f"({kind}: {first.replace('litellm.', '')}); check that the server is up.",
                        endpoint_trouble(
                            kind, getattr(exc, "status_code", None), exception_chain(exc)
                        ),
                    ) from None
                self.usage.retries += 1
                await asyncio.sleep(self.retry.delay(attempt, retry_after_of(exc)))
        splitter = ThinkSplitter(*think_tags)
        usage: dict[str, int] = {}
        chunks = aiter(response)  # type: ignore[arg-type]
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except Exception as exc:  # the stream broke part-way (connection lost, provider error)
                self.usage.failures += 1
                first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                raise ModelCallError(
                    f"{self.role} model {s.model} stopped mid-answer ({type(exc).__name__}: "
                    f"{first.replace('litellm.', '')}); ask again.",
                    "interrupted",
                ) from None
            if getattr(chunk, "usage", None):
                usage = {
                    "prompt_tokens": int(chunk.usage.prompt_tokens or 0),
                    "completion_tokens": int(chunk.usage.completion_tokens or 0),
                }
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            reasoning = getattr(delta, "reasoning_content", None)
            if reasoning:
                yield "thinking", reasoning
            if delta.content:
                for piece in splitter.feed(delta.content):
                    yield piece
        for piece in splitter.flush():
            yield piece
        self.usage.completed += 1
        self.usage.prompt_tokens += usage.get("prompt_tokens", 0)
        self.usage.completion_tokens += usage.get("completion_tokens", 0)
        yield "usage", usage

    async def cached(
        self,
        key: str,
        produce: Callable[[], Awaitable[LLMReply]],
        accept: Callable[[LLMReply], bool] | None = None,
    ) -> LLMReply:
        """The cached reply under ``key``, or ``produce()``'s (stored when it succeeded and
        ``accept`` takes it); counted in usage.

        The one caching mechanism for every kind of model call (chat here; budget-forced
        generation in :mod:`t0_pipeline.evaluate`).
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

    # --- the endpoint as a whole ----------------------------------------------------------
    def where(self) -> str:
        return self.settings.api_base or "the provider's default endpoint"

    def endpoint_ok(self) -> None:
        self._down_since = None

    def check_endpoint(self, trouble: str | None, detail: str) -> None:
        """After a failed attempt inside a batch: raise :class:`EndpointError` when the endpoint,
        not the item, is at fault (key refused, model not served, nothing answering for
        ``llm.unreachable_after_s``)."""
        if not self._batch:
            return
        if self._fatal is None:
            s, detail = self.settings, short_error(detail)
            if trouble == "auth":
                key = f"${s.api_key_env}" if s.api_key_env else "an API key"
                self._fatal = EndpointError(
                    f"{self.role}: {self.where()} refused the API key ({detail}); set {key} to a "
                    "valid key "
                    f"({self.setting}.api_key_env names the variable)."
                )
            elif trouble == "not_found":
                self._fatal = EndpointError(
                    f"{self.role}: {self.where()} does not serve {s.served_name!r} ({detail}); fix "
                    f"{self.setting}.model "
                    "or serve the model under that name."
                )
            elif trouble == "unreachable":
                self._last_unreachable = detail
                now = time.monotonic()
                self._down_since = self._down_since or now
                if now - self._down_since >= self.config.unreachable_after_s:
                    self._fatal = self._unreachable(detail)
        if self._fatal is not None:
            raise self._fatal

    def _unreachable(self, detail: str) -> EndpointError:
        return EndpointError(
            f"{self.role}: nothing answers at {self.where()} ({detail}) for "
            f"{time.monotonic() - (self._down_since or time.monotonic()):.0f} s; start the model "
            "server "
            f"there or fix {self.setting}.api_base. Successful calls are cached: a re-run resumes."
        )

    def check_failure_budget(self) -> None:
        """Stop a batch in which more than ``llm.max_failure_share`` of the finished calls
        failed."""
        u = self.usage
        finished = (
            u.completed + u.cache_hits + u.failures - u.repairs
        )  # a repaired reply is one answer, not two
        failed = u.failures + u.invalid_json
        if (
            finished < self.config.failure_budget_min_calls
            or failed <= self.config.max_failure_share * finished
        ):
            return
        # the failures are the endpoint's: say that, not "N calls failed"
        if self._down_since is not None:
            raise self._unreachable(self._last_unreachable)
        common = max(u.errors, key=u.errors.get) if u.errors else "error"
        raise T0Error(
            f"{self.role}: {failed} of {finished} calls to {self.settings.model} at {self.where()} "
            "failed "
            f"(most often {common}; first: {short_error(u.first_error or '')[:200]}), over the "
            f"failure budget llm.max_failure_share={self.config.max_failure_share:g}; stopped. "
            "Successful "
            "calls are cached: fix the cause and re-run."
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

    # --- many calls ----------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str, total: int) -> Iterator[None]:
        """Count the :meth:`run` calls (rounds) inside as one stage: one bar and one done/total in
        progress lines."""
        from tqdm.auto import tqdm

        self._stage, self._done = (name, total), 0
        self._bar = tqdm(total=total, desc=name, unit="item", leave=False)
        try:
            yield
        finally:
            self._bar.close()
            self._bar, self._stage = None, None

    def grow_stage(self, more: int) -> None:
        """The stage has ``more`` items than planned (a top-up round)."""
        if self._stage is not None:
            self._stage = (self._stage[0], self._stage[1] + more)
            self._bar.total = self._stage[1]  # type: ignore[union-attr]

    def run(
        self,
        items: Sequence[T],
        call: Callable[[T], Awaitable[Any]],
        desc: str,
        progress: Callable[[str], None] | None = None,
    ) -> list[Any]:
        """Run ``call`` over ``items`` concurrently (bounded); results in input order, with a
        progress bar.

        The batch stops with one error as soon as the endpoint is found unusable
        (:meth:`check_endpoint`) or the failure budget is spent (:meth:`check_failure_budget`); the
        calls still in flight are cancelled.
        """
        return asyncio.run(self.arun(items, call, desc, progress))

    async def arun(
        self,
        items: Sequence[T],
        call: Callable[[T], Awaitable[Any]],
        desc: str,
        progress: Callable[[str], None] | None = None,
    ) -> list[Any]:
        from tqdm.auto import tqdm

        results: list[Any] = [None] * len(items)
        own_bar = self._bar is None
        bar = tqdm(total=len(items), desc=desc, unit="item", leave=False) if own_bar else self._bar
        name, total = self._stage if self._stage else (desc, len(items))
        step = max(1, total // 10)

        async def one(i: int, item: T) -> None:
            results[i] = await call(item)

        # the semaphore inside complete() bounds HTTP concurrency; this bounds tasks in flight
        gate = asyncio.Semaphore(max(1, self.config.concurrency * 2))

        async def gated(i: int, item: T) -> None:
            async with gate:
                await one(i, item)

        if self.config.requests_per_minute and not self._rehearsed:
            # litellm's first call sets itself up on the event loop (~0.2 s), holding back the
            # requests paced behind it so that they leave together: done before the clock starts
            await self.rehearse()
            self._rehearsed = True
        self._batch, self._fatal, self._down_since = True, None, None
        if own_bar:
            self._done = 0
        tasks = [asyncio.ensure_future(gated(i, item)) for i, item in enumerate(items)]
        try:
            for fut in asyncio.as_completed(tasks):
                await fut
                self._done += 1
                bar.update(1)
                bar.set_postfix(
                    cached=self.usage.cache_hits, failed=self.usage.failures, refresh=False
                )
                if progress and (self._done % step == 0 or self._done == total):
                    progress(
                        f"{name}: {self._done}/{total} ({self.usage.cache_hits} cached, "
                        f"{self.usage.failures} failed)"
                    )
                self.check_failure_budget()
        finally:
            self._batch = False
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if own_bar:
                bar.close()
        return results
