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
``insecure_local``; a key sees only its own threads. Bodies over ``serve.max_request_bytes``
get 413, messages over ``serve.max_message_chars`` 422, keys over their rate 429. One
thread's turns run one at a time; different threads run concurrently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any, Optional

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, PipelineConfig
from t0_pipeline.llm import split_thinking
from t0_pipeline.serve.agent import ChatService, Turn
from t0_pipeline.serve.security import BodySizeLimit, RateLimiter
from t0_pipeline.serve.store import NotFound, Store, default_url

log = logging.getLogger("t0_pipeline.serve")
LOCAL_OWNER = "local"
DEFAULT_TITLE = "New conversation"


class Demographics(BaseModel):
    model_config = ConfigDict(extra="forbid")
    age: Optional[int] = Field(None, ge=0, le=130)
    sex: Optional[str] = Field(None, max_length=40)
    occupation: Optional[str] = Field(None, max_length=200)
    social_support: Optional[str] = Field(None, max_length=500)
    medical_history: Optional[str] = Field(None, max_length=2000)


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Optional[str] = Field(None, max_length=200)
    profile: Optional[str] = Field(None, max_length=100, description="serve profile (model id); default: the first")
    demographics: Optional[Demographics] = None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str = Field(..., min_length=1)


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
    limiter = RateLimiter(serve.rate_limit_per_minute, serve.rate_limit_burst)
    locks: dict[str, asyncio.Lock] = {}
    index_state: dict[str, Any] = {"loaded": False, "error": None, "documents": 0}

    async def lifespan(app: FastAPI):
        def load() -> None:
            for profile in cfg.serve.profiles.values():
                retriever = service.retriever(profile)
                retriever.search("warm up", 1, profile.mode)  # loads the embedder, the collection and BM25
                index_state["documents"] = len(retriever.docs)
        try:
            await asyncio.to_thread(load)
            index_state["loaded"] = True
        except T0Error as exc:
            index_state["error"] = str(exc)
            log.error("index not loaded: %s", exc)
        yield
        store.close()

    app = FastAPI(title="t0 conversational agent", version="1", lifespan=lifespan,
                  description="Retrieval-augmented reasoning over the indexed collection. Not medical advice.")
    if serve.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=serve.cors_origins, allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodySizeLimit, max_bytes=serve.max_request_bytes)

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        log.info("%s %s %d %.1f ms", request.method, request.url.path, response.status_code,
                 (time.perf_counter() - started) * 1000)
        return response

    # --- auth ----------------------------------------------------------------------------
    async def owner(authorization: Optional[str] = Header(None)) -> str:
        if insecure_local:
            key = LOCAL_OWNER
        else:
            token = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else None
            key = await asyncio.to_thread(store.key_owner, token) if token else None
            if key is None:
                raise HTTPException(401, "missing or unknown API key: create one with `t0 keys create NAME` and send "
                                         "it as 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"})
        wait = limiter.allow(key)
        if wait:
            raise HTTPException(429, f"rate limit of {serve.rate_limit_per_minute} requests per minute reached; "
                                     f"retry in {wait:.1f} s", headers={"Retry-After": str(max(1, round(wait)))})
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

    @app.get("/healthz", summary="Index loaded and models reachable")
    async def healthz():
        import httpx

        models: dict[str, Any] = {}
        async with httpx.AsyncClient(timeout=2.0) as client:
            for role in sorted({r for p in serve.profiles.values() for r in (p.agent, p.reasoner)}):
                settings = cfg.llm.roles[role]
                entry: dict[str, Any] = {"model": settings.model}  # endpoints stay private: no auth here
                if settings.api_base:
                    try:
                        entry["reachable"] = (await client.get(settings.api_base.rstrip("/") + "/models")).status_code < 500
                    except httpx.HTTPError as exc:
                        entry["reachable"], entry["error"] = False, exc.__class__.__name__
                else:
                    entry["reachable"] = None  # a hosted provider: not probed
                models[role] = entry
        ok = index_state["loaded"] and all(m["reachable"] is not False for m in models.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "index": index_state, "models": models},
                            status_code=200 if ok else 503)

    # --- threads -------------------------------------------------------------------------
    @app.post("/api/threads", status_code=201, summary="Create a thread")
    async def create_thread(body: ThreadCreate, key: str = Depends(owner)):
        profile = body.profile or next(iter(serve.profiles))
        if profile not in serve.profiles:
            raise HTTPException(422, f"unknown profile {profile!r}; available: {', '.join(serve.profiles)}")
        demographics = body.demographics.model_dump(exclude_none=True) if body.demographics else {}
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
        locks.pop(thread_id, None)

    @app.put("/api/threads/{thread_id}/demographics", summary="Set the person's details for a thread")
    async def set_demographics(thread_id: str, body: Demographics, key: str = Depends(owner)):
        return await owned(store.set_demographics, key, thread_id, body.model_dump(exclude_none=True))

    # --- turns ---------------------------------------------------------------------------
    async def run_turn(thread: dict[str, Any], content: str) -> AsyncIterator[tuple[str, Any]]:
        """One turn on a stored thread: the user message is stored first, the answer when complete."""
        thread_id = thread["id"]
        lock = locks.setdefault(thread_id, asyncio.Lock())
        async with lock:  # turns of one thread never interleave
            history = await asyncio.to_thread(store.history, thread_id)
            title = content[:60] if thread["title"] == DEFAULT_TITLE and not history else None
            user = await asyncio.to_thread(store.add_message, thread_id, "user", content, title=title)
            yield "user", user
            started = time.perf_counter()
            turn: Turn | None = None
            try:
                async for kind, data in service.turn(thread["profile"], history, content, thread["demographics"]):
                    if kind == "done":
                        turn = data
                    else:
                        yield kind, data
            except T0Error as exc:
                log.warning("turn failed on thread %s: %s", thread_id, exc)
                yield "error", {"detail": str(exc)}
                return
            assert turn is not None
            t0 = time.perf_counter()
            message = await asyncio.to_thread(
                store.add_message, thread_id, "assistant", turn.answer, thinking=turn.thinking, sources=turn.sources,
                search_query=turn.search_query, prompt_tokens=turn.prompt_tokens, completion_tokens=turn.completion_tokens)
            timings = {**turn.timings_ms, "persist": (time.perf_counter() - t0) * 1000,
                       "total": (time.perf_counter() - started) * 1000}
            log.info("turn thread=%s search=%s tokens=%d+%d timings_ms=%s", thread_id, turn.search_query is not None,
                     turn.prompt_tokens, turn.completion_tokens, {k: round(v, 1) for k, v in timings.items()})
            yield "final", {**message, "timings_ms": timings}

    @app.post("/api/threads/{thread_id}/messages", summary="Send a message; the reply comes back as JSON")
    async def post_message(thread_id: str, body: MessageIn, key: str = Depends(owner)):
        check_length(body.content)
        thread = await thread_of(key, thread_id)
        out: dict[str, Any] = {}
        async for kind, data in run_turn(thread, body.content):
            if kind == "error":
                raise HTTPException(502, data["detail"])
            if kind in ("user", "final"):
                out[kind] = data
        return {"user_message": out["user"], "message": out["final"]}

    @app.post("/api/threads/{thread_id}/messages/stream", summary="Send a message; the reply streams as server-sent events")
    async def stream_message(thread_id: str, body: MessageIn, key: str = Depends(owner)):
        check_length(body.content)
        thread = await thread_of(key, thread_id)

        async def events():
            async for kind, data in run_turn(thread, body.content):
                yield sse(kind, data if isinstance(data, (dict, list)) else {"text": data})

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # --- OpenAI-compatible ---------------------------------------------------------------
    def openai_error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)

    @app.get("/v1/models", summary="Serve profiles, as OpenAI models")
    async def models(key: str = Depends(owner)):
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "t0"} for name in serve.profiles]}

    @app.post("/v1/chat/completions", summary="OpenAI-compatible chat (the client holds the history)")
    async def chat_completions(body: ChatCompletionRequest, key: str = Depends(owner)):
        if body.model not in serve.profiles:
            return openai_error(404, f"unknown model {body.model!r}; available: {', '.join(serve.profiles)}")
        turns = [m for m in body.messages if m.role in ("user", "assistant")]
        if not turns or turns[-1].role != "user" or not isinstance(turns[-1].content, str):
            return openai_error(400, "the last message must be a user message with text content")
        text = turns[-1].content
        if len(text) > serve.max_message_chars:
            return openai_error(422, f"message is {len(text)} characters; the limit is {serve.max_message_chars}")
        history = [{"role": m.role, "content": split_thinking(str(m.content or ""))[1] if m.role == "assistant"
                    else str(m.content or "")} for m in turns[:-1]]
        demographics = body.demographics.model_dump(exclude_none=True) if body.demographics else {}
        base = {"id": "chatcmpl-" + uuid.uuid4().hex[:16], "created": int(time.time()), "model": body.model}

        if not body.stream:
            turn: Turn | None = None
            try:
                async for kind, data in service.turn(body.model, history, text, demographics):
                    if kind == "done":
                        turn = data
            except T0Error as exc:
                return openai_error(502, str(exc))
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
                yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    app.state.store, app.state.service = store, service
    return app
