"""The HTTP service: a JSON API, server-sent-event streaming, an OpenAI-compatible endpoint and the chat page.

Routes (the OpenAPI schema at ``/docs`` and ``/openapi.json`` documents them):
- ``GET /`` the chat page; ``GET /healthz`` index loaded and models reachable; ``GET /api/config``;
- ``/api/threads``: create, list; ``/api/threads/{id}``: history, delete;
  ``PUT /api/threads/{id}/demographics``; ``POST /api/threads/{id}/messages`` (JSON reply) and
  ``POST /api/threads/{id}/messages/stream`` (events: search, sources, thinking, answer, final, error);
- ``POST /v1/chat/completions`` (streaming or not) and ``GET /v1/models``: the model id names a
  serve profile, the client sends the history (nothing is stored).

Every request except the page, its assets, ``/healthz`` and ``/api/config`` needs an API key
(``Authorization: Bearer …``, created with ``t0 keys create``) unless the app runs with
``insecure_local``; a key sees only its own threads, and has its own personal details
(``/api/me/demographics``) that new threads start from. Bodies over ``serve.max_request_bytes``
get 413, empty messages or ones over ``serve.max_message_chars`` 422, keys over their rate and
addresses sending wrong keys too often 429 (both limits kept in the database, shared by every
process on it). One thread's turns run one at a time across processes (see ``turns``); a failed
turn's message is marked failed and can be retried (``retry_of``). Requests for another Host
than the service's names get 421; every response carries a CSP, frame denial, nosniff and a
referrer policy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from importlib import resources
from typing import Any, Optional

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, PipelineConfig
from t0_pipeline.demographics import Demographics
from t0_pipeline.llm import split_thinking
from t0_pipeline.serve.agent import ChatService, Turn, TurnFailed
from t0_pipeline.serve.health import ModelProbe
from t0_pipeline.serve.security import LOCAL_HOSTS, BodySizeLimit, HostCheck, SecurityHeaders
from t0_pipeline.serve.store import NotFound, Store, default_url
from t0_pipeline.serve.turns import DEFAULT_TITLE, TurnRunner

log = logging.getLogger("t0_pipeline.serve")
LOCAL_OWNER = "local"


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Optional[str] = Field(None, max_length=200)
    profile: Optional[str] = Field(None, max_length=100, description="serve profile (model id); default: the first")
    demographics: Optional[Demographics] = None


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("the message is empty; write what you would like to ask")
    return text


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str = Field(..., min_length=1)
    retry_of: Optional[int] = Field(None, description="id of a failed user message this one replaces (a retry)")
    _blank = field_validator("content")(_not_blank)


class ChatMessage(BaseModel):
    role: str
    content: Optional[Any] = None


class ChatCompletionRequest(BaseModel):
    model: str
    messages: list[ChatMessage]
    stream: bool = False
    demographics: Optional[Demographics] = None  # an extension: the person's details for the reasoner


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def create_app(cfg: PipelineConfig, paths: DataPaths, insecure_local: bool = False, service: ChatService | None = None,
               store: Store | None = None) -> FastAPI:
    serve = cfg.serve
    store = store or Store(serve.database_url or default_url(paths.conversations_db))
    service = service or ChatService(cfg, paths)
    turns = TurnRunner(store, service, serve.turn_lease_s)
    probe = ModelProbe(cfg)
    index_state: dict[str, Any] = {"loaded": False, "error": None, "documents": 0}

    async def lifespan(app: FastAPI):
        try:  # warm start: the first turn should not wait for models, indexes or clients to load
            index_state["documents"] = await asyncio.to_thread(service.warm_up)
            index_state["loaded"] = True
            await service.rehearse_clients()
        except T0Error as exc:
            index_state["error"] = str(exc)
            log.error("index not loaded: %s", exc)
        await probe.warn_unreachable()
        yield
        await turns.drain(timeout_s=30)  # answers being written are stored before the process goes
        store.close()

    app = FastAPI(title="t0 conversational agent", version="1", lifespan=lifespan,
                  description="Retrieval-augmented reasoning over the indexed collection. Not medical advice.")
    if serve.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=serve.cors_origins, allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodySizeLimit, max_bytes=serve.max_request_bytes)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HostCheck, allowed=[*serve.allowed_hosts, *(LOCAL_HOSTS if insecure_local else ())])

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        log.info("%s %s %d %.1f ms", request.method, request.url.path, response.status_code,
                 (time.perf_counter() - started) * 1000)
        return response

    # --- auth ----------------------------------------------------------------------------
    async def limited(bucket: str, per_minute: int, burst: int, what: str) -> None:
        wait = await asyncio.to_thread(store.take_token, bucket, per_minute, burst) if per_minute > 0 else 0.0
        if wait:
            raise HTTPException(429, f"{what}; retry in {wait:.1f} s", headers={"Retry-After": str(max(1, round(wait)))})

    async def owner(request: Request, authorization: Optional[str] = Header(None)) -> str:
        if insecure_local:
            key = LOCAL_OWNER
        else:
            token = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else None
            key = await asyncio.to_thread(store.key_owner, token) if token else None
            if key is None:
                address = request.client.host if request.client else "unknown"
                per = serve.auth_failures_per_minute
                await limited(f"auth-failures:{address}", per, per, "too many requests with a wrong or missing API key "
                                                                     "from this address")
                raise HTTPException(401, "missing or unknown API key: create one with `t0 keys create NAME` and send "
                                         "it as 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"})
        await limited(f"key:{key}", serve.rate_limit_per_minute, serve.rate_limit_burst,
                      f"rate limit of {serve.rate_limit_per_minute} requests per minute reached")
        return key

    async def owned(method, owner_id: str, thread_id: str, *args) -> Any:
        """A store call on one key's thread, in a worker thread; another key's thread is a 404 like a missing one."""
        try:
            return await asyncio.to_thread(method, owner_id, thread_id, *args)
        except NotFound:
            raise HTTPException(404, f"no thread {thread_id} for this key") from None

    async def thread_of(owner_id: str, thread_id: str) -> dict[str, Any]:
        return await owned(store.get_thread, owner_id, thread_id)

    def check_length(text: str) -> None:
        if len(text) > serve.max_message_chars:
            raise HTTPException(422, f"message is {len(text)} characters; the limit is {serve.max_message_chars}")

    # --- the page ------------------------------------------------------------------------
    static = resources.files("t0_pipeline.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(static / "index.html"))

    @app.get("/api/config", summary="What the chat page needs to know")
    async def page_config():
        return {"auth_required": not insecure_local, "profiles": list(serve.profiles),
                "max_message_chars": serve.max_message_chars}

    @app.get("/healthz", summary="Index loaded and models reachable (model servers probed at most every "
                                 "serve.health_cache_s)")
    async def healthz():
        models = await probe.status()
        ok = index_state["loaded"] and all(m["reachable"] is not False for m in models.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "index": index_state, "models": models},
                            status_code=200 if ok else 503)

    # --- threads -------------------------------------------------------------------------
    @app.get("/api/me/demographics", summary="This key's own personal details (new threads start from them)")
    async def my_demographics(key: str = Depends(owner)):
        return await asyncio.to_thread(store.user_demographics, key)

    @app.put("/api/me/demographics", summary="Set this key's own personal details")
    async def set_my_demographics(body: Demographics, key: str = Depends(owner)):
        return await asyncio.to_thread(store.set_user_demographics, key, body.model_dump(exclude_none=True))

    @app.post("/api/threads", status_code=201, summary="Create a thread (with the key's details unless given)")
    async def create_thread(body: ThreadCreate, key: str = Depends(owner)):
        profile = body.profile or next(iter(serve.profiles))
        if profile not in serve.profiles:
            raise HTTPException(422, f"unknown profile {profile!r}; available: {', '.join(serve.profiles)}")
        demographics = body.demographics.model_dump(exclude_none=True) if body.demographics is not None else \
            await asyncio.to_thread(store.user_demographics, key)
        return await asyncio.to_thread(store.create_thread, key, body.title or DEFAULT_TITLE, profile, demographics)

    @app.get("/api/threads", summary="List this key's threads, most recent first")
    async def list_threads(key: str = Depends(owner)):
        return await asyncio.to_thread(store.list_threads, key)

    @app.get("/api/threads/{thread_id}", summary="A thread and its messages")
    async def get_thread(thread_id: str, key: str = Depends(owner)):
        thread = await thread_of(key, thread_id)
        return {**thread, "messages": await asyncio.to_thread(store.history, thread_id)}

    @app.delete("/api/threads/{thread_id}", status_code=204, summary="Delete a thread and its messages")
    async def delete_thread(thread_id: str, key: str = Depends(owner)):
        await owned(store.delete_thread, key, thread_id)
        turns.forget(thread_id)

    @app.put("/api/threads/{thread_id}/demographics", summary="Set the person's details for a thread")
    async def set_demographics(thread_id: str, body: Demographics, key: str = Depends(owner)):
        return await owned(store.set_demographics, key, thread_id, body.model_dump(exclude_none=True))

    # --- turns ---------------------------------------------------------------------------
    @app.post("/api/threads/{thread_id}/messages", summary="Send a message; the reply comes back as JSON")
    async def post_message(thread_id: str, body: MessageIn, key: str = Depends(owner)):
        check_length(body.content)
        thread = await thread_of(key, thread_id)
        out: dict[str, Any] = {}
        async for kind, data in turns.events(turns.start(thread, body.content, body.retry_of)):
            if kind == "error":  # the person's sentence in detail; what went wrong for the operator in technical
                return JSONResponse({"detail": data["message"], "technical": data["detail"],
                                     "message_id": data["message_id"]}, status_code=502)
            if kind in ("user", "final"):
                out[kind] = data
        return {"user_message": out["user"], "message": out["final"]}

    @app.post("/api/threads/{thread_id}/messages/stream", summary="Send a message; the reply streams as server-sent events")
    async def stream_message(thread_id: str, body: MessageIn, key: str = Depends(owner)):
        check_length(body.content)
        thread = await thread_of(key, thread_id)
        queue = turns.start(thread, body.content, body.retry_of)  # runs on if the client goes: the answer is stored

        async def events():
            async for kind, data in turns.events(queue):
                yield sse(kind, data if isinstance(data, (dict, list)) else {"text": data})

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # --- OpenAI-compatible ---------------------------------------------------------------
    def explained(exc: T0Error) -> str:
        return f"{exc} ({exc.detail})" if isinstance(exc, TurnFailed) else str(exc)

    def openai_error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)

    @app.get("/v1/models", summary="Serve profiles, as OpenAI models")
    async def models(key: str = Depends(owner)):
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "t0"} for name in serve.profiles]}

    @app.post("/v1/chat/completions", summary="OpenAI-compatible chat (the client holds the history)")
    async def chat_completions(body: ChatCompletionRequest, key: str = Depends(owner)):
        if body.model not in serve.profiles:
            return openai_error(404, f"unknown model {body.model!r}; available: {', '.join(serve.profiles)}")
        said = [m for m in body.messages if m.role in ("user", "assistant")]
        if not said or said[-1].role != "user" or not isinstance(said[-1].content, str):
            return openai_error(400, "the last message must be a user message with text content")
        text = said[-1].content
        if not text.strip():
            return openai_error(422, "the last user message is empty")
        if len(text) > serve.max_message_chars:
            return openai_error(422, f"message is {len(text)} characters; the limit is {serve.max_message_chars}")
        history = [{"role": m.role, "content": split_thinking(str(m.content or ""))[1] if m.role == "assistant"
                    else str(m.content or "")} for m in said[:-1]]
        demographics = body.demographics.model_dump(exclude_none=True) if body.demographics else {}
        base = {"id": "chatcmpl-" + uuid.uuid4().hex[:16], "created": int(time.time()), "model": body.model}

        if not body.stream:
            turn: Turn | None = None
            try:
                async for kind, data in service.turn(body.model, history, text, demographics):
                    if kind == "done":
                        turn = data
            except T0Error as exc:
                return openai_error(502, explained(exc))
            assert turn is not None
            return {**base, "object": "chat.completion", "sources": turn.sources,
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": turn.answer, "reasoning_content": turn.thinking or None}}],
                    "usage": {"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens,
                              "total_tokens": turn.prompt_tokens + turn.completion_tokens}}

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra) -> bytes:
            payload = {**base, "object": "chat.completion.chunk", **extra,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

        async def stream():
            yield chunk({"role": "assistant", "content": ""})
            try:
                async for kind, data in service.turn(body.model, history, text, demographics):
                    if kind == "thinking":
                        yield chunk({"reasoning_content": data})
                    elif kind == "answer":
                        yield chunk({"content": data})
                    elif kind == "done":
                        yield chunk({}, "stop", sources=data.sources)
            except T0Error as exc:
                yield f"data: {json.dumps({'error': {'message': explained(exc), 'type': 'server_error'}})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    app.state.store, app.state.service, app.state.turns, app.state.probe = store, service, turns, probe
    return app
