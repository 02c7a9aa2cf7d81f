"""Turns on stored threads: serialised per thread across processes, finished even if the client
leaves.

- One turn per thread at a time, in every process on the database: a lease row in the database
  (``thread:<id>``), renewed while the turn runs and lapsing ``serve.turn_lease_s`` after its
  process dies; waiters in one process queue on a local lock first, so only one of them polls.
- The user's message is stored ``pending`` first; it becomes ``ok`` in the same transaction that
  stores the answer, or ``failed`` (with the reason) when the turn fails. A failed message is kept
  in the thread for the person to see and retry, but never sent to a model again.
- Each turn runs in a task of its own that feeds a queue: a client that disconnects stops reading,
  the turn still finishes and its answer is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa

from t0_pipeline.artifacts import T0Error
from t0_pipeline.database import describe_database_error
from t0_pipeline.serve.agent import PLAIN, ChatService, Turn, TurnFailed
from t0_pipeline.serve.store import NotFound, Store

log = logging.getLogger("t0_pipeline.serve")
DEFAULT_TITLE = "New conversation"
DELETED = "This conversation was deleted while the answer was being written."
STORE_DOWN = (
    "This conversation could not be saved: its storage is not reachable right now. Try again in a "
    "minute."
)
NOT_RETRYABLE = (
    "That message cannot be sent again: it is not a failed message of this conversation."
)


def failure(
    message: str, detail: str, message_id: int | None = None, status: int = 502
) -> tuple[str, dict[str, Any]]:
    """An error event: the person's sentence, the operator's detail, and the HTTP status a JSON
    reply carries (502: the model failed; 503: the conversation store did)."""
    return "error", {
        "message": message,
        "detail": detail,
        "message_id": message_id,
        "status": status,
    }


def store_failure(exc: Exception, message_id: int | None = None) -> tuple[str, dict[str, Any]]:
    meaning, _ = describe_database_error(exc)
    return failure(STORE_DOWN, f"conversation database: {meaning}", message_id, status=503)


class TurnRunner:
    def __init__(self, store: Store, service: ChatService, lease_s: float):
        self.store, self.service, self.lease_s = store, service, lease_s
        self.holder = uuid.uuid4().hex  # this process
        self._local: dict[str, asyncio.Lock] = {}
        self.tasks: set[asyncio.Task] = set()

    def start(
        self, thread: dict[str, Any], content: str, retry_of: int | None = None
    ) -> asyncio.Queue:
        """Start a turn in its own task; its events arrive on the returned queue, then ``None``."""
        queue: asyncio.Queue = asyncio.Queue()

        async def work() -> None:
            try:
                async for event in self._run(thread, content, retry_of):
                    queue.put_nowait(event)
            except sa.exc.DBAPIError as exc:  # before the model was asked: nothing to lose
                log.warning("turn on thread %s: %s", thread["id"], store_failure(exc)[1]["detail"])
                queue.put_nowait(store_failure(exc))
            except Exception as exc:  # never leave a client waiting on a turn that crashed
                log.exception("turn on thread %s crashed", thread["id"])
                queue.put_nowait(failure(PLAIN[None], f"{type(exc).__name__}: {exc}"))
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(work())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return queue

    @staticmethod
    async def events(queue: asyncio.Queue) -> AsyncIterator[tuple[str, Any]]:
        while (event := await queue.get()) is not None:
            yield event

    async def drain(self, timeout_s: float) -> None:
        """At shutdown: let running turns finish (and store their answers) for up to
        ``timeout_s``."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout_s)

    def forget(self, thread_id: str) -> None:
        lock = self._local.get(thread_id)
        if lock is not None and not lock.locked():
            self._local.pop(thread_id, None)

    @contextlib.asynccontextmanager
    async def _lease(self, thread_id: str):
        name = f"thread:{thread_id}"
        async with self._local.setdefault(thread_id, asyncio.Lock()):
            wait = 0.02
            while not await asyncio.to_thread(
                self.store.acquire_lease, name, self.holder, self.lease_s
            ):
                await asyncio.sleep(wait)  # another process runs this thread's turn
                wait = min(0.25, wait * 1.5)
            renew = asyncio.create_task(self._renew(name))
            try:
                yield
            finally:
                renew.cancel()
                try:
                    await asyncio.to_thread(self.store.release_lease, name, self.holder)
                except sa.exc.DBAPIError as exc:  # the lease lapses by itself after lease_s
                    log.warning("lease %s not released (%s)", name, describe_database_error(exc)[0])

    async def _renew(self, name: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await asyncio.to_thread(self.store.renew_lease, name, self.holder, self.lease_s)
            except sa.exc.DBAPIError as exc:  # keep trying: the database may come back
                log.warning("lease %s not renewed (%s)", name, describe_database_error(exc)[0])

    async def _run(
        self, thread: dict[str, Any], content: str, retry_of: int | None
    ) -> AsyncIterator[tuple[str, Any]]:
        thread_id, store = thread["id"], self.store
        async with self._lease(thread_id):
            try:
                history, user = await self._begin(thread, content, retry_of)
            except _Ended as end:
                yield end.event
                return
            yield "user", user
            started = time.perf_counter()
            turn: Turn | None = None
            try:
                async for kind, data in self.service.turn(
                    thread["profile"], history, content, thread["demographics"]
                ):
                    if kind == "done":
                        turn = data
                    else:
                        yield kind, data
            except T0Error as exc:
                failed = exc if isinstance(exc, TurnFailed) else TurnFailed(None, str(exc))
                log.warning("turn failed on thread %s: %s", thread_id, failed.detail)
                await asyncio.to_thread(store.set_status, user["id"], "failed", failed.detail)
                yield failure(str(failed), failed.detail, user["id"])
                return
            assert turn is not None
            persisting = time.perf_counter()
            try:
                message = await asyncio.to_thread(self._store_answer, thread_id, turn, user["id"])
            except NotFound:
                yield failure(DELETED, f"thread {thread_id} was deleted during the turn")
                return
            # the database went away: the user message stays pending and reads as failed once
            # the lease lapses (Store.history), so the person can send it again
            except sa.exc.DBAPIError as exc:
                event = store_failure(exc, user["id"])
                log.warning("answer on thread %s not stored: %s", thread_id, event[1]["detail"])
                yield event
                return
            timings = {
                **turn.timings_ms,
                "persist": (time.perf_counter() - persisting) * 1000,
                "total": (time.perf_counter() - started) * 1000,
            }
            _log_turn(thread_id, turn, timings)
            yield "final", {**message, "timings_ms": timings}

    async def _begin(
        self, thread: dict[str, Any], content: str, retry_of: int | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(the history to send, the stored pending user message); :class:`_Ended` with the
        failure event when the retried message or the thread is gone."""
        thread_id, store = thread["id"], self.store
        # the failed message goes; the same text is sent again as a new turn
        if retry_of is not None:
            try:
                await asyncio.to_thread(store.take_failed, thread_id, retry_of)
            except NotFound:
                detail = f"message {retry_of} is not a failed user message of thread {thread_id}"
                raise _Ended(failure(NOT_RETRYABLE, detail)) from None
        stored = await asyncio.to_thread(store.history, thread_id)
        history = [m for m in stored if m["status"] == "ok"]  # failed messages are never resent
        title = content[:60] if thread["title"] == DEFAULT_TITLE and not history else None
        try:
            user = await asyncio.to_thread(
                store.add_message, thread_id, "user", content, title=title, status="pending"
            )
        except NotFound:
            detail = f"thread {thread_id} was deleted before the turn began"
            raise _Ended(failure(DELETED, detail)) from None
        return history, user

    def _store_answer(self, thread_id: str, turn: Turn, answers: int) -> dict[str, Any]:
        return self.store.add_message(
            thread_id,
            "assistant",
            turn.answer,
            thinking=turn.thinking,
            sources=turn.sources,
            search_query=turn.search_query,
            prompt_tokens=turn.prompt_tokens,
            completion_tokens=turn.completion_tokens,
            answers=answers,
        )


class _Ended(Exception):
    """A turn that ends before the model is asked, with the event that says why."""

    def __init__(self, event: tuple[str, Any]):
        self.event = event


def _log_turn(thread_id: str, turn: Turn, timings: dict[str, float]) -> None:
    log.info(
        "turn thread=%s search=%s tokens=%d+%d timings_ms=%s",
        thread_id,
        turn.search_query is not None,
        turn.prompt_tokens,
        turn.completion_tokens,
        {k: round(v, 1) for k, v in timings.items()},
    )
