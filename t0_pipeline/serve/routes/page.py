"""The chat page and its assets, what the page needs to know, and the health check."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, JSONResponse

from t0_pipeline.serve.deps import ServeContext, context

STATIC = resources.files("t0_pipeline.serve") / "static"
router = APIRouter()


@router.get("/", include_in_schema=False)
async def page():
    return FileResponse(str(STATIC / "index.html"))


@router.get("/api/config", summary="What the chat page needs to know")
async def page_config(ctx: ServeContext = Depends(context)):
    return {
        "auth_required": not ctx.insecure_local,
        "profiles": list(ctx.serve.profiles),
        "max_message_chars": ctx.serve.max_message_chars,
    }


@router.get(
    "/healthz",
    summary="Index loaded and models reachable (model servers probed at most every "
    "serve.health_cache_s)",
)
async def healthz(ctx: ServeContext = Depends(context)):
    models = await ctx.probe.status()
    ok = ctx.index["loaded"] and all(m["reachable"] is not False for m in models.values())
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "index": ctx.index, "models": models},
        status_code=200 if ok else 503,
    )
