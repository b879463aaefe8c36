"""The web front end: a FastAPI app (API, gallery, health, metrics) served by uvicorn in the bot's loop.

A thin adapter like the chat front ends: every route is one service call. For an HTTP client
"delivered" means "ready to fetch": a followed job is marked delivered when its images are stored.
``uvicorn.Server.serve()`` runs as a task of the bot's own event loop (no thread, no second loop);
the bot keeps its signal handling (:meth:`_Server.capture_signals` does nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from bot.frontends.web.a1111_api import a1111_router
from bot.frontends.web.a1111_extras import extras
from bot.frontends.web.a1111_probes import probes
from bot.frontends.web.access import AuthThrottle, RateLimiter, error_response
from bot.frontends.web.edits import router as edits_router
from bot.frontends.web.commands import router, with_body_schemas
from bot.frontends.web.moderation import moderation_router
from bot.frontends.web.openai_api import openai_router
from bot.frontends.web.ops import ops_router
from bot.frontends.web.settings import WebSettings
from bot.frontends.web.studio_site import install_studio
from bot.frontends.web.views import HERE, error_page, gallery_router, is_page
from bot.service import Cancelled, Failed, Finished, ImagineService, Recovered, Ticket
from generation.core.errors import ImagineError

__all__ = ["WebFrontEnd", "create_app"]

logger = logging.getLogger(__name__)


def create_app(service: ImagineService, settings: WebSettings, front: WebFrontEnd | None = None) -> FastAPI:
    """The ASGI app over ``service`` (tests drive it with httpx; ``WebFrontEnd`` serves it)."""
    app = FastAPI(title="imagine-bot", version="1", docs_url="/docs", redoc_url=None,
                  description="Make, watch, fetch, rate and share images. "
                              "Send your API key as `Authorization: Bearer ib_…`.")
    app.state.service = service
    app.state.settings = settings
    app.state.limiter = RateLimiter(settings.rate_limit)
    app.state.auth_throttle = AuthThrottle(settings.auth_failures_free)
    app.state.gallery_limiter = RateLimiter(settings.gallery_rate_limit)  # per client address
    app.state.front = front or WebFrontEnd(service, settings, app=app)
    app.state.compat_waiting = {}  # who.key -> the Ticket an OpenAI/A1111 call waits on (for progress)
    app.include_router(router)
    app.include_router(edits_router)  # /v1/images/{ref}/edit, /v1/describe
    with_body_schemas(app)  # POST /v1/images reads JSON or multipart itself
    for compatible in (openai_router, a1111_router, probes, extras):  # docs/openai-a1111.md
        app.include_router(compatible)
    app.include_router(moderation_router)
    app.include_router(ops_router)
    if settings.gallery:
        app.include_router(gallery_router)
        app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    install_studio(app)  # /signin, /studio, /me, /sessions (studio_site.py)

    def answer(request: Request, response: Response) -> Response:
        """The JSON error for the API, the same error as an HTML page for the gallery's pages."""
        if not (settings.gallery and is_page(request)):
            return response
        detail = json.loads(bytes(response.body)).get("detail", "")
        if isinstance(detail, list):  # a bad query value, as FastAPI lists them
            detail = "Check the address: " + "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', [])[1:]) or 'it'}: {d.get('msg', 'not valid')}"
                for d in detail) + "."
        keep = {k: v for k, v in response.headers.items() if k.lower() in ("retry-after", "www-authenticate")}
        return error_page(request, response.status_code, str(detail), keep)

    @app.exception_handler(ImagineError)
    async def _user_error(request: Request, err: ImagineError) -> Response:
        return answer(request, error_response(err))

    @app.exception_handler(RequestValidationError)
    async def _bad_input(request: Request, err: RequestValidationError) -> Response:
        return answer(request, await request_validation_exception_handler(request, err))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> Response:
        return answer(request, await http_exception_handler(request, err))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> Response:
        return answer(request, error_response(err))  # logged with a reference; the caller gets only that

    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # SIGTERM/SIGINT belong to the bot, which closes this front end


class WebFrontEnd:
    """Serves the app on ``listen:port`` and marks followed web jobs delivered when they finish."""

    def __init__(self, service: ImagineService, settings: WebSettings, *, app: FastAPI | None = None) -> None:
        self.service = service
        self.settings = settings
        self.app = app or create_app(service, settings, self)
        self._server: _Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        if self._server is None or not self._server.servers:
            return self.settings.port
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    async def start(self, recovered: Recovered | None = None) -> None:
        """Bind and serve; web jobs owed from before a restart are marked ready or followed."""
        for item in await self.service.unhandled("web"):
            # a POST with an Idempotency-Key that made no job before a crash: its client got no
            # 202 and retries with the same key, which is then processed as new
            await self.service.handled("web", item.key)
        if recovered is not None:
            for untold in recovered.untold:  # the job's status says it: readable is told
                if untold.target.get("web"):
                    await self.service.mark_told(untold.job_id)
            for delivery in recovered.deliveries:
                if delivery.target.get("web"):
                    await self.service.mark_delivered(delivery.job_id)
            for ticket in recovered.tickets:
                if ticket.target.get("web"):
                    self.follow(ticket)
        config = uvicorn.Config(self.app, host=self.settings.listen, port=self.settings.port,
                                log_level="warning", lifespan="off", access_log=False)
        self._server = _Server(config)
        self._serving = asyncio.create_task(self._server.serve(), name="web")
        for _ in range(500):  # bounded: 10 s
            if self._server.started or self._serving.done():
                break
            await asyncio.sleep(0.02)
        if self._serving.done():
            self._serving.result()  # raises why it could not start
            raise RuntimeError(f"the web server stopped at once (is {self.settings.listen}:"
                               f"{self.settings.port} free?)")
        if not self._server.started:
            raise RuntimeError("the web server did not start within 10 s")
        logger.info("web front end on http://%s:%d", self.settings.listen, self.port)

    def follow(self, ticket: Ticket) -> None:
        """Mark the job delivered once its images are stored (clients fetch them)."""
        task = asyncio.create_task(self._watch(ticket), name=f"web-{ticket.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, ticket: Ticket) -> None:
        try:
            async for update in ticket.updates():
                if isinstance(update, Finished):
                    await self.service.mark_delivered(update.delivery.job_id)
                elif isinstance(update, (Failed, Cancelled)):  # readable at /v1/jobs/{id}: told
                    await self.service.mark_told(ticket.job_id)
        except Exception:
            logger.exception("web job %s: marking delivered failed", ticket.job_id)
            self.service.delivery_failed("web", "bookkeeping")

    async def close(self, timeout: float = 10.0) -> None:
        """Stop serving (bounded), then let followers record what finished."""
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            done, _ = await asyncio.wait({self._serving}, timeout=timeout)
            if not done:
                self._server.force_exit = True
                self._serving.cancel()
                await asyncio.gather(self._serving, return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
