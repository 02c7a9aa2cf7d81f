"""What every route shares: the service's parts (:class:`ServeContext`, on ``app.state.ctx``) and
the dependencies that routes declare: the context, the calling key (authentication and rate limits),
a key's own thread, and the message length check."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import Any, Optional

from fastapi import Depends, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from t0_pipeline.config import PipelineConfig, ServeConfig
from t0_pipeline.serve.agent import ChatService
from t0_pipeline.serve.health import ModelProbe
from t0_pipeline.serve.store import NotFound, Store
from t0_pipeline.serve.turns import TurnRunner

LOCAL_OWNER = "local"  # the one user of --insecure-local


@dataclass
class ServeContext:
    cfg: PipelineConfig
    store: Store
    service: ChatService
    turns: TurnRunner
    probe: ModelProbe
    insecure_local: bool = False
    index: dict[str, Any] = field(
        default_factory=lambda: {"loaded": False, "error": None, "documents": 0}
    )

    @property
    def serve(self) -> ServeConfig:
        return self.cfg.serve

    @functools.cached_property
    def profile_model(self):
        """What a person may say about themselves here: the domain's profile fields."""
        from t0_pipeline.task.demographics import user_profile_model

        return user_profile_model(self.cfg.domain_spec)

    def person_details(self, data: Any, where: tuple = ("body",)) -> dict[str, Any]:
        """``data`` checked against the domain's profile: the fields given, or the same 422 as a
        typed body's (each error located under ``where``)."""
        try:
            details = self.profile_model.model_validate(data if data is not None else {})
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": (*where, *e["loc"])} for e in exc.errors()]
            ) from None
        return details.model_dump(exclude_none=True)


def context(request: Request) -> ServeContext:
    return request.app.state.ctx


async def limited(ctx: ServeContext, bucket: str, per_minute: int, burst: int, what: str) -> None:
    """429 with Retry-After when ``bucket`` (kept in the database, shared by every process) is
    empty."""
    wait = (
        await asyncio.to_thread(ctx.store.take_token, bucket, per_minute, burst)
        if per_minute > 0
        else 0.0
    )
    if wait:
        raise HTTPException(
            429, f"{what}; retry in {wait:.1f} s", headers={"Retry-After": str(max(1, round(wait)))}
        )


async def owner(
    request: Request,
    authorization: Optional[str] = Header(None),
    ctx: ServeContext = Depends(context),
) -> str:
    """The calling key (its owner id), within its rate; wrong keys are limited per client
    address."""
    serve = ctx.serve
    if ctx.insecure_local:
        key = LOCAL_OWNER
    else:
        token = (
            authorization[7:].strip()
            if authorization and authorization[:7].lower() == "bearer "
            else None
        )
        key = await asyncio.to_thread(ctx.store.key_owner, token) if token else None
        if key is None:
            address = request.client.host if request.client else "unknown"
            per = serve.auth_failures_per_minute
            await limited(
                ctx,
                f"auth-failures:{address}",
                per,
                per,
                "too many requests with a wrong or missing API key from this address",
            )
            raise HTTPException(
                401,
                "missing or unknown API key: create one with `t0 keys create NAME` and send "
                "it as 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
    await limited(
        ctx,
        f"key:{key}",
        serve.rate_limit_per_minute,
        serve.rate_limit_burst,
        f"rate limit of {serve.rate_limit_per_minute} requests per minute reached",
    )
    return key


async def owned(method, owner_id: str, thread_id: str, *args) -> Any:
    """A store call on one key's thread, in a worker thread; another key's thread is a 404 like a
    missing one."""
    try:
        return await asyncio.to_thread(method, owner_id, thread_id, *args)
    except NotFound:
        raise HTTPException(404, f"no thread {thread_id} for this key") from None


def check_length(ctx: ServeContext, text: str) -> None:
    limit = ctx.serve.max_message_chars
    if len(text) > limit:
        raise HTTPException(422, f"message is {len(text)} characters; the limit is {limit}")
