"""Turns on stored threads: a message in, the reply as JSON or as server-sent events (search,
sources, thinking, answer, final, error). The turn runs on if the client goes (see
:mod:`t0_pipeline.serve.turns`)."""

from __future__ import annotations

import json
from typing import Any, Optional

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from t0_pipeline.serve.deps import ServeContext, check_length, context, owned, owner

router = APIRouter()


def not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("the message is empty; write what you would like to ask")
    return text


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str = Field(..., min_length=1)
    retry_of: Optional[int] = Field(
        None, description="id of a failed user message this one replaces (a retry)"
    )
    _blank = field_validator("content")(not_blank)


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


@router.post(
    "/api/threads/{thread_id}/messages", summary="Send a message; the reply comes back as JSON"
)
async def post_message(
    thread_id: str, body: MessageIn, key: str = Depends(owner), ctx: ServeContext = Depends(context)
):
    check_length(ctx, body.content)
    thread = await owned(ctx.store.get_thread, key, thread_id)
    out: dict[str, Any] = {}
    async for kind, data in ctx.turns.events(ctx.turns.start(thread, body.content, body.retry_of)):
        # the person's sentence in detail; what went wrong for the operator in technical
        if kind == "error":
            return JSONResponse(
                {
                    "detail": data["message"],
                    "technical": data["detail"],
                    "message_id": data["message_id"],
                },
                status_code=data.get("status", 502),
            )
        if kind in ("user", "final"):
            out[kind] = data
    return {"user_message": out["user"], "message": out["final"]}


@router.post(
    "/api/threads/{thread_id}/messages/stream",
    summary="Send a message; the reply streams as server-sent events",
)
async def stream_message(
    thread_id: str, body: MessageIn, key: str = Depends(owner), ctx: ServeContext = Depends(context)
):
    check_length(ctx, body.content)
    thread = await owned(ctx.store.get_thread, key, thread_id)
    # runs on if the client goes: the answer is stored
    queue = ctx.turns.start(thread, body.content, body.retry_of)

    async def events():
        async for kind, data in ctx.turns.events(queue):
            yield sse(kind, data if isinstance(data, (dict, list)) else {"text": data})

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
