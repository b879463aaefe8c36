"""For operators: ``/healthz`` for the orchestrator and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

__all__ = ["ops_router"]

ops_router = APIRouter(tags=["operations"])


@ops_router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """200 when the model is loaded and the database writable; else 503 with the reason."""
    ready, reason = await request.app.state.service.health()
    return JSONResponse({"status": "ok" if ready else "unavailable", "reason": reason}, 200 if ready else 503)


@ops_router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text; behind ``Authorization: Bearer $IMAGINE_METRICS_TOKEN`` unless the server
    listens on loopback only (and then too, when a token is set or required)."""
    settings = request.app.state.settings
    if settings.metrics_token_required or settings.metrics_token or not settings.loopback_only:
        if not settings.metrics_token:
            raise HTTPException(403, f"/metrics is not public: the server listens on {settings.listen}, so "
                                     "set a token in IMAGINE_METRICS_TOKEN and scrape with Authorization: Bearer.")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 (settings.metrics_token or "").encode()):
            raise HTTPException(401, "A metrics token is needed: Authorization: Bearer $IMAGINE_METRICS_TOKEN.",
                                headers={"WWW-Authenticate": "Bearer"})
    return Response(request.app.state.service.metrics.text(), media_type=CONTENT_TYPE_LATEST)
