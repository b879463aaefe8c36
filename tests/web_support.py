"""Test wiring for the web front end: the app over a real service (fake GPU), httpx in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bot.frontends.web import WebFrontEnd, WebSettings
from bot.service import Who
from tests.fakes import FakePipeline
from tests.service_support import Env, service_env

__all__ = ["WebEnv", "auth", "web_env"]


@dataclass
class WebEnv:
    env: Env
    front: WebFrontEnd
    client: httpx.AsyncClient


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def web_env(root: Path, pipeline: Any = None, *, settings: WebSettings | None = None,
                  **service: Any) -> AsyncIterator[WebEnv]:
    async with service_env(root, pipeline or FakePipeline(), **service) as env:
        front = WebFrontEnd(env.service, settings or WebSettings(enabled=True, rate_limit=1000))
        transport = httpx.ASGITransport(app=front.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            yield WebEnv(env, front, client)
        await front.close()


async def key_for(env: Env, who: Who) -> str:
    key, _ = await env.service.create_api_key(who)
    return key
