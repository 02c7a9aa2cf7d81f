"""Streamed chat completions for :class:`~t0_pipeline.llm.client.LLMClient` (the chat service's
answers): never cached; thinking told apart from the answer as it arrives, whether the provider
sends ``reasoning_content`` deltas or inline think tags; a failure before the first piece is
retried, one part-way through ends the stream with one line naming the model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from t0_pipeline.llm.calls import (
    RETRYABLE,
    ModelCallError,
    endpoint_trouble,
    exception_chain,
    litellm_module,
    retry_after_of,
)
from t0_pipeline.llm.thinking import ThinkSplitter, reasoning_of


class Streaming:
    """The streaming half of :class:`~t0_pipeline.llm.client.LLMClient` (its settings, retry
    policy and usage)."""

    async def stream(
        self,
        messages: Sequence[dict[str, Any]],
        think_tags: tuple[str, str] = ("<think>", "</think>"),
    ) -> AsyncIterator[tuple[str, Any]]:
        """A streamed chat completion (never cached): ("thinking" | "answer", text) pieces, then
        ("usage", dict).

        Thinking is recognised in ``reasoning_content`` or ``reasoning`` deltas and between inline
        ``think_tags``.
        Connection failures before the first piece are retried like :meth:`complete`; a failure
        raises :class:`T0Error` with one line naming the model and endpoint.
        """
        self.start()
        s = self.settings
        kwargs = {
            **self._kwargs(messages, None, s.seed),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        response = await self._open_stream(kwargs)
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
            reasoning = reasoning_of(delta)
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

    async def _open_stream(self, kwargs: dict[str, Any]):
        """Start a streamed completion; connection failures are retried like :meth:`complete`."""
        litellm, s = litellm_module(), self.settings
        for attempt in range(1, self.retry.max_attempts + 1):
            self.usage.requests += 1
            try:
                return await litellm.acompletion(**kwargs)
            except Exception as exc:  # litellm maps provider errors onto its own exception types
                kind = type(exc).__name__
                if kind not in RETRYABLE or not self.retry.another(attempt):
                    self.usage.failures += 1
                    first = str(exc).splitlines()[0][:200] if str(exc) else kind
                    trouble = endpoint_trouble(
                        kind, getattr(exc, "status_code", None), exception_chain(exc)
                    )
                    raise ModelCallError(
                        f"{self.role} model {s.model} at {s.api_base or 'the provider default'} "
                        f"failed ({kind}: {first.replace('litellm.', '')}); check that the server "
                        "is up.",
                        trouble,
                    ) from None
                self.usage.retries += 1
                await asyncio.sleep(self.retry.delay(attempt, retry_after_of(exc)))
        raise AssertionError("unreachable: the last attempt raises")
