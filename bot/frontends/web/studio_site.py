"""Puts the studio on the app: sign-in and sessions, the studio, My images, and their refusals."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles

from bot.frontends.web.mine import mine_router
from bot.frontends.web.signin import Refused, refused, signin_router
from bot.frontends.web.studio import studio_router
from bot.frontends.web.social import share_links
from bot.frontends.web.views import HERE, templates

__all__ = ["install_studio"]


def install_studio(app: FastAPI) -> None:
    """Add the studio's routes (and /static when the gallery did not already)."""
    templates.env.globals["share_links"] = share_links  # the shared image page's "share to" links
    app.include_router(signin_router)
    app.include_router(studio_router)
    app.include_router(mine_router)
    if not any(getattr(route, "name", None) == "static" for route in app.routes):
        app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(Refused)
    async def _refused(request: Request, err: Refused) -> Response:
        return refused(request, err)
