"""An OpenAI-compatible endpoint: ``GET /v1/models`` (the serve profiles) and ``POST
/v1/chat/completions``, streaming or not. The client holds the history; nothing is stored. The
thinking comes back as ``reasoning_content`` and the retrieved documents as ``sources`` (an
extension, as is ``demographics``)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal, Optional

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, StrictBool

from t0_pipeline.artifacts import T0Error
from t0_pipeline.llm.thinking import split_thinking
from t0_pipeline.serve.agent import Turn, TurnFailed
from t0_pipeline.serve.deps import ServeContext, context, owner

router = APIRouter()


class ChatMessage(BaseModel):
    # OpenAI's roles; system and developer turns are read by nobody here (the service has its own)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Any] = None


class ChatCompletionRequest(BaseModel):
    model: str
    messages: list[ChatMessage]
    stream: StrictBool = False  # "yes" is not true
    # an extension: the person's details for the reasoner
    demographics: Optional[dict[str, Any]] = None


def explained(exc: T0Error) -> str:
    return f"{exc} ({exc.detail})" if isinstance(exc, TurnFailed) else str(exc)


def openai_error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error"}}, status_code=status
    )


def conversation(
    body: ChatCompletionRequest, ctx: ServeContext
) -> tuple[list[dict[str, str]], str] | JSONResponse:
    """(history, the new user text) from the request, or the error reply saying what is wrong with
    it."""
    profiles, limit = ctx.serve.profiles, ctx.serve.max_message_chars
    if body.model not in profiles:
        return openai_error(404, f"unknown model {body.model!r}; available: {', '.join(profiles)}")
    said = [m for m in body.messages if m.role in ("user", "assistant")]
    if not said or said[-1].role != "user" or not isinstance(said[-1].content, str):
        return openai_error(400, "the last message must be a user message with text content")
    text = said[-1].content
    if not text.strip():
        return openai_error(422, "the last user message is empty")
    if len(text) > limit:
        return openai_error(422, f"message is {len(text)} characters; the limit is {limit}")
    history = [
        {
            "role": m.role,
            "content": split_thinking(str(m.content or ""))[1]
            if m.role == "assistant"
            else str(m.content or ""),
        }
        for m in said[:-1]
    ]
    return history, text


@router.get("/v1/models", summary="Serve profiles, as OpenAI models")
async def models(key: str = Depends(owner), ctx: ServeContext = Depends(context)):
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "owned_by": "t0"} for name in ctx.serve.profiles],
    }


@router.post(
    "/v1/chat/completions", summary="OpenAI-compatible chat (the client holds the history)"
)
async def chat_completions(
    body: ChatCompletionRequest, key: str = Depends(owner), ctx: ServeContext = Depends(context)
):
    parsed = conversation(body, ctx)
    if isinstance(parsed, JSONResponse):
        return parsed
    history, text = parsed
    demographics = ctx.person_details(body.demographics, ("body", "demographics"))
    base = {
        "id": "chatcmpl-" + uuid.uuid4().hex[:16],
        "created": int(time.time()),
        "model": body.model,
    }
    turn = ctx.service.turn(body.model, history, text, demographics)
    if body.stream:
        return StreamingResponse(
            stream(turn, base),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    return await complete(turn, base)


async def complete(events, base: dict[str, Any]):
    """The whole reply as one chat.completion object."""
    turn: Turn | None = None
    try:
        async for kind, data in events:
            if kind == "done":
                turn = data
    except T0Error as exc:
        return openai_error(502, explained(exc))
    assert turn is not None
    return {
        **base,
        "object": "chat.completion",
        "sources": turn.sources,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": turn.answer,
                    "reasoning_content": turn.thinking or None,
                },
            }
        ],
        "usage": {
            "prompt_tokens": turn.prompt_tokens,
            "completion_tokens": turn.completion_tokens,
            "total_tokens": turn.prompt_tokens + turn.completion_tokens,
        },
    }


async def stream(events, base: dict[str, Any]):
    """chat.completion.chunk events: the role, thinking and answer deltas, the stop with the
    sources, [DONE]."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra) -> bytes:
        payload = {
            **base,
            "object": "chat.completion.chunk",
            **extra,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for kind, data in events:
            if kind == "thinking":
                yield chunk({"reasoning_content": data})
            elif kind == "answer":
                yield chunk({"content": data})
            elif kind == "done":
                yield chunk({}, "stop", sources=data.sources)
    except T0Error as exc:
        error = {"error": {"message": explained(exc), "type": "server_error"}}
        yield f"data: {json.dumps(error)}\n\n".encode()
    yield b"data: [DONE]\n\n"
