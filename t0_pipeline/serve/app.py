"""The HTTP service: a JSON API, server-sent-event streaming, an OpenAI-compatible endpoint and the
chat page.

Routes (the OpenAPI schema at ``/docs`` and ``/openapi.json`` documents them):
- ``GET /`` the chat page; ``GET /healthz`` index loaded and models reachable; ``GET /api/config``;
- ``/api/threads``: create, list; ``/api/threads/{id}``: history, delete; ``PUT
  /api/threads/{id}/demographics``; ``POST /api/threads/{id}/messages`` (JSON reply) and ``POST
  /api/threads/{id}/messages/stream`` (events: search, sources, thinking, answer, final, error);
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

The routes live in ``routes/`` (one router per concern) over the dependencies in ``deps``; this
module assembles them with the guards, the access log and the warm start.
"""

from __future__ import annotations

import asyncio
import logging
import time

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, PipelineConfig
from t0_pipeline.database import describe_database_error
from t0_pipeline.serve.agent import ChatService
from t0_pipeline.serve.deps import ServeContext
from t0_pipeline.serve.health import ModelProbe
from t0_pipeline.serve.routes import health, messages, openai_compat, page, threads
from t0_pipeline.serve.security import LOCAL_HOSTS, BodySizeLimit, HostCheck, SecurityHeaders
from t0_pipeline.serve.store import Store, default_url
from t0_pipeline.serve.turns import STORE_DOWN, TurnRunner

log = logging.getLogger("t0_pipeline.serve")


def create_app(
    cfg: PipelineConfig,
    paths: DataPaths,
    insecure_local: bool = False,
    service: ChatService | None = None,
    store: Store | None = None,
) -> FastAPI:
    serve = cfg.serve
    store = store or Store(serve.database_url or default_url(paths.conversations_db))
    service = service or ChatService(cfg, paths)
    turns = TurnRunner(store, service, serve.turn_lease_s)
    ctx = ServeContext(cfg, store, service, turns, ModelProbe(cfg), insecure_local)
    app = FastAPI(
        title="t0 conversational agent",
        version="1",
        lifespan=_lifespan(ctx),
        description="Retrieval-augmented reasoning over the indexed collection. Not medical "
        "advice.",
    )
    _add_guards(app, cfg, insecure_local)
    app.middleware("http")(_access_log)
    app.add_exception_handler(sa.exc.DBAPIError, _store_unreachable)
    app.mount("/static", StaticFiles(directory=str(page.STATIC)), name="static")
    routers = (page.router, health.router, threads.router, messages.router, openai_compat.router)
    for router in routers:
        app.include_router(router)
    app.state.ctx = ctx
    app.state.store, app.state.service, app.state.turns = store, service, turns
    app.state.probe = ctx.probe
    return app


def _lifespan(ctx: ServeContext):
    async def lifespan(app: FastAPI):
        try:  # warm start: the first turn should not wait for models, indexes or clients to load
            ctx.index["documents"] = await asyncio.to_thread(ctx.service.warm_up)
            ctx.index["loaded"] = True
            await ctx.service.rehearse_clients()
        except T0Error as exc:
            ctx.index["error"] = str(exc)
            log.error("index not loaded: %s", exc)
        await ctx.probe.warn_unreachable()
        yield
        # answers being written are stored before the process goes
        await ctx.turns.drain(timeout_s=30)
        ctx.store.close()

    return lifespan


def _add_guards(app: FastAPI, cfg: PipelineConfig, insecure_local: bool) -> None:
    """CORS (when origins are set), the body size limit, security headers and the Host check."""
    serve = cfg.serve
    if serve.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=serve.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodySizeLimit, max_bytes=serve.max_request_bytes)
    app.add_middleware(SecurityHeaders)
    hosts = [*serve.allowed_hosts, *(LOCAL_HOSTS if insecure_local else ())]
    app.add_middleware(HostCheck, allowed=hosts)


async def _access_log(request: Request, call_next):
    started = time.perf_counter()
    response = await call_next(request)
    elapsed_ms = (time.perf_counter() - started) * 1000
    log.info("%s %s %d %.1f ms", request.method, request.url.path, response.status_code, elapsed_ms)
    return response


async def _store_unreachable(request: Request, exc: Exception) -> JSONResponse:
    """A request the conversation database could not serve (stopped, restarting, refusing): 503
    in plain words, the cause in the log, instead of a 500 and a traceback."""
    meaning, _ = describe_database_error(exc)
    log.warning("%s %s: conversation database: %s", request.method, request.url.path, meaning)
    return JSONResponse(
        {"detail": STORE_DOWN, "technical": f"conversation database: {meaning}"},
        status_code=503,
        headers={"Retry-After": "30"},
    )
