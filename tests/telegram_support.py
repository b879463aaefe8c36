"""Wiring for Telegram front-end tests: the real Application against FakeTelegram, a real service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.frontends.telegram import TelegramFrontEnd, TelegramSettings
from storage import jobs
from tests.fake_telegram import Call, FakeTelegram
from tests.service_support import Env, service_env

__all__ = ["Running", "callback_data", "running", "settings_for", "wait_until"]


def settings_for(fake: FakeTelegram, **overrides: Any) -> TelegramSettings:
    values: dict[str, Any] = dict(
        token=fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url, poll_timeout=1,
        status_edit_interval_private=0.0, status_edit_interval_group=0.0, max_retries=1,
        # flood limits off: functional tests go at full speed; test_telegram_pacing turns them on
        overall_per_second=0, group_per_minute=0, private_interval=0.0,
    )
    values.update(overrides)
    return TelegramSettings(**values)


@dataclass
class Running:
    front: TelegramFrontEnd
    env: Env
    fake: FakeTelegram


@asynccontextmanager
async def running(root: Path, pipeline: Any, fake: FakeTelegram, *, service: dict[str, Any] | None = None,
                  moderation: Callable[[Env], Any] | None = None, **overrides: Any) -> AsyncIterator[Running]:
    """A service on ``root`` and a started front end talking to ``fake``; ``moderation(env)``, when
    given, builds the service's Moderation (e.g. with an injected image classifier)."""
    async with service_env(root, pipeline, **(service or {})) as env:
        if moderation is not None:
            env.service.moderation = moderation(env)
        front = TelegramFrontEnd(env.service, settings_for(fake, **overrides))
        recovered = await env.service.recover()
        await front.start(recovered)
        try:
            yield Running(front, env, fake)
        finally:
            await front.close()


def callback_data(call: Call) -> list[str]:
    """Every callback_data of the inline keyboard a call sent."""
    markup = call.params.get("reply_markup") or {}
    return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row if "callback_data" in b]


async def wait_until(check: Any, timeout: float = 10.0) -> Any:
    """Poll an async or sync ``check`` until it returns something truthy (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


async def job_status(env: Env, job_id: str) -> str | None:
    row = await jobs.get(env.db, job_id)
    return row.status if row else None
