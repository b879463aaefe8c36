"""HTTP front end: the REST API with keys, the public gallery, /healthz and /metrics (FastAPI).

Same shape as the chat front ends::

    front.py        WebFrontEnd (uvicorn in the bot's loop) and create_app
    commands.py     the /v1 API routes: images, jobs, SSE events, ratings, history, quota
    views.py        JSON shapes, SSE frames, and the server-rendered gallery (templates/, static/)
    moderation.py   unsharing (owner or admin)
    access.py       API keys (Bearer), the per-key rate limit, errors as HTTP answers
    ops.py          /healthz and /metrics
    formats.py      png/jpeg/webp/svg and thumbnails
    settings.py     [web] settings
    studio_site.py  the studio in the browser: signin.py (links from /web, sessions, CSRF),
                    studio.py (make and act on images), mine.py (My images), social.py (share to)
"""

from __future__ import annotations

from bot.frontends.web.front import WebFrontEnd, create_app
from bot.frontends.web.settings import WebSettings

__all__ = ["WebFrontEnd", "WebSettings", "create_app"]
