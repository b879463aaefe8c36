"""Taking images out of the gallery: their owner, or one of the bot's admins (by API key)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from bot.frontends.web.access import Caller, caller

__all__ = ["moderation_router"]

moderation_router = APIRouter(prefix="/v1", tags=["images"])


@moderation_router.delete("/images/{ref}/share")
async def unshare_image(ref: str, request: Request, auth: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
    """Take an image out of the public gallery (its owner or an admin)."""
    was_shared = await request.app.state.service.unshare(auth.who, ref)
    return {"image": ref, "shared": False, "was_shared": was_shared}
