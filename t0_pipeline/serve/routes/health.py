"""The health check: the index loaded and the model servers reachable (probed at most every
``serve.health_cache_s``); 503 while degraded."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from t0_pipeline.serve.deps import ServeContext, context

router = APIRouter()


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
