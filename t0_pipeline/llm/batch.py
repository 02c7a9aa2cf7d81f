"""Many model calls as one batch, for :class:`~t0_pipeline.llm.client.LLMClient`: bounded
concurrency with results in input order, one progress bar per stage, and the two reasons a whole
batch stops early with one error: the endpoint itself is at fault (a refused key, a model not
served, nothing answering for ``llm.unreachable_after_s``), or more calls failed than
``llm.max_failure_share`` allows."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

from t0_pipeline.artifacts import T0Error
from t0_pipeline.llm.calls import EndpointError, short_error

T = TypeVar("T")


class BatchRunner:
    """The batch half of :class:`~t0_pipeline.llm.client.LLMClient` (which sets the attributes
    below)."""

    role: str
    setting: str
    _batch: bool
    _fatal: EndpointError | None
    _down_since: float | None
    _last_unreachable: str

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
                    f"valid key ({self.setting}.api_key_env names the variable)."
                )
            elif trouble == "not_found":
                self._fatal = EndpointError(
                    f"{self.role}: {self.where()} does not serve {s.served_name!r} ({detail}); fix "
                    f"{self.setting}.model or serve the model under that name."
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
            f"server there or fix {self.setting}.api_base. Successful calls are cached: a re-run "
            "resumes."
        )

    def check_failure_budget(self) -> None:
        """Stop a batch in which more than ``llm.max_failure_share`` of the finished calls
        failed."""
        u = self.usage
        # a repaired reply is one answer, not two
        finished = u.completed + u.cache_hits + u.failures - u.repairs
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
            f"failed (most often {common}; first: {short_error(u.first_error or '')[:200]}), over "
            f"the failure budget llm.max_failure_share={self.config.max_failure_share:g}; stopped. "
            "Successful calls are cached: fix the cause and re-run."
        )

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
