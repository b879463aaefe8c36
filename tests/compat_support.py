"""Test wiring for the OpenAI/A1111 compatible routes: the real app served by uvicorn on 127.0.0.1."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from bot.frontends.web import WebFrontEnd, WebSettings
from bot.service import Who
from storage import jobs
from tests.fakes import FakePipeline
from tests.service_support import Env, service_env

__all__ = ["Served", "basic", "b64_png", "png_bytes", "served", "user_jobs"]


@dataclass
class Served:
    env: Env
    front: WebFrontEnd
    base_url: str


@asynccontextmanager
async def served(root: Path, pipeline: Any = None, *, rate_limit: int = 1000, **service: Any) -> AsyncIterator[Served]:
    """The service (SQLite, queue, worker, fake GPU) behind the web front end on a free local port."""
    async with service_env(root, pipeline or FakePipeline(), **service) as env:
        front = WebFrontEnd(env.service, WebSettings(enabled=True, port=0, rate_limit=rate_limit))
        await front.start()
        try:
            yield Served(env, front, f"http://127.0.0.1:{front.port}")
        finally:
            await front.close()


def basic(key: str, user: str = "anyone") -> dict[str, str]:
    """HTTP Basic auth with the API key as the password (what A1111 clients send)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


def png_bytes(color: tuple[int, int, int] = (200, 30, 40), size: tuple[int, int] = (300, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def b64_png(**kwargs: Any) -> str:
    return base64.b64encode(png_bytes(**kwargs)).decode()


async def user_jobs(env: Env, who: Who) -> list[Any]:
    """Every job row of ``who``, oldest first."""
    rows = await env.db.fetchall(
        "SELECT jobs.id FROM jobs JOIN users ON users.id = jobs.user_id"
        " WHERE users.platform = ? AND users.platform_user_id = ? ORDER BY jobs.created_at, jobs.rowid",
        (who.platform, who.user_id))
    return [await jobs.get(env.db, row["id"]) for row in rows]
