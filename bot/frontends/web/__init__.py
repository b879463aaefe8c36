"""HTTP front end: the REST API with keys, the public gallery, /healthz and /metrics (FastAPI).

Same shape as the chat front ends::

    front.py        WebFrontEnd (uvicorn in the bot's loop) and create_app
    commands.py     the /v1 API routes: images, jobs, SSE events, ratings, history, quota
    views.py        JSON shapes, SSE frames, and the server-rendered gallery (templates/, static/)
    moderation.py   unsharing (owner or admin)
    access.py       API keys (Bearer), the per-key rate limit, errors as HTTP answers
    ops.py          /healthz and /metrics
    openai_api.py   the OpenAI Images API: /v1/images/generations, edits, variations, /v1/models
    a1111_api.py    the A1111 web UI API: /sdapi/v1/txt2img and img2img (a1111_probes.py: options,
                    models, samplers, progress, interrupt; a1111_extras.py: png-info, extra-single-image)
    compat.py       what those two share: the caller, errors, waiting for a job, images out
    formats.py      png/jpeg/webp/svg and thumbnails
    settings.py     [web] settings
    studio_site.py  the studio in the browser: signin.py (links from /web, sessions, CSRF),
                    studio.py (make and act on images), mine.py (My images), social.py (share to)
"""

from __future__ import annotations

from bot.frontends.web.front import WebFrontEnd, create_app
from bot.frontends.web.settings import WebSettings

__all__ = ["WebFrontEnd", "WebSettings", "create_app"]
