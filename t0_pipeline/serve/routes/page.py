"""The chat page and its assets, and what the page needs to know."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

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
        # the page's own words, the domain's (title, the bold warning and notice under it, the
        # message box's placeholder)
        # the person's details the page may ask for: the domain's profile fields
        "profile": [
            {"name": f.name, "range": f.range, "choices": f.choices}
            for f in ctx.cfg.domain_spec.profile
        ],
        "page": {
            key[len("page_") :]: value
            for key, value in ctx.cfg.domain_spec.words().items()
            if key.startswith("page_")
        },
    }
