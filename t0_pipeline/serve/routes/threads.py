"""Threads and personal details: a key's own details, its threads (create, list, read, delete) and
each thread's details."""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from fastapi import APIRouter, Body, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from t0_pipeline.serve.deps import ServeContext, context, owned, owner
from t0_pipeline.serve.turns import DEFAULT_TITLE

router = APIRouter()
DETAILS = (
    "the person's details: the domain's profile fields (GET /api/config lists them; the NHS "
    "domain's: age, sex, occupation, social_support, medical_history), each optional"
)


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Optional[str] = Field(None, max_length=200)
    profile: Optional[str] = Field(
        None, max_length=100, description="serve profile (model id); default: the first"
    )
    demographics: Optional[dict[str, Any]] = Field(None, description=DETAILS)


@router.get(
    "/api/me/demographics", summary="This key's own personal details (new threads start from them)"
)
async def my_demographics(key: str = Depends(owner), ctx: ServeContext = Depends(context)):
    return await asyncio.to_thread(ctx.store.user_demographics, key)


@router.put("/api/me/demographics", summary="Set this key's own personal details")
async def set_my_demographics(
    body: dict[str, Any] = Body(..., description=DETAILS),
    key: str = Depends(owner),
    ctx: ServeContext = Depends(context),
):
    return await asyncio.to_thread(ctx.store.set_user_demographics, key, ctx.person_details(body))


@router.post(
    "/api/threads", status_code=201, summary="Create a thread (with the key's details unless given)"
)
async def create_thread(
    body: ThreadCreate, key: str = Depends(owner), ctx: ServeContext = Depends(context)
):
    profiles = ctx.serve.profiles
    profile = body.profile or next(iter(profiles))
    if profile not in profiles:
        raise HTTPException(422, f"unknown profile {profile!r}; available: {', '.join(profiles)}")
    if body.demographics is not None:
        demographics = ctx.person_details(body.demographics, ("body", "demographics"))
    else:
        demographics = await asyncio.to_thread(ctx.store.user_demographics, key)
    return await asyncio.to_thread(
        ctx.store.create_thread, key, body.title or DEFAULT_TITLE, profile, demographics
    )


@router.get("/api/threads", summary="List this key's threads, most recent first")
async def list_threads(key: str = Depends(owner), ctx: ServeContext = Depends(context)):
    return await asyncio.to_thread(ctx.store.list_threads, key)


@router.get("/api/threads/{thread_id}", summary="A thread and its messages")
async def get_thread(
    thread_id: str, key: str = Depends(owner), ctx: ServeContext = Depends(context)
):
    thread = await owned(ctx.store.get_thread, key, thread_id)
    return {**thread, "messages": await asyncio.to_thread(ctx.store.history, thread_id)}


@router.delete(
    "/api/threads/{thread_id}", status_code=204, summary="Delete a thread and its messages"
)
async def delete_thread(
    thread_id: str, key: str = Depends(owner), ctx: ServeContext = Depends(context)
):
    await owned(ctx.store.delete_thread, key, thread_id)
    ctx.turns.forget(thread_id)


@router.put(
    "/api/threads/{thread_id}/demographics", summary="Set the person's details for a thread"
)
async def set_demographics(
    thread_id: str,
    body: dict[str, Any] = Body(..., description=DETAILS),
    key: str = Depends(owner),
    ctx: ServeContext = Depends(context),
):
    return await owned(ctx.store.set_demographics, key, thread_id, ctx.person_details(body))
